package eventstore_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/esox-go/esox/eventstore"
)

// The property: for a random chain of schema changes (add a field with a
// default, rename a field, scale a unit, rename the type, split the event
// in two), an event stored at any version of the chain reads, through the
// registered upcasters, as exactly what the current code would have written
// for it. "What the current code would have written" is computed by a
// reference model of each change on plain Go maps, independent of the
// upcasters, which work on JSON bytes (AddField, RenameField, UpcastAs,
// Rename, Split).

// Go types for the current versions: the registry maps each name to its
// own Go type, and the chains end in at most two types.
type (
	propCurrent map[string]any
	propPartA   map[string]any
	propPartB   map[string]any
)

type propKind int

const (
	propAdd propKind = iota
	propRenameField
	propScale
	propRenameType
	propSplit
)

type propStep struct {
	kind     propKind
	key, to  string               // add: key; rename field: key → to
	def      any                  // add's default
	factor   int64                // scale
	newType  string               // rename type
	partA    []string             // split: the keys of the first part
	at       eventstore.SchemaRef // the type and version the step reads
	fieldsAt map[string]bool      // the fields of the event at that point
}

// propChain is a random chain and where it ends.
type propChain struct {
	steps []propStep
	end   eventstore.SchemaRef // the current type and version (before any split)
	split bool
	// intKeys are the fields that hold integers (only those are scaled).
	intKeys map[string]bool
}

func genChain(rng *rand.Rand) propChain {
	fields := map[string]bool{"f0": true, "f1": true, "s0": true}
	ints := map[string]bool{"f0": true, "f1": true}
	at := eventstore.SchemaRef{Type: "T0", Version: 1}
	var c propChain
	n := 1 + rng.IntN(6)
	for i := range n {
		st := propStep{at: at, fieldsAt: maps.Clone(fields)}
		kind := propKind(rng.IntN(4))
		if i == n-1 && len(fields) >= 2 && rng.IntN(3) == 0 {
			kind = propSplit
		}
		keys := slices.Sorted(maps.Keys(fields))
		switch kind {
		case propAdd:
			st.kind, st.key = propAdd, "a"+strconv.Itoa(i)
			if rng.IntN(2) == 0 {
				st.def = float64(rng.IntN(1000))
				ints[st.key] = true
			} else {
				st.def = "d" + strconv.Itoa(rng.IntN(1000))
			}
			fields[st.key] = true
			at.Version++
		case propRenameField:
			st.kind, st.key, st.to = propRenameField, keys[rng.IntN(len(keys))], "r"+strconv.Itoa(i)
			delete(fields, st.key)
			fields[st.to] = true
			if ints[st.key] {
				delete(ints, st.key)
				ints[st.to] = true
			}
			at.Version++
		case propScale:
			intKeys := slices.Sorted(maps.Keys(ints))
			if len(intKeys) == 0 {
				st.kind, st.key, st.def = propAdd, "a"+strconv.Itoa(i), "none"
				fields[st.key] = true
			} else {
				st.kind, st.key, st.factor = propScale, intKeys[rng.IntN(len(intKeys))], []int64{10, 100}[rng.IntN(2)]
			}
			at.Version++
		case propRenameType:
			st.kind, st.newType = propRenameType, "T"+strconv.Itoa(i+1)
			at = eventstore.SchemaRef{Type: st.newType, Version: 1 + rng.IntN(3)}
		case propSplit:
			st.kind = propSplit
			cut := 1 + rng.IntN(len(keys)-1)
			st.partA = keys[:cut]
			c.split = true
		}
		c.steps = append(c.steps, st)
	}
	c.end, c.intKeys = at, ints
	return c
}

