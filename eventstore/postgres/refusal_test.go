package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	neturl "net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/eventstore/storetest"
	"github.com/esox-go/esox/internal/pgtest"
)

// jsonbAccepts reports whether PostgreSQL casts doc, sent as text, to jsonb,
// and the SQLSTATE when it does not.
func jsonbAccepts(t testing.TB, db *sqlx.DB, doc []byte) (bool, string) {
	t.Helper()
	var ok bool
	err := db.QueryRowContext(t.Context(), `SELECT $1::text::jsonb IS NOT NULL`, string(doc)).Scan(&ok)
	if err == nil {
		return true, ""
	}
	code := postgres.SQLState(err)
	if code == "" {
		t.Fatalf("casting %.80q to jsonb: %v", doc, err)
	}
	return false, code
}

// TestCheckJSONBAgreesWithPostgres sends every payload the stores refuse
// (storetest.Refusals) and every near miss they accept (storetest.Storable),
// plus more edge cases, straight to PostgreSQL: eventstore.CheckJSONB refuses
// exactly what jsonb refuses. storetest.LargeRefusals, a string over jsonb's
// 2^28-1 bytes, is too large to send here.
func TestCheckJSONBAgreesWithPostgres(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	docs := [][]byte{
		[]byte(`{"a":"\uDBFF\uDFFF"}`), []byte(`{"a":"\uD800\uDC00"}`), []byte(`["\u0001"]`),
		[]byte(`[9999e131068]`), []byte(`[99999e131067]`), []byte(`[10000e131068]`), []byte(`[0.0001e131075]`),
		[]byte(`[0.00001e131076]`), []byte(`[0e-1073741822]`), []byte(`[1.5e-16383]`), []byte(`[0.5e-16383]`),
		[]byte(`[0e99999999999999999999]`), []byte(`[1e+131071]`), []byte(`[-0.0]`), []byte(`[123456789012345678901234567890]`),
		[]byte("[\"\u2028\u2029\"]"), []byte(`{"a":"\\\u0041"}`), []byte(`{"a":"\\\\u0000"}`),
	}
	for _, r := range storetest.Refusals() {
		if r.Payload != nil {
			docs = append(docs, r.Payload)
		}
	}
	docs = append(docs, storetest.Storable()...)
	refused := 0
	for _, doc := range docs {
		if !json.Valid(doc) {
			t.Fatalf("test case %.80q is not valid JSON to encoding/json", doc)
		}
		err := eventstore.CheckJSONB(doc)
		ok, code := jsonbAccepts(t, db, doc)
		if ok != (err == nil) {
			t.Errorf("%.80q: CheckJSONB says %v, PostgreSQL accepts: %v (SQLSTATE %s)", doc, err, ok, code)
		}
		if !ok {
			refused++
		}
	}
	if refused < 20 {
		t.Fatalf("only %d cases refused: the table lost its refusals", refused)
	}
}

// TestRefusalsPastTheChecksAreTyped: data that passes the checks before
// sending but that PostgreSQL still refuses comes back typed, with nothing
// written. A server whose max_stack_depth is small refuses deeply nested
// JSON (54001) that encoding/json and eventstore.CheckJSONB accept: the
// append's error is a *PayloadError, the snapshot's an
// *InvalidArgumentError, for the plain and the hooks path and AppendTx.
func TestRefusalsPastTheChecksAreTyped(t *testing.T) {
	t.Parallel()
	url := pgtest.DatabaseURL()
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	db, err := sqlx.Open("postgres", url+sep+"options="+neturl.QueryEscape("-c max_stack_depth=100kB"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	deep := []byte(strings.Repeat("[", 5000) + strings.Repeat("]", 5000))
	if !json.Valid(deep) || eventstore.CheckJSONB(deep) != nil {
		t.Fatal("the nested payload must pass the checks before sending")
	}
	hook := func(context.Context, postgres.Tx, []eventstore.Record) error { return nil }
	for _, cfg := range []postgres.Config{{}, {AppendHooks: []postgres.AppendHook{hook}}} {
		b := setupOn(t, db, cfg)
		reg := b.store.Registry()
		eventstore.MustRegister[storetest.RawJSON](reg, storetest.RawJSONType)
		ctx := testCtx(t)
		_, err := b.store.Append(ctx, "order-deep", eventstore.Any, []eventstore.Event{placed("1", 1), {Data: storetest.RawJSON(deep)}})
		var pe *eventstore.PayloadError
		if !errors.As(err, &pe) || !errors.Is(err, eventstore.ErrMalformedPayload) || pe.Type != "order_placed" || !strings.Contains(err.Error(), "54001") {
			t.Fatalf("Append of a payload nested too deep for the server (hooks: %d): %v, want a *PayloadError with SQLSTATE 54001", len(cfg.AppendHooks), err)
		}
		tx, err := b.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.store.AppendTx(ctx, tx, "order-deep", eventstore.Any, []eventstore.Event{{Data: storetest.RawJSON(deep)}})
		_ = tx.Rollback()
		if !errors.As(err, &pe) {
			t.Fatalf("AppendTx of a payload nested too deep: %v, want a *PayloadError", err)
		}
		err = b.store.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: "order-deep", Version: 1, Type: "t", Payload: deep})
		var ie *eventstore.InvalidArgumentError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "54001") {
			t.Fatalf("SaveSnapshot of a payload nested too deep: %v, want an *InvalidArgumentError with SQLSTATE 54001", err)
		}
		if n := b.countRows(t, "order-deep"); n != 0 {
			t.Fatalf("refused appends wrote %d rows", n)
		}
		if _, err := b.store.LoadSnapshot(ctx, "order-deep"); !errors.Is(err, eventstore.ErrSnapshotNotFound) {
			t.Fatalf("LoadSnapshot after a refused save: %v", err)
		}
	}
}

