package eventstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/google/uuid"
)

// SchemaRef names one schema version of an event type.
type SchemaRef struct {
	Type    string
	Version int
}

// String returns "type@vN".
func (s SchemaRef) String() string { return s.Type + "@v" + strconv.Itoa(s.Version) }

// VersionedEvent is an event's JSON at one schema version of its type: what
// a row stores (its event_type, schema_version and payload), and what an
// upcaster reads and returns.
type VersionedEvent struct {
	Type    string
	Version int
	Payload json.RawMessage
}

// UpcastFunc rewrites the JSON payload of one schema version of an event
// type into the next version's. It must be a pure function of its input
// (upcasters run on every read, in every process, and must agree), must not
// keep or modify payload, must be safe for concurrent use, and must not
// call the Registry (it runs under the Registry's read lock).
type UpcastFunc func(payload json.RawMessage) (json.RawMessage, error)

// SplitFunc turns the JSON payload of one stored event into the events it
// now reads as: zero, one or several, each a type and version declared to
// Registry.Split with its payload. The rules of UpcastFunc apply.
type SplitFunc func(payload json.RawMessage) ([]VersionedEvent, error)

// maxUpcastSteps bounds the steps of one event's upcast, a guard should a
// chain loop (registration refuses cycles).
const maxUpcastSteps = 1000

type stepKind int

const (
	stepUpcast stepKind = iota
	stepRename
	stepSplit
	stepDrop
)

// step is one registered upcaster: it reads from and yields events of the
// types and versions in to.
type step struct {
	kind   stepKind
	from   SchemaRef
	to     []SchemaRef
	upcast UpcastFunc
	split  SplitFunc
}

// Upcast registers fn as the upcaster of event type name from schema
// version from to version from+1: on every read, a payload stored under
// name at version from is passed through fn, then through the upcaster of
// from+1, and so on up to the version name is registered at, before it is
// decoded. Register one per version: a chain 1→2→…→current. fn works on the
// JSON, so the old Go type need not be kept; UpcastAs is the typed helper,
// AddField and RenameField are ready-made steps. fn's output must be valid
// JSON (a *PayloadError at read time otherwise).
//
// Upcast is safe for concurrent use, but register upcasters at start-up,
// before reading. It returns an *UpcasterError (ErrInvalidUpcaster) when
// name or from is invalid, fn is nil, name@from already has an upcaster,
// from is not older than the version name is registered at, or the step
// would close a cycle. Validate checks the chains as a whole.
func (r *Registry) Upcast(name string, from int, fn UpcastFunc) error {
	if fn == nil {
		return &UpcasterError{Type: name, Version: from, Reason: "the upcast function is nil"}
	}
	checked := func(p json.RawMessage) (json.RawMessage, error) {
		out, err := fn(p)
		if err == nil && !json.Valid(out) {
			err = errors.New("the upcaster returned invalid JSON")
		}
		return out, err
	}
	return r.addStep(&step{kind: stepUpcast, from: SchemaRef{name, from}, to: []SchemaRef{{name, from + 1}}, upcast: checked})
}

// UpcastAs registers a typed upcaster of event type name from schema
// version from to from+1 (see Registry.Upcast): the stored payload is
// decoded into a From, fn returns the To it becomes, and the To is encoded
// as the next version's payload. From is typically a small struct declared
// beside the upcaster, the old shape of the event; To is the next version's
// shape (the current Go type for the last step). Errors are Upcast's.
func UpcastAs[From, To any](r *Registry, name string, from int, fn func(From) (To, error)) error {
	if fn == nil {
		return &UpcasterError{Type: name, Version: from, Reason: "the upcast function is nil"}
	}
	return r.addStep(&step{kind: stepUpcast, from: SchemaRef{name, from}, to: []SchemaRef{{name, from + 1}},
		upcast: func(p json.RawMessage) (json.RawMessage, error) {
			var old From
			if err := json.Unmarshal(p, &old); err != nil {
				return nil, err
			}
			v, err := fn(old)
			if err != nil {
				return nil, err
			}
			return json.Marshal(v)
		}})
}