// register registers c's upcasters and current types in a new registry.
func (c propChain) register(t *testing.T) *eventstore.Registry {
	t.Helper()
	r := eventstore.NewRegistry()
	if c.split {
		must(t, eventstore.Register[propPartA](r, "PartA"))
		must(t, eventstore.Register[propPartB](r, "PartB"))
	} else {
		must(t, eventstore.RegisterVersion[propCurrent](r, c.end.Type, c.end.Version))
	}
	for i, st := range c.steps {
		switch st.kind {
		case propAdd:
			must(t, r.Upcast(st.at.Type, st.at.Version, eventstore.AddField(st.key, st.def)))
		case propRenameField:
			must(t, r.Upcast(st.at.Type, st.at.Version, eventstore.RenameField(st.key, st.to)))
		case propScale:
			key, f := st.key, st.factor
			must(t, eventstore.UpcastAs(r, st.at.Type, st.at.Version, func(old map[string]json.RawMessage) (map[string]json.RawMessage, error) {
				var n int64
				if err := json.Unmarshal(old[key], &n); err != nil {
					return nil, err
				}
				old[key] = json.RawMessage(strconv.FormatInt(n*f, 10))
				return old, nil
			}))
		case propRenameType:
			next := c.end
			if i+1 < len(c.steps) {
				next = c.steps[i+1].at
			}
			must(t, r.Rename(st.at.Type, st.at.Version, st.newType, next.Version))
		case propSplit:
			partA := st.partA
			must(t, r.Split(st.at.Type, st.at.Version, []eventstore.SchemaRef{{Type: "PartA", Version: 1}, {Type: "PartB", Version: 1}},
				func(p json.RawMessage) ([]eventstore.VersionedEvent, error) {
					var all map[string]json.RawMessage
					if err := json.Unmarshal(p, &all); err != nil {
						return nil, err
					}
					a, b := map[string]json.RawMessage{}, map[string]json.RawMessage{}
					for k, v := range all {
						if slices.Contains(partA, k) {
							a[k] = v
						} else {
							b[k] = v
						}
					}
					ja, _ := json.Marshal(a)
					jb, _ := json.Marshal(b)
					return []eventstore.VersionedEvent{{Type: "PartA", Version: 1, Payload: ja}, {Type: "PartB", Version: 1, Payload: jb}}, nil
				}))
		}
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return r
}

// model returns what the current code writes for an event that was v at
// step k: the reference model of each change from there on, on a Go map.
func (c propChain) model(k int, v map[string]any) []eventstore.VersionedEvent {
	v = maps.Clone(v)
	for _, st := range c.steps[k:] {
		switch st.kind {
		case propAdd:
			if _, ok := v[st.key]; !ok {
				v[st.key] = st.def
			}
		case propRenameField:
			if x, ok := v[st.key]; ok {
				delete(v, st.key)
				v[st.to] = x
			}
		case propScale:
			v[st.key] = v[st.key].(float64) * float64(st.factor)
		case propSplit:
			a, b := map[string]any{}, map[string]any{}
			for key, x := range v {
				if slices.Contains(st.partA, key) {
					a[key] = x
				} else {
					b[key] = x
				}
			}
			ja, _ := json.Marshal(propPartA(a))
			jb, _ := json.Marshal(propPartB(b))
			return []eventstore.VersionedEvent{{Type: "PartA", Version: 1, Payload: ja}, {Type: "PartB", Version: 1, Payload: jb}}
		}
	}
	j, _ := json.Marshal(propCurrent(v))
	return []eventstore.VersionedEvent{{Type: c.end.Type, Version: c.end.Version, Payload: j}}
}

// oldValue returns a random event as stored before step k.
func oldValue(rng *rand.Rand, st propStep, ints map[string]bool) map[string]any {
	v := map[string]any{}
	for key := range st.fieldsAt {
		if ints[key] {
			v[key] = float64(rng.IntN(1_000_000) - 500_000)
		} else {
			v[key] = "v" + strconv.Itoa(rng.IntN(1000))
		}
	}
	return v
}

func TestUpcastProperty(t *testing.T) {
	t.Parallel()
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 0x65736f78))
		c := genChain(rng)
		r := c.register(t)
		for range 5 {
			k := rng.IntN(len(c.steps) + 1)
			var at eventstore.SchemaRef
			var v map[string]any
			if k == len(c.steps) {
				if c.split {
					continue // nothing is stored at the split's results
				}
				at, v = c.end, oldValue(rng, propStep{fieldsAt: fieldsAtEnd(c)}, intsAt(c, k))
			} else {
				at, v = c.steps[k].at, oldValue(rng, c.steps[k], intsAt(c, k))
			}
			stored, _ := json.Marshal(v)
			got, err := r.ToCurrent(nil, eventstore.VersionedEvent{Type: at.Type, Version: at.Version, Payload: stored})
			if err != nil {
				t.Fatalf("seed %d, chain %s, stored at %s %s: %v", seed, c, at, stored, err)
			}
			want := c.model(k, v)
			if !sameEvents(t, got, want) {
				t.Fatalf("seed %d, chain %s, stored at %s %s:\nupcast  %s\nwant    %s", seed, c, at, stored, eventsString(got), eventsString(want))
			}
			// The stores' path decodes the same.
			recs, err := eventstore.RawRecord{Type: at.Type, SchemaVersion: at.Version, Payload: stored}.AppendDecoded(nil, r)
			if err != nil || len(recs) != len(want) {
				t.Fatalf("seed %d: AppendDecoded = %d records, %v; want %d", seed, len(recs), err, len(want))
			}
			for i, rec := range recs {
				if rec.Type != want[i].Type || rec.SchemaVersion != want[i].Version || !jsonEqual(t, mustJSON(t, rec.Data), want[i].Payload) {
					t.Fatalf("seed %d: record %d = %s@v%d %v, want %s", seed, i, rec.Type, rec.SchemaVersion, rec.Data, eventsString(want[i:i+1]))
				}
			}
		}
	}
}

