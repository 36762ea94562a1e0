package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/google/uuid"
)

// RawJSON is an event whose payload is the JSON text it holds, byte for
// byte as far as encoding/json lets it through (MarshalJSON output is only
// compacted): the suite, and store tests, use it to append payloads that a
// Go struct could not produce. Register it with RegisterRawJSON.
type RawJSON []byte

// MarshalJSON returns r as is.
func (r RawJSON) MarshalJSON() ([]byte, error) { return r, nil }

// UnmarshalJSON keeps a copy of b.
func (r *RawJSON) UnmarshalJSON(b []byte) error {
	*r = bytes.Clone(b)
	return nil
}

// RawJSONType is the name the suite registers RawJSON under.
const RawJSONType = "storetest.raw_json"

// Refusal is one input every store must refuse with a typed error and
// without writing.
type Refusal struct {
	Name string
	// Payload is appended as a RawJSON event when set.
	Payload []byte
	// Metadata is the event's metadata (for cases without Payload, the
	// event is an ordinary one).
	Metadata eventstore.Metadata
	// Want is the sentinel the error must match.
	Want error
}

// jsonbStringLimit is the longest string jsonb holds (2^28-1 bytes).
const jsonbStringLimit = 1<<28 - 1

// Refusals lists the payloads and metadata PostgreSQL cannot store that
// encoding/json lets through: every store refuses each with an error
// matching Want, before writing (guarantee 8 in docs/guarantees.md). The
// PostgreSQL store's tests also send them straight to PostgreSQL to prove
// that it would refuse them. LargeRefusals has the cases too large for that.
func Refusals() []Refusal {
	malformed := func(name, payload string) Refusal {
		return Refusal{Name: name, Payload: []byte(payload), Want: eventstore.ErrMalformedPayload}
	}
	return []Refusal{
		malformed("NUL escape in a string", `{"a":"x\u0000y"}`),
		malformed("NUL escape in a key", `{"\u0000":1}`),
		malformed("NUL escape in a nested array", `{"a":[1,{"b":["\u0000"]}]}`),
		malformed("lone high surrogate", `{"a":"\ud800"}`),
		malformed("lone high surrogate in a key", `{"\udbff":1}`),
		malformed("lone low surrogate", `{"a":"\udc00"}`),
		malformed("high surrogate before a plain escape", `{"a":"\ud83d\n"}`),
		malformed("high surrogate before a character", `{"a":"\ud83dx"}`),
		malformed("high surrogate before a non-surrogate escape", `{"a":"\ud83d\u0041"}`),
		malformed("two high surrogates", `{"a":"\ud83d\ud83d"}`),
		malformed("surrogates in the wrong order", `{"a":"\ude00\ud83d"}`),
		malformed("invalid UTF-8 in a string", "{\"a\":\"x\xffy\"}"),
		malformed("invalid UTF-8 in a key", "{\"\xc3\":1}"),
		malformed("overlong UTF-8", "{\"a\":\"\xc0\xaf\"}"),
		malformed("UTF-8 encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}"),
		malformed("number 1e1000000", `{"a":1e1000000}`),
		malformed("number 1e131072", `{"a":1e131072}`),
		malformed("number -9.9e131072", `[-9.9e131072]`),
		malformed("number 1e-16384", `{"a":1e-16384}`),
		malformed("number 10e-16384", `{"a":10e-16384}`),
		malformed("zero with 16384 decimals", `{"a":0.0e-16383}`),
		malformed("zero with exponent 2^30-1", `{"a":0e1073741823}`),
		malformed("number 1e-1000000", `[1e-1000000]`),
		{Name: "NUL in metadata", Metadata: eventstore.Metadata{Actor: "a\x00b"}, Want: eventstore.ErrInvalidArgument},
		{Name: "NUL in a metadata key", Metadata: eventstore.Metadata{Extra: map[string]string{"k\x00": "v"}}, Want: eventstore.ErrInvalidArgument},
	}
}

// LargeRefusals lists the refusals of Refusals' kind that take hundreds of
// megabytes to build: a string over jsonb's 2^28-1 bytes. Each call builds
// them anew; the suite skips them under -short and -race.
func LargeRefusals() []Refusal {
	return []Refusal{
		{Name: "string longer than jsonb's limit", Payload: longString(jsonbStringLimit + 1), Want: eventstore.ErrMalformedPayload},
	}
}

