package eventstore

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
)

// Registry maps Go event types to the type names and schema versions stored
// beside their JSON payloads, encodes and decodes payloads with its Codec
// (encoding/json unless SetCodec names another), and upcasts events stored
// at older schema versions (or under older names) to the current ones
// before decoding them (see Upcast and docs/evolution.md).
//
// Register each event type and upcaster once at start-up, before appending
// or reading. A Registry is safe for concurrent use.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]*eventType
	byType map[reflect.Type]string
	// steps are the upcasters, by the stored type and version they read.
	steps map[SchemaRef]*step
	// reach caches, for every step's source, the current type names it
	// reads as; rebuilt on every registration.
	reach map[SchemaRef][]string
	// hasPersonal is set once a type with personal fields is registered;
	// shredder encrypts and decrypts them (personal.go, shredder.go).
	hasPersonal atomic.Bool
	shredder    atomic.Pointer[Shredder]
	// codec, when set (SetCodec), encodes and decodes payloads instead of
	// encoding/json.
	codec atomic.Pointer[Codec]
}

// eventType is a registered event type at its current schema version.
type eventType struct {
	name    string
	goType  reflect.Type
	version int
	self    []string // []string{name}: what a current event reads as
	// writeAs, when set (Registry.WriteAs), is what appends store
	// instead of the current version, and down converts the payload.
	writeAs *SchemaRef
	down    UpcastFunc
	// personal, when set, names the type's personal fields and subject
	// (tagged esox:"personal" and esox:"subject").
	personal *personalSpec
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{
		byName: map[string]*eventType{},
		byType: map[reflect.Type]string{},
		steps:  map[SchemaRef]*step{},
		reach:  map[SchemaRef][]string{},
	}
}

// Register adds the Go type E under name at schema version 1: the first
// version of an event type. It is RegisterVersion(r, name, 1).
func Register[E any](r *Registry, name string) error {
	return RegisterVersion[E](r, name, 1)
}

// RegisterVersion adds the Go type E under name as the current schema
// version of that event type: appends accept values of E and *E and store
// them with this version; reads decode payloads stored under name at this
// version into a value of E (not a pointer), and upcast those stored at
// older versions first (see Upcast). Events stored before esox recorded
// schema versions read as version 1.
//
// Fields of E (a struct) tagged esox:"personal" hold personal data: they
// are stored encrypted with the data key of the event's subject, the
// string field tagged esox:"subject", by the registry's Shredder, and can
// be erased by forgetting the subject (see SetShredder and
// docs/compliance.md).
//
// It returns an *InvalidArgumentError when name is empty or cannot be stored
// as PostgreSQL text (it contains a NUL byte or is not valid UTF-8, see
// CheckText), E is a pointer or interface type, version is below 1, E's
// esox tags are wrong (an unknown tag, a personal field JSON does not
// encode, personal fields without exactly one exported string subject
// field), or the
// name or the type is already registered under something else (another
// type, another name, another version); and an *UpcasterError when an
// upcaster registered earlier reads name at version or later (an upcaster
// reads older versions only). Registering the same triple twice is a no-op.
func RegisterVersion[E any](r *Registry, name string, version int) error {
	t := reflect.TypeFor[E]()
	if name == "" {
		return &InvalidArgumentError{Field: "event type name", Reason: "must not be empty"}
	}
	if err := CheckText(name); err != nil {
		return &InvalidArgumentError{Field: "event type name", Reason: fmt.Sprintf("%q %v", name, err)}
	}
	if t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface {
		return &InvalidArgumentError{Field: "event type " + t.String(), Reason: "register the value type, not a pointer or interface"}
	}
	if version < 1 {
		return &InvalidArgumentError{Field: "schema version", Reason: fmt.Sprintf("event type %q: must be at least 1, got %d", name, version)}
	}
	personal, err := parsePersonal(name, t)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.byName[name]; ok {
		if prev.goType == t && prev.version == version {
			return nil
		}
		if prev.goType == t {
			return &InvalidArgumentError{Field: "event type name", Reason: fmt.Sprintf("%q is already registered at schema version %d", name, prev.version)}
		}
		return &InvalidArgumentError{Field: "event type name", Reason: fmt.Sprintf("%q is already registered for %s", name, prev.goType)}
	}
	if prev, ok := r.byType[t]; ok {
		return &InvalidArgumentError{Field: "event type " + t.String(), Reason: fmt.Sprintf("already registered as %q", prev)}
	}
	for from := range r.steps {
		if from.Type == name && from.Version >= version {
			return &UpcasterError{Type: name, Version: from.Version, Reason: fmt.Sprintf("an upcaster reads version %d, but RegisterVersion makes %d the current version: an upcaster must read an older version", from.Version, version)}
		}
	}
	r.byName[name] = &eventType{name: name, goType: t, version: version, self: []string{name}, personal: personal}
	r.byType[t] = name
	if personal != nil {
		r.hasPersonal.Store(true)
	}
	r.rebuildReach()
	return nil
}