// intsAt returns the integer fields of the event before step k.
func intsAt(c propChain, k int) map[string]bool {
	ints := map[string]bool{"f0": true, "f1": true}
	for _, st := range c.steps[:k] {
		switch st.kind {
		case propAdd:
			if _, ok := st.def.(float64); ok {
				ints[st.key] = true
			}
		case propRenameField:
			if ints[st.key] {
				delete(ints, st.key)
				ints[st.to] = true
			}
		}
	}
	return ints
}

func fieldsAtEnd(c propChain) map[string]bool {
	last := c.steps[len(c.steps)-1]
	f := maps.Clone(last.fieldsAt)
	switch last.kind {
	case propAdd:
		f[last.key] = true
	case propRenameField:
		delete(f, last.key)
		f[last.to] = true
	}
	return f
}

func sameEvents(t *testing.T, a, b []eventstore.VersionedEvent) bool {
	t.Helper()
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Type != b[i].Type || a[i].Version != b[i].Version || !jsonEqual(t, a[i].Payload, b[i].Payload) {
			return false
		}
	}
	return true
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eventsString(evs []eventstore.VersionedEvent) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("%s@v%d %s ", e.Type, e.Version, e.Payload)
	}
	return s
}

func (c propChain) String() string {
	s := ""
	for _, st := range c.steps {
		switch st.kind {
		case propAdd:
			s += fmt.Sprintf("[%s add %s=%v]", st.at, st.key, st.def)
		case propRenameField:
			s += fmt.Sprintf("[%s rename %s→%s]", st.at, st.key, st.to)
		case propScale:
			s += fmt.Sprintf("[%s scale %s×%d]", st.at, st.key, st.factor)
		case propRenameType:
			s += fmt.Sprintf("[%s rename type→%s]", st.at, st.newType)
		case propSplit:
			s += fmt.Sprintf("[%s split %v|rest]", st.at, st.partA)
		}
	}
	return s + " → " + c.end.String()
}

// Guard against a vacuous property: the generator must produce every kind.
func TestUpcastPropertyCoversEveryKind(t *testing.T) {
	t.Parallel()
	seen := map[propKind]bool{}
	for seed := range uint64(300) {
		for _, st := range genChain(rand.New(rand.NewPCG(seed, 0x65736f78))).steps {
			seen[st.kind] = true
		}
	}
	if want := map[propKind]bool{propAdd: true, propRenameField: true, propScale: true, propRenameType: true, propSplit: true}; !reflect.DeepEqual(seen, want) {
		t.Errorf("kinds generated: %v, want all five", seen)
	}
}