// Storable lists payloads near the limits of Refusals that PostgreSQL
// stores: every store must accept them.
func Storable() [][]byte {
	return [][]byte{
		[]byte(`{"a":"\ud83d\ude00"}`), // a surrogate pair
		[]byte(`{"a":"\\u0000","b":"\\ud800"}`),
		[]byte(`{"a":"x\u0001\u001f\uffff\ufffe"}`),
		[]byte(`{"a":1e131071,"b":-9999e131068,"c":1e-16383,"d":0.5e-16382}`),
		[]byte(`{"a":0e1073741822,"b":0e-16383,"c":-0,"d":1E+2}`),
		[]byte("{\"a\":\"\xf4\x8f\xbf\xbf \xe2\x82\xac\"}"),
		[]byte(strings.Repeat("[", 200) + strings.Repeat("]", 200)),
	}
}

// longString returns {"s":"xxx…"} with a string of n bytes.
func longString(n int) []byte {
	b := make([]byte, 0, n+8)
	b = append(b, `{"s":"`...)
	b = append(b, bytes.Repeat([]byte{'x'}, n)...)
	return append(b, `"}`...)
}

// testRefusals appends every case of Refusals to a stream: each is refused
// with an error matching its sentinel, a payload's with a *PayloadError
// naming the event type, metadata's with an *InvalidArgumentError on
// "metadata"; nothing is written. Then the Storable payloads are appended and
// read back.
func testRefusals(t *testing.T, b *bundle) {
	cases := Refusals()
	if testing.Short() || raceEnabled {
		// eventstore's TestCheckJSONBLimits checks the same limits on the
		// shared check, without encoding/json in the way.
		t.Log("-short or -race: skipping LargeRefusals")
	} else {
		cases = append(cases, LargeRefusals()...)
	}
	for _, tc := range cases {
		events := []eventstore.Event{ev("fine", 1), {Data: noted{Text: "fine"}, Metadata: tc.Metadata}}
		if tc.Payload != nil {
			events[1] = eventstore.Event{Data: RawJSON(tc.Payload), Metadata: tc.Metadata}
		}
		_, err := b.store.Append(b.ctx, "refused-1", eventstore.Any, events)
		wantErr(t, "Append: "+tc.Name, err, tc.Want)
		if tc.Payload != nil {
			var pe *eventstore.PayloadError
			if !errors.As(err, &pe) || pe.Type != RawJSONType {
				t.Fatalf("Append: %s: error %v is not a *PayloadError for type %q", tc.Name, err, RawJSONType)
			}
		} else {
			var ie *eventstore.InvalidArgumentError
			if !errors.As(err, &ie) || ie.Field != "metadata" {
				t.Fatalf("Append: %s: error %v is not an *InvalidArgumentError on metadata", tc.Name, err)
			}
		}
		if len(tc.Payload) < 200 && !strings.Contains(err.Error(), "event 1") {
			t.Fatalf("Append: %s: error %q does not name the event's index", tc.Name, err)
		}
	}
	b.wantStream(t, "refused-1", nil)
	b.wantFeed(t, nil)

	var want []uuid.UUID
	for i, p := range Storable() {
		res := b.append(t, "refused-2", eventstore.Exact(int64(i)), eventstore.Event{Data: RawJSON(p)})
		want = append(want, res.EventIDs...)
		recs := b.readStream(t, "refused-2", int64(i+1))
		if len(recs) != 1 || !jsonSame(recs[0].Payload, p) {
			t.Fatalf("storable payload %d %.80q read back as %+v", i, p, recs)
		}
	}
	b.wantStream(t, "refused-2", want)
}

// testTypeNames registers type names PostgreSQL cannot store as text: each
// is refused with an *InvalidArgumentError, and the name stays free.
func testTypeNames(t *testing.T, b *bundle) {
	type a struct{}
	for _, name := range []string{"a\x00b", "\x00", "x\xffy", "\xc0\xaf", "\xed\xa0\x80"} {
		err := eventstore.Register[a](b.store.Registry(), name)
		wantErr(t, fmt.Sprintf("Register(%q)", name), err, eventstore.ErrInvalidArgument)
		if b.store.Registry().Has(name) {
			t.Fatalf("Register(%q) refused the name but registered it", name)
		}
	}
	if err := eventstore.Register[a](b.store.Registry(), "storetest.ünïcode \u2028 ☕"); err != nil {
		t.Fatalf("Register of a valid UTF-8 name: %v", err)
	}
	res := b.append(t, "typenames-1", eventstore.NoStream, eventstore.Event{Data: a{}})
	recs := b.readStream(t, "typenames-1", 1)
	if len(recs) != 1 || recs[0].Type != "storetest.ünïcode \u2028 ☕" || recs[0].ID != res.EventIDs[0] {
		t.Fatalf("ReadStream of an event with a UTF-8 type name = %+v", recs)
	}
}

