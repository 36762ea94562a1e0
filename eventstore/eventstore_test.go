package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

type placed struct {
	OrderID string `json:"order_id"`
	Cents   int64  `json:"cents"`
}

type shipped struct {
	OrderID string `json:"order_id"`
}

func newRegistry(t *testing.T) *eventstore.Registry {
	t.Helper()
	r := eventstore.NewRegistry()
	eventstore.MustRegister[placed](r, "OrderPlaced")
	eventstore.MustRegister[shipped](r, "OrderShipped")
	return r
}

func TestRegistryRoundTrip(t *testing.T) {
	t.Parallel()
	r := newRegistry(t)
	for _, v := range []any{placed{"o-1", 1250}, &placed{"o-2", 7}} {
		name, payload, err := r.Encode(v)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", v, err)
		}
		if name != "OrderPlaced" {
			t.Errorf("Encode(%#v) name = %q, want OrderPlaced", v, name)
		}
		got, err := r.Decode(name, payload)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		want := v
		if p, ok := v.(*placed); ok {
			want = *p
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Decode = %#v, want the value %#v", got, want)
		}
	}
	if got, want := r.Names(), []string{"OrderPlaced", "OrderShipped"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
}

func TestRegisterRefuses(t *testing.T) {
	t.Parallel()
	r := newRegistry(t)
	if err := eventstore.Register[placed](r, "OrderPlaced"); err != nil {
		t.Errorf("registering the same pair again: %v, want nil", err)
	}
	for name, err := range map[string]error{
		"empty name":          eventstore.Register[struct{ A int }](r, ""),
		"pointer type":        eventstore.Register[*placed](r, "PlacedPtr"),
		"name taken":          eventstore.Register[shipped](r, "OrderPlaced"),
		"type under new name": eventstore.Register[placed](r, "Placed2"),
	} {
		if !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestRegistryTypedErrors(t *testing.T) {
	t.Parallel()
	r := newRegistry(t)
	_, _, err := r.Encode(struct{ X int }{1})
	var ut *eventstore.UnknownEventTypeError
	if !errors.Is(err, eventstore.ErrUnknownEventType) || !errors.As(err, &ut) || ut.GoType == "" {
		t.Errorf("Encode(unregistered) = %v, want *UnknownEventTypeError with GoType", err)
	}
	_, err = r.Decode("Nope", []byte(`{}`))
	if !errors.As(err, &ut) || ut.Name != "Nope" {
		t.Errorf("Decode(unknown name) = %v, want *UnknownEventTypeError{Name: Nope}", err)
	}
	_, err = r.Decode("OrderPlaced", []byte(`{"cents":"twelve"}`))
	var pe *eventstore.PayloadError
	if !errors.Is(err, eventstore.ErrMalformedPayload) || !errors.As(err, &pe) || pe.Op != "decode" || pe.Type != "OrderPlaced" {
		t.Errorf("Decode(bad payload) = %v, want *PayloadError decode OrderPlaced", err)
	}
}

func TestConcurrencyErrorMatches(t *testing.T) {
	t.Parallel()
	var err error = &eventstore.ConcurrencyError{StreamID: "order-1", Expected: eventstore.Exact(3), Actual: 5}
	wrapped := errors.Join(errors.New("context"), err)
	var ce *eventstore.ConcurrencyError
	if !errors.Is(wrapped, eventstore.ErrConcurrencyConflict) || !errors.As(wrapped, &ce) || ce.Actual != 5 {
		t.Fatalf("wrapped conflict does not match: %v", wrapped)
	}
	if msg := err.Error(); !strings.Contains(msg, `"order-1"`) || !strings.Contains(msg, "expected version 3, actual 5") {
		t.Errorf("message %q does not name stream, expected and actual", msg)
	}
}

func TestExpectedVersion(t *testing.T) {
	t.Parallel()
	cases := []struct {
		e       eventstore.ExpectedVersion
		current int64
		want    bool
	}{
		{eventstore.Any, 0, true}, {eventstore.Any, 7, true},
		{eventstore.NoStream, 0, true}, {eventstore.NoStream, 1, false},
		{eventstore.StreamExists, 0, false}, {eventstore.StreamExists, 2, true},
		{eventstore.Exact(2), 2, true}, {eventstore.Exact(2), 3, false},
		{eventstore.Exact(0), 0, true}, {eventstore.Exact(0), 1, false},
	}
	for _, c := range cases {
		if got := c.e.Matches(c.current); got != c.want {
			t.Errorf("%s.Matches(%d) = %v, want %v", c.e, c.current, got, c.want)
		}
	}
	if eventstore.Exact(0) != eventstore.NoStream {
		t.Error("Exact(0) != NoStream")
	}
	if err := eventstore.Exact(-1).Validate(); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("Exact(-1).Validate() = %v, want ErrInvalidArgument", err)
	}
}

func TestPositionOrder(t *testing.T) {
	t.Parallel()
	a := eventstore.Position{TransactionID: 10, Position: 9}
	b := eventstore.Position{TransactionID: 11, Position: 2}
	c := eventstore.Position{TransactionID: 11, Position: 3}
	if !a.Less(b) || !b.Less(c) || c.Less(a) || a.Compare(a) != 0 {
		t.Errorf("positions do not sort by (transaction_id, position): %v %v %v", a, b, c)
	}
	if !(eventstore.Position{}).IsZero() || a.IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestValidateStreamID(t *testing.T) {
	t.Parallel()
	good := []string{"order-1", "a", strings.Repeat("x", eventstore.MaxStreamIDLength), "café-☕"}
	bad := []string{"", strings.Repeat("x", eventstore.MaxStreamIDLength+1), "a\x00b", "a\nb", "\x7f", " lead", "trail ", "bad\xffutf8"}
	for _, id := range good {
		if err := eventstore.ValidateStreamID(id); err != nil {
			t.Errorf("ValidateStreamID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range bad {
		err := eventstore.ValidateStreamID(id)
		var ie *eventstore.InvalidStreamIDError
		if !errors.Is(err, eventstore.ErrInvalidStreamID) || !errors.As(err, &ie) || ie.Reason == "" {
			t.Errorf("ValidateStreamID(%q) = %v, want *InvalidStreamIDError", id, err)
		}
	}
	if got := eventstore.Category("order-7f3c-aa"); got != "order" {
		t.Errorf("Category = %q, want order", got)
	}
}

func TestMetadataContextAndJSON(t *testing.T) {
	t.Parallel()
	ctx := eventstore.WithCorrelationID(context.Background(), "corr")
	ctx = eventstore.WithActor(ctx, "alice")
	ctx = eventstore.WithOnBehalfOf(ctx, "customer-7")
	ctx = eventstore.WithReason(ctx, "ticket 42")
	ctx = eventstore.WithMetadata(ctx, eventstore.Metadata{Extra: map[string]string{"tenant": "t1"}})
	md := eventstore.MetadataFrom(ctx)
	want := eventstore.Metadata{CorrelationID: "corr", Actor: "alice", OnBehalfOf: "customer-7", Reason: "ticket 42", Extra: map[string]string{"tenant": "t1"}}
	if !reflect.DeepEqual(md, want) {
		t.Fatalf("MetadataFrom = %#v, want %#v", md, want)
	}
	md.Extra["tenant"] = "changed"
	if eventstore.MetadataFrom(ctx).Extra["tenant"] != "t1" {
		t.Error("MetadataFrom shares its map with the context")
	}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"actor":"alice","correlation_id":"corr","on_behalf_of":"customer-7","reason":"ticket 42","tenant":"t1"}` {
		t.Errorf("JSON = %s", b)
	}
	var back eventstore.Metadata
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, want) {
		t.Errorf("round trip = %#v, %v", back, err)
	}
	if m := (eventstore.Metadata{Reason: "r"}); m.IsZero() {
		t.Error("Metadata{Reason} IsZero")
	}
	if m := (eventstore.Metadata{OnBehalfOf: "p"}); m.IsZero() {
		t.Error("Metadata{OnBehalfOf} IsZero")
	}
	over := eventstore.Metadata{Actor: "a"}.Merge(eventstore.Metadata{OnBehalfOf: "p", Reason: "r"})
	if over.Actor != "a" || over.OnBehalfOf != "p" || over.Reason != "r" {
		t.Errorf("Merge = %+v", over)
	}
}

func TestEncodeAppend(t *testing.T) {
	t.Parallel()
	r := newRegistry(t)
	ctx := eventstore.WithCausationID(context.Background(), "cmd-1")
	given := uuid.Must(uuid.NewV7())
	enc, err := eventstore.EncodeAppend(ctx, r, "order-1", eventstore.Any, []eventstore.Event{
		{Data: placed{"o", 1}, Metadata: eventstore.Metadata{Actor: "bob"}},
		{ID: given, Data: &shipped{"o"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if enc[0].ID.Version() != 7 || enc[1].ID != given {
		t.Errorf("IDs = %v, %v: want a UUIDv7 and the given ID", enc[0].ID, enc[1].ID)
	}
	if enc[0].Meta.CausationID != "cmd-1" || enc[0].Meta.Actor != "bob" || enc[1].Meta.Actor != "" {
		t.Errorf("metadata not merged per event: %+v / %+v", enc[0].Meta, enc[1].Meta)
	}
	for name, c := range map[string]struct {
		stream string
		events []eventstore.Event
		want   error
	}{
		"bad stream":   {"", []eventstore.Event{{Data: placed{}}}, eventstore.ErrInvalidStreamID},
		"no events":    {"order-1", nil, eventstore.ErrInvalidArgument},
		"unregistered": {"order-1", []eventstore.Event{{Data: 42}}, eventstore.ErrUnknownEventType},
	} {
		if _, err := eventstore.EncodeAppend(ctx, r, c.stream, eventstore.Any, c.events, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
}

// FuzzValidateStreamID: whatever the validator accepts is storable text: valid
// UTF-8, within the length bound, without control characters or edge spaces.
func FuzzValidateStreamID(f *testing.F) {
	for _, s := range []string{"order-1", "", "a\x00", " x", "☕", strings.Repeat("a", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if eventstore.ValidateStreamID(id) != nil {
			return
		}
		if id == "" || len(id) > eventstore.MaxStreamIDLength || !utf8.ValidString(id) || strings.TrimSpace(id) != id {
			t.Fatalf("accepted %q", id)
		}
		for _, r := range id {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("accepted control character in %q", id)
			}
		}
	})
}

// FuzzRegistryDecode: decoding arbitrary bytes never panics and fails only
// with a typed payload error; what decodes re-encodes and decodes the same.
func FuzzRegistryDecode(f *testing.F) {
	for _, s := range []string{`{"order_id":"o","cents":5}`, `{`, `null`, `[]`, `{"cents":1e99}`, "\x00"} {
		f.Add([]byte(s))
	}
	r := eventstore.NewRegistry()
	eventstore.MustRegister[placed](r, "OrderPlaced")
	f.Fuzz(func(t *testing.T, payload []byte) {
		v, err := r.Decode("OrderPlaced", payload)
		if err != nil {
			if !errors.Is(err, eventstore.ErrMalformedPayload) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		_, again, err := r.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		v2, err := r.Decode("OrderPlaced", again)
		if err != nil || !reflect.DeepEqual(v, v2) {
			t.Fatalf("re-decode %#v != %#v (%v)", v2, v, err)
		}
	})
}

// FuzzMetadataJSON: any JSON object decodes into Metadata without panicking,
// and Metadata survives its own JSON round trip.
func FuzzMetadataJSON(f *testing.F) {
	for _, s := range []string{`{"correlation_id":"c","x":"y"}`, `{"n":1,"b":true}`, `[]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m eventstore.Metadata
		if json.Unmarshal(b, &m) != nil {
			return
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var back eventstore.Metadata
		if err := json.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(m.Map(), back.Map()) {
			t.Fatalf("round trip %#v -> %s -> %#v (%v)", m, out, back, err)
		}
	})
}

// TestOutcomeErrors: the typed errors of an unknown outcome and of a too
// large event match their sentinels and say what to do.
func TestOutcomeErrors(t *testing.T) {
	t.Parallel()
	cause := errors.New("driver: bad connection")
	id := uuid.MustParse("01900000-0000-7000-8000-000000000001")
	err := fmt.Errorf("wrapped: %w", &eventstore.OutcomeUnknownError{StreamID: "order-1", EventIDs: []uuid.UUID{id, uuid.New()}, Err: cause, Lookup: errors.New("connection refused")})
	var ue *eventstore.OutcomeUnknownError
	if !errors.Is(err, eventstore.ErrOutcomeUnknown) || !errors.Is(err, cause) || !errors.As(err, &ue) || errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("OutcomeUnknownError does not match as documented: %v", err)
	}
	for _, want := range []string{"order-1", id.String(), "bad connection", "connection refused", "StreamInfo", "same event IDs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	tl := error(&eventstore.EventTooLargeError{Index: 2, Type: "t", Size: 11, Max: 10})
	if !errors.Is(tl, eventstore.ErrEventTooLarge) || !errors.Is(tl, eventstore.ErrInvalidArgument) || errors.Is(tl, eventstore.ErrMalformedPayload) {
		t.Fatalf("EventTooLargeError matches wrongly: %v", tl)
	}
}