// Rename registers that events stored under oldName at schema version
// oldVersion read as events of newName at version newVersion, their
// payload unchanged: the rename of an event type. newName@newVersion is then
// read like any stored event of that type and version (upcast further when
// older than newName's current version). Register one Rename per stored
// version of the old name that is still to be read: typically upcast the
// old name to its last version, then rename that one.
//
// Errors are Upcast's, and an *UpcasterError when the names are the same
// (use Upcast) or newVersion is below 1.
func (r *Registry) Rename(oldName string, oldVersion int, newName string, newVersion int) error {
	if oldName == newName {
		return &UpcasterError{Type: oldName, Version: oldVersion, Reason: "Rename needs a new name; use Upcast to change the version of the same type"}
	}
	return r.addStep(&step{kind: stepRename, from: SchemaRef{oldName, oldVersion}, to: []SchemaRef{{newName, newVersion}}})
}

// Split registers that an event stored under name at schema version from
// reads as the events fn returns: several (the split of one event into
// others), one, or none. Each returned event's type and version must be one
// of into, which declares them so that Validate can check the chains and
// readers can tell which types a stored event may become; each is then read
// like a stored event of that type and version (upcast further when older
// than its type's current version).
//
// The records one stored event reads as share its Position, StreamVersion,
// metadata and RecordedAt, and have Index 0, 1, … in the order fn returns
// them; the first keeps the event ID, the others get SplitEventID's. Errors
// are Upcast's, and an *UpcasterError when into is empty or lists an
// invalid or repeated type and version.
func (r *Registry) Split(name string, from int, into []SchemaRef, fn SplitFunc) error {
	if fn == nil {
		return &UpcasterError{Type: name, Version: from, Reason: "the split function is nil"}
	}
	if len(into) == 0 {
		return &UpcasterError{Type: name, Version: from, Reason: "Split needs the types and versions it yields (into); use Drop for none"}
	}
	return r.addStep(&step{kind: stepSplit, from: SchemaRef{name, from}, to: slices.Clone(into), split: fn})
}

// Drop registers that events stored under name at schema version version
// are no longer read: they read as no record at all. They stay stored (a
// stored event never changes) and keep their place in the feed: readers
// move past their Position, and aggregates count their StreamVersion, so
// optimistic concurrency is unchanged. Errors are Upcast's.
func (r *Registry) Drop(name string, version int) error {
	return r.addStep(&step{kind: stepDrop, from: SchemaRef{name, version}})
}