// testSnapshotRefusals saves snapshots PostgreSQL cannot store: each is
// refused with ErrInvalidArgument and changes nothing. Snapshot payloads are
// kept as JSON text, so what jsonb refuses but JSON text holds (\u0000, a
// lone surrogate, a huge number) is saved and read back.
func testSnapshotRefusals(t *testing.T, b *bundle) {
	base := eventstore.Snapshot{StreamID: "snaprefused-1", Version: 1, Type: "t", Payload: []byte(`{"ok":true}`)}
	b.saveSnapshot(t, base)
	for _, tc := range []struct {
		name    string
		typ     string
		payload string
	}{
		{"NUL in Type", "t\x00", `{}`},
		{"invalid UTF-8 in Type", "t\xff", `{}`},
		{"invalid UTF-8 in a payload string", "t", "{\"a\":\"\xff\"}"},
		{"invalid UTF-8 in a payload key", "t", "{\"\xc3\":1}"},
		{"UTF-8 encoded surrogate in the payload", "t", "[\"\xed\xa0\x80\"]"},
	} {
		err := b.store.SaveSnapshot(b.ctx, eventstore.Snapshot{StreamID: "snaprefused-1", Version: 2, Type: tc.typ, Payload: []byte(tc.payload)})
		wantErr(t, "SaveSnapshot with "+tc.name, err, eventstore.ErrInvalidArgument)
	}
	wantSnapshot(t, b.loadSnapshot(t, "snaprefused-1"), base)

	for i, p := range []string{`{"a":"\u0000"}`, `{"a":"\ud800"}`, `{"a":1e1000000}`} {
		s := eventstore.Snapshot{StreamID: "snaprefused-2", Version: int64(i + 1), Type: "t", Payload: []byte(p)}
		b.saveSnapshot(t, s)
		if got := b.loadSnapshot(t, "snaprefused-2"); string(got.Payload) != p {
			t.Fatalf("snapshot payload %s read back as %s, want it byte for byte", p, got.Payload)
		}
	}
}

// testReplay appends events with given IDs, then the same append again: a
// replay writes nothing and returns the stored events' result, whatever
// expected version allows the stored versions; any other reuse of a stored
// ID is refused.
func testReplay(t *testing.T, b *bundle) {
	x, y, z := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	b.append(t, "replay-1", eventstore.NoStream, ev("before", 0))
	events := []eventstore.Event{{ID: x, Data: noted{N: 1}}, {ID: y, Data: noted{N: 2}}}
	first := b.append(t, "replay-1", eventstore.Exact(1), events...)
	after := b.append(t, "replay-1", eventstore.Exact(3), ev("after", 3))

	for _, expected := range []eventstore.ExpectedVersion{eventstore.Exact(1), eventstore.Any, eventstore.StreamExists} {
		res, err := b.store.Append(b.ctx, "replay-1", expected, events)
		if err != nil {
			t.Fatalf("replay with %s: %v", expected, err)
		}
		if res.StreamID != first.StreamID || res.FirstVersion != first.FirstVersion || res.LastVersion != first.LastVersion ||
			res.LastPosition != first.LastPosition || !slicesEqual(res.EventIDs, first.EventIDs) {
			t.Fatalf("replay with %s = %+v, want the first append's %+v", expected, res, first)
		}
	}
	for _, tc := range []struct {
		name     string
		stream   string
		expected eventstore.ExpectedVersion
		events   []eventstore.Event
		want     error
	}{
		{"at a version expected does not allow", "replay-1", eventstore.Exact(4), events, eventstore.ErrInvalidArgument},
		{"with NoStream", "replay-1", eventstore.NoStream, events, eventstore.ErrConcurrencyConflict},
		{"with Exact(2)", "replay-1", eventstore.Exact(2), events, eventstore.ErrConcurrencyConflict},
		{"to another stream", "replay-2", eventstore.Any, events, eventstore.ErrInvalidArgument},
		{"of a part", "replay-1", eventstore.Any, events[:1], eventstore.ErrInvalidArgument},
		{"in another order", "replay-1", eventstore.Any, []eventstore.Event{events[1], events[0]}, eventstore.ErrInvalidArgument},
		{"with a new event", "replay-1", eventstore.Any, append(events[:2:2], eventstore.Event{ID: z, Data: noted{N: 3}}), eventstore.ErrInvalidArgument},
		{"across two appends", "replay-1", eventstore.Any, []eventstore.Event{events[1], {ID: after.EventIDs[0], Data: noted{N: 3}}}, eventstore.ErrInvalidArgument},
	} {
		_, err := b.store.Append(b.ctx, tc.stream, tc.expected, tc.events)
		wantErr(t, "Append of stored IDs "+tc.name, err, tc.want)
	}
	info := b.info(t, "replay-1")
	if info.Version != 4 {
		t.Fatalf("stream at version %d after replays, want 4", info.Version)
	}
	b.wantStream(t, "replay-2", nil)
}