// FuzzAppend appends one event of arbitrary payload bytes (a raw JSON
// event type), metadata and type name (registered on the fly) to the real
// database. Whatever the input: Register and Append either succeed or
// return an error matching one of the documented sentinels, never an
// untyped one; a failed append writes nothing; a successful one reads back
// the same JSON value under the same type name; and the checks before
// sending refuse exactly what PostgreSQL's jsonb refuses. The seeds, every
// case of storetest.Refusals and storetest.Storable among them, run in
// make test.
func FuzzAppend(f *testing.F) {
	for _, r := range storetest.Refusals() {
		payload := r.Payload
		if payload == nil {
			payload = []byte(`{"ok":true}`)
		}
		f.Add(payload, r.Metadata.Actor, "v", "fuzz.type")
		for k, v := range r.Metadata.Extra {
			f.Add(payload, k, v, "fuzz.type")
		}
	}
	for _, p := range storetest.Storable() {
		f.Add(p, "k", "v", "fuzz.type")
	}
	f.Add([]byte(`{"a":1}`), "k\x00", "v", "type\x00name")
	f.Add([]byte(`{"a":1}`), "k", "\xff", "type\xffname")
	f.Add([]byte(`{"a":1}`), "", "", "")
	f.Add([]byte(`not json`), "k", "v", "fuzz.type")
	f.Add([]byte(`"scalar"`), "k", "v", "fuzz.type")
	f.Add([]byte(`[1,2,{"b":null,"c":[true,false,"\u00e9"]}]`), "correlation_id", "c-1", "fuzz ☕ type")

	db := pgtest.Open(f)
	schema := pgtest.Schema(f, db)
	first, err := postgres.New(db, eventstore.NewRegistry(), postgres.Config{Schema: schema})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := first.Migrate(f.Context()); err != nil {
		f.Fatal(err)
	}
	_ = first.Close()
	sentinels := []error{eventstore.ErrMalformedPayload, eventstore.ErrInvalidArgument, eventstore.ErrUnknownEventType, eventstore.ErrEventTooLarge}

	f.Fuzz(func(t *testing.T, payload []byte, key, value, typeName string) {
		ctx := t.Context()
		reg := eventstore.NewRegistry()
		if err := eventstore.Register[storetest.RawJSON](reg, typeName); err != nil {
			if !errors.Is(err, eventstore.ErrInvalidArgument) {
				t.Fatalf("Register(%q): untyped error %v", typeName, err)
			}
			if typeName != "" && utf8.ValidString(typeName) && !strings.ContainsRune(typeName, 0) {
				t.Fatalf("Register(%q) refused a name PostgreSQL can store: %v", typeName, err)
			}
			return
		}
		s, err := postgres.New(db, reg, postgres.Config{Schema: schema, MaxEventSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stream := "fuzz-" + uuid.NewString()
		md := eventstore.Metadata{Extra: map[string]string{key: value}}
		res, err := s.Append(ctx, stream, eventstore.NoStream, []eventstore.Event{{Data: storetest.RawJSON(payload), Metadata: md}})
		var n int
		if qerr := db.GetContext(ctx, &n, `SELECT count(*) FROM `+s.QualifiedEventsTable()+` WHERE stream_id = $1`, stream); qerr != nil {
			t.Fatal(qerr)
		}
		if err != nil {
			typed := false
			for _, s := range sentinels {
				typed = typed || errors.Is(err, s)
			}
			if !typed {
				t.Fatalf("Append(%.80q, metadata %q=%q, type %q): untyped error %v", payload, key, value, typeName, err)
			}
			if n != 0 {
				t.Fatalf("Append(%.80q) failed with %v but wrote %d rows", payload, err, n)
			}
			if errors.Is(err, eventstore.ErrMalformedPayload) && json.Valid(payload) && len(payload) < 1<<20 {
				if ok, _ := jsonbAccepts(t, db, payload); ok && (payload[0] == '{' || payload[0] == '[') {
					t.Fatalf("Append refused %.80q (%v), which PostgreSQL's jsonb accepts", payload, err)
				}
			}
			return
		}
		if n != 1 || len(res.EventIDs) != 1 {
			t.Fatalf("Append(%.80q) succeeded with %+v but the stream has %d rows", payload, res, n)
		}
		recs, err := s.LookupEvents(ctx, res.EventIDs)
		if err != nil || len(recs) != 1 {
			t.Fatalf("LookupEvents after Append(%.80q): %v, %v", payload, recs, err)
		}
		if recs[0].Type != typeName || recs[0].StreamID != stream || recs[0].StreamVersion != 1 {
			t.Fatalf("stored event %+v, want type %q in %s at version 1", recs[0], typeName, stream)
		}
		var same bool
		if err := db.GetContext(ctx, &same, `SELECT payload = $2::text::jsonb FROM `+s.QualifiedEventsTable()+` WHERE event_id = $1`, res.EventIDs[0], string(payload)); err != nil || !same {
			t.Fatalf("stored payload of %.80q differs from the JSON appended (%v)", payload, err)
		}
	})
}