// WriteAs makes appends store events of the registered type name as the
// older schema version as (of name, or of the name it had before a
// rename), their payloads converted by down (a downcaster; nil leaves them
// unchanged). Reads are unchanged: what is written is upcast back to the
// current version by the registered upcasters, so as must lead to name at
// its registered version (Validate checks it).
//
// It is the first step of a rolling deploy of a schema change
// (docs/evolution.md): a release that reads the new version but still
// writes the old one, which the release before it reads. Once no instance
// of the old release runs, deploy the next release without WriteAs: it
// writes the new version, which every instance running then reads.
//
// Errors: an *UpcasterError (ErrInvalidUpcaster) when name is not
// registered or already has a WriteAs, or as is invalid or is not older
// than the registered version of name.
func (r *Registry) WriteAs(name string, as SchemaRef, down UpcastFunc) error {
	bad := func(format string, args ...any) error {
		return &UpcasterError{Type: name, Version: as.Version, Reason: "WriteAs: " + fmt.Sprintf(format, args...)}
	}
	if as.Type == "" || CheckText(as.Type) != nil || as.Version < 1 {
		return bad("%s is not a valid type and version", as)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.byName[name]
	switch {
	case !ok:
		return bad("the event type is not registered (register it first)")
	case t.writeAs != nil:
		return bad("the event type already writes as %s", *t.writeAs)
	case as.Type == name && as.Version >= t.version:
		return bad("%s is not older than the registered version %d", as, t.version)
	}
	if down != nil {
		checked := down
		down = func(p json.RawMessage) (json.RawMessage, error) {
			out, err := checked(p)
			if err == nil && !json.Valid(out) {
				err = errors.New("the downcaster returned invalid JSON")
			}
			return out, err
		}
	}
	ref := as
	t.writeAs, t.down = &ref, down
	return nil
}

// addStep checks and adds st.
func (r *Registry) addStep(st *step) error {
	bad := func(ref SchemaRef, format string, args ...any) error {
		return &UpcasterError{Type: ref.Type, Version: ref.Version, Reason: fmt.Sprintf(format, args...)}
	}
	refOK := func(ref SchemaRef) error {
		if ref.Type == "" {
			return bad(ref, "the event type name must not be empty")
		}
		if err := CheckText(ref.Type); err != nil {
			return bad(ref, "the event type name %v", err)
		}
		if ref.Version < 1 {
			return bad(ref, "schema versions start at 1, got %d", ref.Version)
		}
		return nil
	}
	if err := refOK(st.from); err != nil {
		return err
	}
	for i, to := range st.to {
		if err := refOK(to); err != nil {
			return bad(st.from, "target %s: %v", to, err.(*UpcasterError).Reason)
		}
		if slices.Contains(st.to[:i], to) {
			return bad(st.from, "target %s is given twice", to)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.steps[st.from]; ok {
		return bad(st.from, "already has an upcaster")
	}
	if t, ok := r.byName[st.from.Type]; ok && st.from.Version >= t.version {
		return bad(st.from, "the event type is registered at version %d: an upcaster reads older versions only", t.version)
	}
	for _, to := range st.to {
		if t, ok := r.byName[to.Type]; ok && to.Version > t.version {
			return bad(st.from, "leads to %s, newer than the registered version %d of %q", to, t.version, to.Type)
		}
	}
	r.steps[st.from] = st
	if r.cycleFrom(st.from) {
		delete(r.steps, st.from)
		return bad(st.from, "the upcaster would close a cycle: its chain leads back to %s", st.from)
	}
	r.rebuildReach()
	return nil
}

// cycleFrom reports whether the steps starting at start lead back to it.
// r.mu is held.
func (r *Registry) cycleFrom(start SchemaRef) bool {
	seen := map[SchemaRef]bool{}
	var visit func(ref SchemaRef) bool
	visit = func(ref SchemaRef) bool {
		st, ok := r.steps[ref]
		if !ok || seen[ref] {
			return false
		}
		seen[ref] = true
		for _, to := range st.to {
			if to == start || visit(to) {
				return true
			}
		}
		return false
	}
	return visit(start)
}

// rebuildReach recomputes, for every step's source, the current type names
// an event stored there reads as. A chain that ends at a version no
// upcaster reads (Validate reports it) contributes the type it ends at, so
// that readers of that type meet the error. r.mu is held for writing.
func (r *Registry) rebuildReach() {
	r.reach = make(map[SchemaRef][]string, len(r.steps))
	var collect func(ref SchemaRef, out []string, depth int) []string
	collect = func(ref SchemaRef, out []string, depth int) []string {
		if t, ok := r.byName[ref.Type]; ok && t.version == ref.Version {
			return appendUnique(out, ref.Type)
		}
		st, ok := r.steps[ref]
		if !ok || depth > maxUpcastSteps {
			return appendUnique(out, ref.Type)
		}
		for _, to := range st.to {
			out = collect(to, out, depth+1)
		}
		return out
	}
	for from := range r.steps {
		names := collect(from, []string{}, 0)
		slices.Sort(names)
		r.reach[from] = names
	}
}

func appendUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// ReadsAs returns the names of the current event types an event stored
// under name at schema version version reads as: []string{name} for an
// event at its type's current version, the types its upcasters lead to
// otherwise (empty for a dropped event), and nil when the registry cannot
// read it (an unregistered type, a version newer than the registered one,
// or one no upcaster reads). Version 0 means 1. Readers that handle some
// types only (a projection) use it to pass over events without upcasting
// them. The slice is shared: do not modify it. Safe for concurrent use.
func (r *Registry) ReadsAs(name string, version int) []string {
	if version == 0 {
		version = 1
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t, ok := r.byName[name]; ok && t.version == version {
		return t.self
	}
	return r.reach[SchemaRef{name, version}]
}

// ToCurrent appends to dst the events ev reads as at the registered current
// versions: ev itself when it is current, else the result of its upcasters,
// applied one after the other (none for a dropped event, several for a
// split one). It works on the JSON only; ev.Version 0 means 1.
//
// Errors: a *SchemaVersionError (ErrUnknownSchemaVersion) when ev's version
// is newer than its type's registered version (written by a newer
// deployment: never guessed at) or no upcaster reads it; an
// *UnknownEventTypeError when neither a registered type nor an upcaster
// knows ev.Type; a *PayloadError (ErrMalformedPayload, Op "upcast") when an
// upcaster fails or returns what its registration did not declare. Safe for
// concurrent use.
func (r *Registry) ToCurrent(dst []VersionedEvent, ev VersionedEvent) ([]VersionedEvent, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.toCurrent(dst, ev, 0)
}

// toCurrent is ToCurrent with r.mu held for reading; depth counts the
// steps taken so far.
func (r *Registry) toCurrent(dst []VersionedEvent, ev VersionedEvent, depth int) ([]VersionedEvent, error) {
	if ev.Version == 0 {
		ev.Version = 1
	}
	for {
		if t, ok := r.byName[ev.Type]; ok && t.version == ev.Version {
			return append(dst, ev), nil
		}
		st, ok := r.steps[SchemaRef{ev.Type, ev.Version}]
		if !ok {
			return dst, r.unreadable(ev)
		}
		if depth++; depth > maxUpcastSteps {
			return dst, &PayloadError{Type: ev.Type, Op: "upcast", Err: fmt.Errorf("more than %d upcast steps", maxUpcastSteps)}
		}
		switch st.kind {
		case stepUpcast:
			p, err := st.upcast(ev.Payload)
			if err != nil {
				return dst, &PayloadError{Type: ev.Type, Op: "upcast", Err: fmt.Errorf("from version %d: %w", ev.Version, err)}
			}
			ev = VersionedEvent{Type: ev.Type, Version: ev.Version + 1, Payload: p}
		case stepRename:
			ev = VersionedEvent{Type: st.to[0].Type, Version: st.to[0].Version, Payload: ev.Payload}
		case stepDrop:
			return dst, nil
		case stepSplit:
			outs, err := st.split(ev.Payload)
			if err != nil {
				return dst, &PayloadError{Type: ev.Type, Op: "upcast", Err: fmt.Errorf("split of version %d: %w", ev.Version, err)}
			}
			for _, o := range outs {
				if !slices.Contains(st.to, SchemaRef{o.Type, o.Version}) {
					return dst, &PayloadError{Type: ev.Type, Op: "upcast", Err: fmt.Errorf("split of version %d returned %s, which its registration does not declare", ev.Version, SchemaRef{o.Type, o.Version})}
				}
				if !json.Valid(o.Payload) {
					return dst, &PayloadError{Type: ev.Type, Op: "upcast", Err: fmt.Errorf("split of version %d returned invalid JSON for %s", ev.Version, SchemaRef{o.Type, o.Version})}
				}
				if dst, err = r.toCurrent(dst, o, depth); err != nil {
					return dst, err
				}
			}
			return dst, nil
		}
	}
}

// unreadable returns why ev, which has no upcaster and is not current,
// cannot be read. r.mu is held.
func (r *Registry) unreadable(ev VersionedEvent) error {
	if t, ok := r.byName[ev.Type]; ok {
		return &SchemaVersionError{Type: ev.Type, Version: ev.Version, Latest: t.version}
	}
	latest := 0
	for from := range r.steps {
		if from.Type == ev.Type {
			latest = max(latest, from.Version)
		}
	}
	if latest == 0 {
		return &UnknownEventTypeError{Name: ev.Type}
	}
	return &SchemaVersionError{Type: ev.Type, Version: ev.Version, Latest: latest}
}

// Validate checks the upcaster chains as a whole: every upcaster's results
// lead, through further upcasters, to a registered event type at its
// current version (or to nothing, for Drop); what a WriteAs writes reads
// back as its type; and every registered type at a version above 1 can be
// read from version 1 up (events stored before esox
// recorded schema versions read as version 1), or from the lowest version
// an upcaster of another type renames or splits into it. Registration
// already refuses what it can see at once (duplicates, cycles, upcasters
// of versions that are not older than the current one); Validate finds
// what only the whole set shows: gaps and chains that lead nowhere. Call it
// once everything is registered (esox.New does).
//
// It returns nil or an error joining one *UpcasterError
// (ErrInvalidUpcaster) per problem. Safe for concurrent use.
func (r *Registry) Validate() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var errs []error
	froms := make([]SchemaRef, 0, len(r.steps))
	for from := range r.steps {
		froms = append(froms, from)
	}
	slices.SortFunc(froms, compareRefs)
	for _, from := range froms {
		for _, to := range r.steps[from].to {
			if err := r.leadsOn(from, to); err != nil {
				errs = append(errs, err)
			}
		}
	}
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t := r.byName[n]
		if t.writeAs != nil {
			if reads := r.reach[*t.writeAs]; len(reads) != 1 || reads[0] != n {
				errs = append(errs, &UpcasterError{Type: n, Version: t.writeAs.Version, Reason: fmt.Sprintf(
					"WriteAs %s: what is written must read back as %s version %d through the upcasters, but reads as %v", *t.writeAs, n, t.version, reads)})
			}
		}
		lo := 1
		if _, ok := r.steps[SchemaRef{n, 1}]; !ok {
			// Perhaps the type only ever existed as the target of a
			// rename or split, from some version up.
			for _, from := range froms {
				for _, to := range r.steps[from].to {
					if to.Type == n && from.Type != n && (lo == 1 || to.Version < lo) {
						lo = to.Version
					}
				}
			}
		}
		for v := lo; v < t.version; v++ {
			if _, ok := r.steps[SchemaRef{n, v}]; !ok {
				errs = append(errs, &UpcasterError{Type: n, Version: v, Reason: fmt.Sprintf(
					"the event type is registered at version %d, but no upcaster reads version %d (events stored before schema versions existed are version 1)", t.version, v)})
			}
		}
	}
	return errors.Join(errs...)
}

// leadsOn checks one target of the step at from: it is current, or another
// step reads it. r.mu is held.
func (r *Registry) leadsOn(from, to SchemaRef) error {
	if _, ok := r.steps[to]; ok {
		return nil
	}
	t, ok := r.byName[to.Type]
	switch {
	case ok && t.version == to.Version:
		return nil
	case ok && to.Version < t.version:
		return &UpcasterError{Type: from.Type, Version: from.Version, Reason: fmt.Sprintf("leads to %s, but no upcaster reads that version (the registered version is %d): the chain has a gap", to, t.version)}
	case ok:
		return &UpcasterError{Type: from.Type, Version: from.Version, Reason: fmt.Sprintf("leads to %s, newer than the registered version %d", to, t.version)}
	}
	return &UpcasterError{Type: from.Type, Version: from.Version, Reason: fmt.Sprintf("leads to %s, which is neither a registered event type nor read by an upcaster", to)}
}

func compareRefs(a, b SchemaRef) int {
	if a.Type != b.Type {
		if a.Type < b.Type {
			return -1
		}
		return 1
	}
	return a.Version - b.Version
}

// SplitEventID returns the ID of the index-th record a stored event with ID
// id reads as when an upcaster splits it (see Registry.Split): id itself
// for index 0, else a name-based UUID (version 5) derived from id and
// index, the same in every process and on every read, so consumers can
// de-duplicate the records of a split event like any other.
func SplitEventID(id uuid.UUID, index int) uuid.UUID {
	if index == 0 {
		return id
	}
	return uuid.NewSHA1(id, []byte("esox/split/"+strconv.Itoa(index)))
}

// AddField returns an UpcastFunc that adds key with value (encoded as JSON
// once, here) to a payload that is a JSON object, unless the object has the
// key already: the upcaster of "add a field with a default". It errors for
// a value that cannot be encoded (when called) and for a payload that is
// not an object (when upcasting). The common case costs one scan for the
// key and one copy of the payload.
func AddField(key string, value any) UpcastFunc {
	enc, err := json.Marshal(value)
	qkey, kerr := json.Marshal(key)
	return func(p json.RawMessage) (json.RawMessage, error) {
		if err != nil {
			return nil, fmt.Errorf("AddField %q: %w", key, err)
		}
		if kerr != nil {
			return nil, fmt.Errorf("AddField %q: %w", key, kerr)
		}
		body := bytes.TrimLeft(p, " \t\r\n")
		if len(body) == 0 || body[0] != '{' {
			return nil, fmt.Errorf("AddField %q: the payload is not a JSON object", key)
		}
		if bytes.Contains(body, qkey) {
			// The key's text occurs: perhaps as a key, perhaps in a value.
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(p, &obj); err != nil {
				return nil, err
			}
			if _, ok := obj[key]; ok {
				return p, nil
			}
		}
		rest := bytes.TrimLeft(body[1:], " \t\r\n")
		out := make([]byte, 0, len(body)+len(qkey)+len(enc)+2)
		out = append(out, '{')
		out = append(out, qkey...)
		out = append(out, ':')
		out = append(out, enc...)
		if len(rest) > 0 && rest[0] != '}' {
			out = append(out, ',')
		}
		return append(out, rest...), nil
	}
}

// RenameField returns an UpcastFunc that renames the key from of a payload
// that is a JSON object to to, keeping its value; a payload without from is
// returned unchanged, and one that has to already is an error. The result's
// keys are sorted (it re-encodes the object).
func RenameField(from, to string) UpcastFunc {
	return func(p json.RawMessage) (json.RawMessage, error) {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(p, &obj); err != nil {
			return nil, fmt.Errorf("RenameField %q to %q: %w", from, to, err)
		}
		v, ok := obj[from]
		if !ok {
			return p, nil
		}
		if _, dup := obj[to]; dup {
			return nil, fmt.Errorf("RenameField %q to %q: the payload has both keys", from, to)
		}
		delete(obj, from)
		obj[to] = v
		return json.Marshal(obj)
	}
}
