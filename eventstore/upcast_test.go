package eventstore_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// paidV3 is the current shape of the "OrderPaid" event of these tests:
// version 1 was {"order_id", "cents"}, version 2 added "currency" (default
// "EUR"), version 3 grouped amount and currency.
type paidV3 struct {
	OrderID string `json:"order_id"`
	Amount  money  `json:"amount"`
}

type money struct {
	Currency   string `json:"currency"`
	MinorUnits int64  `json:"minor_units"`
}

// paidV2 is version 2's shape, as an upcaster file would declare it.
type paidV2 struct {
	OrderID  string `json:"order_id"`
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

func paidRegistry(t *testing.T) *eventstore.Registry {
	t.Helper()
	r := eventstore.NewRegistry()
	must(t, eventstore.RegisterVersion[paidV3](r, "OrderPaid", 3))
	must(t, r.Upcast("OrderPaid", 1, eventstore.AddField("currency", "EUR")))
	must(t, eventstore.UpcastAs(r, "OrderPaid", 2, func(old paidV2) (paidV3, error) {
		return paidV3{OrderID: old.OrderID, Amount: money{Currency: old.Currency, MinorUnits: old.Cents}}, nil
	}))
	must(t, r.Validate())
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRegisterVersionEncodes(t *testing.T) {
	t.Parallel()
	r := paidRegistry(t)
	ev, err := r.EncodeEvent(&paidV3{OrderID: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "OrderPaid" || ev.Version != 3 {
		t.Errorf("EncodeEvent = %s@v%d, want OrderPaid@v3", ev.Type, ev.Version)
	}
	if v, ok := r.CurrentVersion("OrderPaid"); !ok || v != 3 {
		t.Errorf("CurrentVersion = %d, %v; want 3, true", v, ok)
	}
	if _, ok := r.CurrentVersion("Nope"); ok {
		t.Error("CurrentVersion of an unknown name reports true")
	}
	// Register is version 1; the same triple again is a no-op, another
	// version of the same pair is refused.
	must(t, eventstore.RegisterVersion[paidV3](r, "OrderPaid", 3))
	if err := eventstore.RegisterVersion[paidV3](r, "OrderPaid", 4); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("registering another version of a registered pair: %v, want ErrInvalidArgument", err)
	}
	if err := eventstore.RegisterVersion[shipped](r, "Shipped", 0); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("version 0: %v, want ErrInvalidArgument", err)
	}
}

// TestUpcastChain reads the same event stored at versions 1, 2 and 3 (and
// with no version, as rows stored before versions existed read) and gets
// the same current value from each.
func TestUpcastChain(t *testing.T) {
	t.Parallel()
	r := paidRegistry(t)
	want := paidV3{OrderID: "o-1", Amount: money{Currency: "EUR", MinorUnits: 1250}}
	for _, c := range []struct {
		version int
		payload string
		want    paidV3
	}{
		{0, `{"order_id": "o-1", "cents": 1250}`, want},
		{1, `{"order_id": "o-1", "cents": 1250}`, want},
		{2, `{"order_id": "o-1", "cents": 1250, "currency": "EUR"}`, want},
		{2, `{"order_id": "o-1", "cents": 1250, "currency": "CHF"}`, paidV3{OrderID: "o-1", Amount: money{Currency: "CHF", MinorUnits: 1250}}},
		{3, `{"order_id": "o-1", "amount": {"currency": "EUR", "minor_units": 1250}}`, want},
	} {
		raw := eventstore.RawRecord{ID: uuid.New(), StreamID: "order-1", StreamVersion: 4, Type: "OrderPaid", SchemaVersion: c.version, Payload: json.RawMessage(c.payload), Metadata: json.RawMessage(`{"actor":"a"}`)}
		rec, err := raw.Decode(r)
		if err != nil {
			t.Fatalf("version %d: %v", c.version, err)
		}
		if rec.Data != c.want {
			t.Errorf("version %d: Data = %+v, want %+v", c.version, rec.Data, c.want)
		}
		stored := max(c.version, 1)
		if rec.Type != "OrderPaid" || rec.SchemaVersion != 3 || rec.StoredType != "OrderPaid" || rec.StoredSchemaVersion != stored || rec.Index != 0 || rec.ID != raw.ID || rec.Metadata.Actor != "a" {
			t.Errorf("version %d: record %+v: want type OrderPaid@v3, stored @v%d, index 0, the stored ID and metadata", c.version, rec, stored)
		}
		var got paidV3
		if err := json.Unmarshal(rec.Payload, &got); err != nil || got != c.want {
			t.Errorf("version %d: Payload %s is not the current version's encoding (%v)", c.version, rec.Payload, err)
		}
		// Record() does not upcast: it shows the stored form.
		plain, err := raw.Record()
		if err != nil || plain.SchemaVersion != stored || string(plain.Payload) != c.payload {
			t.Errorf("version %d: Record() = version %d %s, %v; want the stored form", c.version, plain.SchemaVersion, plain.Payload, err)
		}
	}
}

// Versions of "Greeted", its rename "Welcomed", the split "NoteTaken" and
// the dropped "Pinged".
type welcomed struct {
	Name string `json:"name"`
}

type noteTaken struct {
	Text string `json:"text"`
}

func shapesRegistry(t *testing.T) *eventstore.Registry {
	t.Helper()
	r := eventstore.NewRegistry()
	must(t, eventstore.Register[welcomed](r, "Welcomed"))
	must(t, eventstore.Register[noteTaken](r, "NoteTaken"))
	// "Greeted" v1 {"who"} was renamed "Welcomed" with a field renamed.
	must(t, r.Upcast("Greeted", 1, eventstore.RenameField("who", "name")))
	must(t, r.Rename("Greeted", 2, "Welcomed", 1))
	// "Visit" v1 {"name", "notes": [...]} is split into a Welcomed and a
	// NoteTaken per note.
	must(t, r.Split("Visit", 1, []eventstore.SchemaRef{{Type: "Welcomed", Version: 1}, {Type: "NoteTaken", Version: 1}},
		func(p json.RawMessage) ([]eventstore.VersionedEvent, error) {
			var v struct {
				Name  string   `json:"name"`
				Notes []string `json:"notes"`
			}
			if err := json.Unmarshal(p, &v); err != nil {
				return nil, err
			}
			w, _ := json.Marshal(welcomed{Name: v.Name})
			out := []eventstore.VersionedEvent{{Type: "Welcomed", Version: 1, Payload: w}}
			for _, n := range v.Notes {
				b, _ := json.Marshal(noteTaken{Text: n})
				out = append(out, eventstore.VersionedEvent{Type: "NoteTaken", Version: 1, Payload: b})
			}
			return out, nil
		}))
	must(t, r.Drop("Pinged", 1))
	must(t, r.Validate())
	return r
}

func TestRenameSplitDrop(t *testing.T) {
	t.Parallel()
	r := shapesRegistry(t)
	id := uuid.New()
	raw := func(typ, payload string) eventstore.RawRecord {
		return eventstore.RawRecord{Position: eventstore.Position{TransactionID: 9, Position: 7}, ID: id, StreamID: "visit-1", StreamVersion: 3,
			Type: typ, SchemaVersion: 1, Payload: json.RawMessage(payload), Metadata: json.RawMessage(`{"correlation_id":"c","k":"v"}`)}
	}

	recs, err := raw("Greeted", `{"who": "Ada"}`).AppendDecoded(nil, r)
	if err != nil || len(recs) != 1 {
		t.Fatalf("renamed: %v, %v", recs, err)
	}
	if rec := recs[0]; rec.Type != "Welcomed" || rec.SchemaVersion != 1 || rec.StoredType != "Greeted" || rec.StoredSchemaVersion != 1 || rec.Data != (welcomed{Name: "Ada"}) || rec.ID != id {
		t.Errorf("renamed record = %+v", rec)
	}

	recs, err = raw("Visit", `{"name": "Ada", "notes": ["a", "b"]}`).AppendDecoded(nil, r)
	if err != nil || len(recs) != 3 {
		t.Fatalf("split: %v, %v", recs, err)
	}
	wantData := []any{welcomed{Name: "Ada"}, noteTaken{Text: "a"}, noteTaken{Text: "b"}}
	seen := map[uuid.UUID]bool{}
	for i, rec := range recs {
		if rec.Data != wantData[i] || rec.Index != i || rec.Position != recs[0].Position || rec.StreamVersion != 3 || rec.StoredType != "Visit" {
			t.Errorf("split record %d = %+v", i, rec)
		}
		if rec.ID != eventstore.SplitEventID(id, i) || seen[rec.ID] {
			t.Errorf("split record %d: ID %s, want SplitEventID(stored, %d), distinct", i, rec.ID, i)
		}
		seen[rec.ID] = true
		if rec.Metadata.CorrelationID != "c" || rec.Metadata.Extra["k"] != "v" {
			t.Errorf("split record %d: metadata %+v, want the stored event's", i, rec.Metadata)
		}
	}
	if recs[0].ID != id {
		t.Error("the first record of a split does not keep the stored event ID")
	}
	recs[1].Metadata.Extra["k"] = "changed"
	if recs[2].Metadata.Extra["k"] != "v" {
		t.Error("the records of a split share their metadata map")
	}
	if again := eventstore.SplitEventID(id, 2); again != recs[2].ID {
		t.Error("SplitEventID is not deterministic")
	}

	recs, err = raw("Pinged", `{}`).AppendDecoded([]eventstore.Record{{StreamID: "before"}}, r)
	if err != nil || len(recs) != 1 || recs[0].StreamID != "before" {
		t.Errorf("dropped: %v, %v; want dst unchanged", recs, err)
	}
	// Decode insists on exactly one record.
	if _, err := raw("Pinged", `{}`).Decode(r); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("Decode of a dropped event: %v, want ErrInvalidArgument", err)
	}
	if _, err := raw("Visit", `{"name": "Ada"}`).Decode(r); err != nil {
		t.Errorf("Decode of a split into one record: %v", err)
	}

	for name, want := range map[string][]string{"Greeted": {"Welcomed"}, "Visit": {"NoteTaken", "Welcomed"}, "Pinged": {}, "Welcomed": {"Welcomed"}} {
		if got := r.ReadsAs(name, 1); !slices.Equal(got, want) || got == nil {
			t.Errorf("ReadsAs(%s, 1) = %#v, want %v", name, got, want)
		}
	}
	if got := r.ReadsAs("Welcomed", 2); got != nil {
		t.Errorf("ReadsAs of a too-new version = %v, want nil", got)
	}
	if got := r.ReadsAs("Nope", 1); got != nil {
		t.Errorf("ReadsAs of an unknown type = %v, want nil", got)
	}
}

// TestTooNewVersion: an event written by a newer deployment is refused with
// a typed error, never guessed at.
func TestTooNewVersion(t *testing.T) {
	t.Parallel()
	r := paidRegistry(t)
	raw := eventstore.RawRecord{StreamID: "order-1", StreamVersion: 2, Type: "OrderPaid", SchemaVersion: 4, Payload: json.RawMessage(`{"order_id":"o"}`)}
	_, err := raw.Decode(r)
	var se *eventstore.SchemaVersionError
	if !errors.Is(err, eventstore.ErrUnknownSchemaVersion) || !errors.As(err, &se) || !se.TooNew() || se.Version != 4 || se.Latest != 3 || se.Type != "OrderPaid" {
		t.Fatalf("Decode of version 4 = %v, want a too-new *SchemaVersionError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"order-1"`) || !strings.Contains(msg, "newer deployment") {
		t.Errorf("message %q does not name the stream or the likely cause", msg)
	}
	if _, err := r.ToCurrent(nil, eventstore.VersionedEvent{Type: "OrderPaid", Version: 4}); !errors.As(err, &se) || !se.TooNew() {
		t.Errorf("ToCurrent of version 4 = %v, want too new", err)
	}

	// A gap: version 1 of a type whose chain starts at 2.
	g := eventstore.NewRegistry()
	must(t, eventstore.RegisterVersion[paidV3](g, "OrderPaid", 3))
	must(t, eventstore.UpcastAs(g, "OrderPaid", 2, func(old paidV2) (paidV3, error) { return paidV3{OrderID: old.OrderID}, nil }))
	_, err = eventstore.RawRecord{Type: "OrderPaid", SchemaVersion: 1, Payload: json.RawMessage(`{}`)}.Decode(g)
	if !errors.As(err, &se) || se.TooNew() || se.Version != 1 {
		t.Errorf("Decode of an unread version = %v, want a *SchemaVersionError that is not TooNew", err)
	}
	if err := g.Validate(); !errors.Is(err, eventstore.ErrInvalidUpcaster) || !strings.Contains(err.Error(), "version 1") {
		t.Errorf("Validate with no upcaster of version 1 = %v, want an *UpcasterError naming version 1", err)
	}
}

func TestUpcasterFailures(t *testing.T) {
	t.Parallel()
	r := eventstore.NewRegistry()
	must(t, eventstore.RegisterVersion[welcomed](r, "Welcomed", 2))
	must(t, r.Upcast("Welcomed", 1, func(json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{"name":`), nil }))
	must(t, r.Split("Bad", 1, []eventstore.SchemaRef{{Type: "Welcomed", Version: 2}}, func(json.RawMessage) ([]eventstore.VersionedEvent, error) {
		return []eventstore.VersionedEvent{{Type: "NoteTaken", Version: 1, Payload: json.RawMessage(`{}`)}}, nil
	}))
	must(t, eventstore.UpcastAs(r, "Typed", 1, func(struct{ N int }) (welcomed, error) { return welcomed{}, errors.New("cannot") }))
	must(t, r.Rename("Typed", 2, "Welcomed", 2))
	for _, ev := range []eventstore.VersionedEvent{
		{Type: "Welcomed", Version: 1, Payload: json.RawMessage(`{}`)},    // invalid JSON out
		{Type: "Bad", Version: 1, Payload: json.RawMessage(`{}`)},         // undeclared target
		{Type: "Typed", Version: 1, Payload: json.RawMessage(`{"N": 1}`)}, // the function fails
		{Type: "Typed", Version: 1, Payload: json.RawMessage(`[]`)},       // the old shape does not decode
	} {
		_, err := r.ToCurrent(nil, ev)
		var pe *eventstore.PayloadError
		if !errors.Is(err, eventstore.ErrMalformedPayload) || !errors.As(err, &pe) || pe.Op != "upcast" || pe.Type != ev.Type {
			t.Errorf("ToCurrent(%s@v%d) = %v, want a *PayloadError upcast of %s", ev.Type, ev.Version, err, ev.Type)
		}
	}
	var ue *eventstore.UnknownEventTypeError
	if _, err := r.ToCurrent(nil, eventstore.VersionedEvent{Type: "Nope", Version: 1}); !errors.As(err, &ue) {
		t.Errorf("ToCurrent of an unknown type = %v, want *UnknownEventTypeError", err)
	}
	// A type known only to upcasters, at a version none reads.
	var se *eventstore.SchemaVersionError
	if _, err := r.ToCurrent(nil, eventstore.VersionedEvent{Type: "Typed", Version: 3}); !errors.As(err, &se) || !se.TooNew() || se.Latest != 2 {
		t.Errorf("ToCurrent(Typed@v3) = %v, want a too-new *SchemaVersionError with Latest 2", err)
	}
}

func TestUpcasterRegistrationRefused(t *testing.T) {
	t.Parallel()
	noop := func(p json.RawMessage) (json.RawMessage, error) { return p, nil }
	split := func(json.RawMessage) ([]eventstore.VersionedEvent, error) { return nil, nil }
	for name, reg := range map[string]func(r *eventstore.Registry) error{
		"nil function":         func(r *eventstore.Registry) error { return r.Upcast("A", 1, nil) },
		"nil typed function":   func(r *eventstore.Registry) error { return eventstore.UpcastAs[welcomed, welcomed](r, "A", 1, nil) },
		"empty name":           func(r *eventstore.Registry) error { return r.Upcast("", 1, noop) },
		"version 0":            func(r *eventstore.Registry) error { return r.Upcast("A", 0, noop) },
		"twice":                func(r *eventstore.Registry) error { _ = r.Upcast("A", 1, noop); return r.Drop("A", 1) },
		"at the current":       func(r *eventstore.Registry) error { return r.Upcast("Current", 3, noop) },
		"past the current":     func(r *eventstore.Registry) error { return r.Upcast("Current", 4, noop) },
		"into a newer version": func(r *eventstore.Registry) error { return r.Rename("Old", 1, "Current", 4) },
		"rename to itself":     func(r *eventstore.Registry) error { return r.Rename("A", 1, "A", 2) },
		"rename to version 0":  func(r *eventstore.Registry) error { return r.Rename("A", 1, "B", 0) },
		"split into nothing":   func(r *eventstore.Registry) error { return r.Split("A", 1, nil, split) },
		"split target twice": func(r *eventstore.Registry) error {
			return r.Split("A", 1, []eventstore.SchemaRef{{Type: "B", Version: 1}, {Type: "B", Version: 1}}, split)
		},
		"split nil function": func(r *eventstore.Registry) error {
			return r.Split("A", 1, []eventstore.SchemaRef{{Type: "B", Version: 1}}, nil)
		},
		"split into empty name": func(r *eventstore.Registry) error {
			return r.Split("A", 1, []eventstore.SchemaRef{{Type: "", Version: 1}}, split)
		},
		"cycle": func(r *eventstore.Registry) error {
			if err := r.Rename("A", 1, "B", 1); err != nil {
				return err
			}
			return r.Rename("B", 1, "A", 1)
		},
		"long cycle": func(r *eventstore.Registry) error {
			_ = r.Upcast("A", 1, noop) // A1 -> A2
			_ = r.Rename("A", 2, "B", 1)
			return r.Rename("B", 1, "A", 1)
		},
		"register under an upcaster": func(r *eventstore.Registry) error {
			_ = r.Upcast("W", 2, noop)
			return eventstore.RegisterVersion[welcomed](r, "W", 2)
		},
	} {
		r := eventstore.NewRegistry()
		must(t, eventstore.RegisterVersion[paidV3](r, "Current", 3))
		err := reg(r)
		var ue *eventstore.UpcasterError
		if !errors.Is(err, eventstore.ErrInvalidUpcaster) || !errors.Is(err, eventstore.ErrInvalidArgument) || !errors.As(err, &ue) {
			t.Errorf("%s: %v, want an *UpcasterError", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	noop := func(p json.RawMessage) (json.RawMessage, error) { return p, nil }
	for name, c := range map[string]struct {
		setup func(r *eventstore.Registry) error
		want  string // "" for valid
	}{
		"full chain": {func(r *eventstore.Registry) error {
			return errors.Join(r.Upcast("Current", 1, noop), r.Upcast("Current", 2, noop))
		}, ""},
		"gap":           {func(r *eventstore.Registry) error { return r.Upcast("Current", 1, noop) }, "gap"},
		"no version 1":  {func(r *eventstore.Registry) error { return r.Upcast("Current", 2, noop) }, "version 1"},
		"leads nowhere": {func(r *eventstore.Registry) error { return r.Rename("Old", 1, "Ghost", 1) }, "neither"},
		"renamed into 2": {func(r *eventstore.Registry) error {
			return errors.Join(r.Rename("Old", 1, "Current", 2), r.Upcast("Current", 2, noop))
		}, ""},
		"drop": {func(r *eventstore.Registry) error {
			return errors.Join(r.Upcast("Current", 1, noop), r.Upcast("Current", 2, noop), r.Drop("X", 1))
		}, ""},
		"registered too late": {func(r *eventstore.Registry) error {
			// A rename into version 2 of a type then registered at 1.
			return errors.Join(r.Rename("Old", 1, "Late", 2), eventstore.Register[welcomed](r, "Late"), r.Upcast("Current", 1, noop), r.Upcast("Current", 2, noop))
		}, "newer than"},
	} {
		r := eventstore.NewRegistry()
		must(t, eventstore.RegisterVersion[paidV3](r, "Current", 3))
		if err := c.setup(r); err != nil {
			t.Fatalf("%s: setup: %v", name, err)
		}
		err := r.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", name, err)
		case c.want != "" && (!errors.Is(err, eventstore.ErrInvalidUpcaster) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: Validate = %v, want an *UpcasterError saying %q", name, err, c.want)
		}
	}
}

func TestAddFieldRenameField(t *testing.T) {
	t.Parallel()
	add := eventstore.AddField("currency", "EUR")
	for in, want := range map[string]string{
		`{"a": 1}`:                   `{"a":1,"currency":"EUR"}`,
		`{}`:                         `{"currency":"EUR"}`,
		` { }`:                       `{"currency":"EUR"}`,
		`{"currency": "CHF"}`:        `{"currency":"CHF"}`,
		`{"a": "currency"}`:          `{"a":"currency","currency":"EUR"}`,
		`{"n": {"currency": "CHF"}}`: `{"n":{"currency":"CHF"},"currency":"EUR"}`,
	} {
		out, err := add(json.RawMessage(in))
		if err != nil {
			t.Fatalf("AddField(%s): %v", in, err)
		}
		if !jsonEqual(t, out, []byte(want)) {
			t.Errorf("AddField(%s) = %s, want %s", in, out, want)
		}
	}
	if _, err := add(json.RawMessage(`[1]`)); err == nil {
		t.Error("AddField of an array: no error")
	}
	if _, err := eventstore.AddField("x", func() {})(json.RawMessage(`{}`)); err == nil {
		t.Error("AddField of a value that does not encode: no error")
	}
	ren := eventstore.RenameField("cents", "minor_units")
	if out, err := ren(json.RawMessage(`{"cents": 5, "a": true}`)); err != nil || !jsonEqual(t, out, []byte(`{"minor_units":5,"a":true}`)) {
		t.Errorf("RenameField = %s, %v", out, err)
	}
	if out, err := ren(json.RawMessage(`{"a": 1}`)); err != nil || string(out) != `{"a": 1}` {
		t.Errorf("RenameField without the key = %s, %v; want unchanged", out, err)
	}
	if _, err := ren(json.RawMessage(`{"cents": 1, "minor_units": 2}`)); err == nil {
		t.Error("RenameField onto an existing key: no error")
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("invalid JSON %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func ExampleUpcastAs() {
	// Version 1 of "OrderPaid" was {"order_id", "cents"}; version 2, the
	// current Go type, groups the amount with its currency.
	type paidV1 struct {
		OrderID string `json:"order_id"`
		Cents   int64  `json:"cents"`
	}
	type Money struct {
		Currency   string `json:"currency"`
		MinorUnits int64  `json:"minor_units"`
	}
	type OrderPaid struct {
		OrderID string `json:"order_id"`
		Amount  Money  `json:"amount"`
	}
	reg := eventstore.NewRegistry()
	eventstore.MustRegisterVersion[OrderPaid](reg, "OrderPaid", 2)
	if err := eventstore.UpcastAs(reg, "OrderPaid", 1, func(old paidV1) (OrderPaid, error) {
		return OrderPaid{OrderID: old.OrderID, Amount: Money{Currency: "EUR", MinorUnits: old.Cents}}, nil
	}); err != nil {
		panic(err)
	}
	if err := reg.Validate(); err != nil {
		panic(err)
	}
	// A row an older release wrote: no schema version (1).
	stored := eventstore.RawRecord{StreamID: "order-7", StreamVersion: 3, Type: "OrderPaid", Payload: json.RawMessage(`{"order_id": "7", "cents": 1250}`)}
	rec, err := stored.Decode(reg)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v (version %d, stored as version %d)\n", rec.Data, rec.SchemaVersion, rec.StoredSchemaVersion)
	// Output: {OrderID:7 Amount:{Currency:EUR MinorUnits:1250}} (version 2, stored as version 1)
}

// TestWriteAs: a type with WriteAs stores the older version (converted)
// and reads it back as the current one; what cannot read back is refused
// by Validate; misuse is refused at once.
func TestWriteAs(t *testing.T) {
	t.Parallel()
	r := paidRegistry(t)
	down := func(p json.RawMessage) (json.RawMessage, error) {
		var v paidV3
		if err := json.Unmarshal(p, &v); err != nil {
			return nil, err
		}
		return json.Marshal(paidV2{OrderID: v.OrderID, Cents: v.Amount.MinorUnits, Currency: v.Amount.Currency})
	}
	must(t, r.WriteAs("OrderPaid", eventstore.SchemaRef{Type: "OrderPaid", Version: 2}, down))
	must(t, r.Validate())
	v := paidV3{OrderID: "o", Amount: money{Currency: "CHF", MinorUnits: 7}}
	ev, err := r.EncodeEvent(v)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "OrderPaid" || ev.Version != 2 || !jsonEqual(t, ev.Payload, []byte(`{"order_id":"o","cents":7,"currency":"CHF"}`)) {
		t.Fatalf("EncodeEvent = %s@v%d %s, want version 2's shape", ev.Type, ev.Version, ev.Payload)
	}
	rec, err := eventstore.RawRecord{Type: ev.Type, SchemaVersion: ev.Version, Payload: ev.Payload}.Decode(r)
	if err != nil || rec.Data != v {
		t.Fatalf("reading what was written: %+v, %v; want %+v", rec.Data, err, v)
	}
	// EncodeAppend stores the older form and keeps the current one.
	enc, err := eventstore.EncodeAppend(t.Context(), r, "order-1", eventstore.Any, []eventstore.Event{{Data: v}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := enc[0]; e.SchemaVersion != 2 || e.Current.Version != 3 || e.Current.Type != "OrderPaid" || !jsonEqual(t, e.Current.Payload, mustJSON(t, v)) {
		t.Fatalf("EncodeAppend = %+v, want stored version 2 and current version 3", e)
	}
	failing := eventstore.NewRegistry()
	must(t, eventstore.RegisterVersion[paidV3](failing, "OrderPaid", 2))
	must(t, failing.Upcast("OrderPaid", 1, func(p json.RawMessage) (json.RawMessage, error) { return p, nil }))
	must(t, failing.WriteAs("OrderPaid", eventstore.SchemaRef{Type: "OrderPaid", Version: 1}, func(json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{`), nil }))
	if _, err := failing.EncodeEvent(v); !errors.Is(err, eventstore.ErrMalformedPayload) {
		t.Errorf("a downcaster returning invalid JSON: %v, want ErrMalformedPayload", err)
	}

	for name, c := range map[string]func(*eventstore.Registry) error{
		"unregistered": func(r *eventstore.Registry) error {
			return r.WriteAs("Nope", eventstore.SchemaRef{Type: "Nope", Version: 1}, nil)
		},
		"twice": func(r *eventstore.Registry) error {
			return r.WriteAs("OrderPaid", eventstore.SchemaRef{Type: "OrderPaid", Version: 1}, nil)
		},
		"not older": func(*eventstore.Registry) error {
			return paidRegistry(t).WriteAs("OrderPaid", eventstore.SchemaRef{Type: "OrderPaid", Version: 3}, nil)
		},
		"bad version": func(*eventstore.Registry) error {
			return paidRegistry(t).WriteAs("OrderPaid", eventstore.SchemaRef{Type: "OrderPaid"}, nil)
		},
	} {
		if err := c(r); !errors.Is(err, eventstore.ErrInvalidUpcaster) {
			t.Errorf("%s: %v, want ErrInvalidUpcaster", name, err)
		}
	}
	// A rename written under the old name reads back; a name no upcaster
	// reads does not, and Validate says so.
	renamed := eventstore.NewRegistry()
	must(t, eventstore.Register[welcomed](renamed, "Welcomed"))
	must(t, renamed.Rename("Greeted", 1, "Welcomed", 1))
	must(t, renamed.WriteAs("Welcomed", eventstore.SchemaRef{Type: "Greeted", Version: 1}, nil))
	must(t, renamed.Validate())
	if ev, err := renamed.EncodeEvent(welcomed{Name: "Ada"}); err != nil || ev.Type != "Greeted" || ev.Version != 1 {
		t.Errorf("EncodeEvent under the old name = %+v, %v", ev, err)
	}
	lost := eventstore.NewRegistry()
	must(t, eventstore.Register[welcomed](lost, "Welcomed"))
	must(t, lost.WriteAs("Welcomed", eventstore.SchemaRef{Type: "Greeted", Version: 1}, nil))
	if err := lost.Validate(); !errors.Is(err, eventstore.ErrInvalidUpcaster) || !strings.Contains(err.Error(), "read back") {
		t.Errorf("Validate of a WriteAs nothing reads back = %v, want an *UpcasterError", err)
	}
}