// jsonSame reports whether a and b are the same JSON value, numbers compared
// by value (jsonb writes 1e3 as 1000).
func jsonSame(a, b []byte) bool {
	decode := func(b []byte) (any, bool) {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		return v, d.Decode(&v) == nil
	}
	va, oka := decode(a)
	vb, okb := decode(b)
	return oka && okb && sameValue(va, vb)
}

func sameValue(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		fa, _, errA := big.ParseFloat(string(a), 10, 256, big.ToNearestEven)
		fb, _, errB := big.ParseFloat(string(b), 10, 256, big.ToNearestEven)
		return errA == nil && errB == nil && fa.Cmp(fb) == 0
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if !sameValue(v, b[k]) {
				return false
			}
		}
		return true
	}
	return a == b
}

func slicesEqual(a, b []uuid.UUID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// NewLimitedStoreFunc returns a fresh, empty store that encodes and decodes
// with reg and refuses events larger than maxEventSize bytes (its config's
// MaxEventSize).
type NewLimitedStoreFunc = func(t *testing.T, reg *eventstore.Registry, maxEventSize int) eventstore.Store

// RunMaxEventSize checks a store's maximum event size: events of payload
// plus metadata up to the limit are stored; a larger one is refused with an
// *eventstore.EventTooLargeError (eventstore.ErrEventTooLarge and
// ErrInvalidArgument) naming its index, type and size, and nothing of its
// append is written.
func RunMaxEventSize(t *testing.T, newStore NewLimitedStoreFunc) {
	t.Helper()
	t.Run("MaxEventSize", func(t *testing.T) {
		t.Parallel()
		const limit = 1000
		b := setup(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store { return newStore(t, reg, limit) })
		ctx := eventstore.WithActor(b.ctx, "alice") // {"actor":"alice"}: 17 bytes of metadata
		// {"s":"…"} is 8 bytes around the string.
		fits := eventstore.Event{Data: RawJSON(longString(limit - 17 - 8))}
		over := eventstore.Event{Data: RawJSON(longString(limit - 17 - 8 + 1))}
		res, err := b.store.Append(ctx, "limit-1", eventstore.NoStream, []eventstore.Event{fits, fits})
		if err != nil {
			t.Fatalf("Append of two events of exactly %d bytes: %v", limit, err)
		}
		_, err = b.store.Append(ctx, "limit-1", eventstore.Any, []eventstore.Event{fits, over})
		wantErr(t, "Append of an event one byte over the limit", err, eventstore.ErrEventTooLarge)
		wantErr(t, "Append of an event one byte over the limit", err, eventstore.ErrInvalidArgument)
		var te *eventstore.EventTooLargeError
		if !errors.As(err, &te) || te.Index != 1 || te.Type != RawJSONType || te.Size != limit+1 || te.Max != limit {
			t.Fatalf("error %v is not an *EventTooLargeError{Index: 1, Type: %q, Size: %d, Max: %d}", err, RawJSONType, limit+1, limit)
		}
		b.wantStream(t, "limit-1", res.EventIDs)
		b.wantFeed(t, res.EventIDs)
	})
}