// MustRegister is Register that panics on error, for package-level set-up.
func MustRegister[E any](r *Registry, name string) {
	if err := Register[E](r, name); err != nil {
		panic(err)
	}
}

// MustRegisterVersion is RegisterVersion that panics on error, for
// package-level set-up.
func MustRegisterVersion[E any](r *Registry, name string, version int) {
	if err := RegisterVersion[E](r, name, version); err != nil {
		panic(err)
	}
}

// NameOf returns the name registered for v's type (v may be a value or a
// pointer to one), or an *UnknownEventTypeError.
func (r *Registry) NameOf(v any) (string, error) {
	r.mu.RLock()
	t, err := r.typeOf(v)
	r.mu.RUnlock()
	if err != nil {
		return "", err
	}
	return t.name, nil
}

// typeOf returns the registration of v's type. r.mu is held.
func (r *Registry) typeOf(v any) (*eventType, error) {
	t := reflect.TypeOf(v)
	if t == nil {
		return nil, &UnknownEventTypeError{GoType: "<nil>"}
	}
	name, ok := r.byType[t]
	if !ok && t.Kind() == reflect.Pointer {
		name, ok = r.byType[t.Elem()]
	}
	if !ok {
		return nil, &UnknownEventTypeError{GoType: t.String()}
	}
	return r.byName[name], nil
}

// Has reports whether name is registered (as a current event type; names
// known only to upcasters are not).
func (r *Registry) Has(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.byName[name]
	return ok
}

// CurrentVersion returns the schema version name is registered at, and
// false when name is not registered.
func (r *Registry) CurrentVersion(name string) (int, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t, ok := r.byName[name]; ok {
		return t.version, true
	}
	return 0, false
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Encode returns the registered name of v's type and v as JSON. Errors are an
// *UnknownEventTypeError or a *PayloadError. EncodeEvent also returns the
// schema version.
func (r *Registry) Encode(v any) (name string, payload []byte, err error) {
	ev, err := r.EncodeEvent(v)
	return ev.Type, ev.Payload, err
}

// EncodeEvent returns v encoded as it is stored: the registered name and
// current schema version of v's type, and v as JSON; or, for a type with
// WriteAs, the older type and version it writes and the payload converted.
// It is the one place events are encoded for storage (EncodeAppend calls
// it). Errors are an *UnknownEventTypeError or a *PayloadError.
func (r *Registry) EncodeEvent(v any) (VersionedEvent, error) {
	stored, _, err := r.encode(v)
	return stored, err
}

// encode returns v as it is stored and as it reads (the current version).
func (r *Registry) encode(v any) (stored, current VersionedEvent, err error) {
	r.mu.RLock()
	t, err := r.typeOf(v)
	r.mu.RUnlock()
	if err != nil {
		return VersionedEvent{}, VersionedEvent{}, err
	}
	payload, err := r.Codec().Marshal(v)
	if err != nil {
		return VersionedEvent{}, VersionedEvent{}, &PayloadError{Type: t.name, Op: "encode", Err: err}
	}
	current = VersionedEvent{Type: t.name, Version: t.version, Payload: payload}
	if t.writeAs == nil {
		return current, current, nil
	}
	stored = VersionedEvent{Type: t.writeAs.Type, Version: t.writeAs.Version, Payload: payload}
	if t.down != nil {
		if stored.Payload, err = t.down(payload); err != nil {
			return VersionedEvent{}, VersionedEvent{}, &PayloadError{Type: t.name, Op: "encode", Err: fmt.Errorf("write as %s: %w", *t.writeAs, err)}
		}
	}
	return stored, current, nil
}

// Decode decodes payload, an event of the type registered as name at its
// current schema version, into a new value of that type and returns the
// value (not a pointer). It does not upcast: decode stored events through
// RawRecord.Decode or AppendDecoded, or upcast them with ToCurrent first.
// Errors are an *UnknownEventTypeError or a *PayloadError.
func (r *Registry) Decode(name string, payload []byte) (any, error) {
	r.mu.RLock()
	t, ok := r.byName[name]
	r.mu.RUnlock()
	if !ok {
		return nil, &UnknownEventTypeError{Name: name}
	}
	return r.decode(t, payload)
}

// decode is the one place payloads are decoded into Go values.
func (r *Registry) decode(t *eventType, payload []byte) (any, error) {
	p := reflect.New(t.goType)
	if err := r.Codec().Unmarshal(payload, p.Interface()); err != nil {
		return nil, &PayloadError{Type: t.name, Op: "decode", Err: err}
	}
	return p.Elem().Interface(), nil
}
