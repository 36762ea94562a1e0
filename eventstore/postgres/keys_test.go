package postgres_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
)

// Patient is an event with personal data.
type Patient struct {
	PatientID string `json:"patient_id" esox:"subject"`
	Name      string `json:"name" esox:"personal"`
	Ward      string `json:"ward"`
}

// personalSetup returns a store whose registry encrypts Patient events
// with a Shredder over a PostgreSQL KeyStore in the same schema.
func personalSetup(t *testing.T, driver string, kek eventstore.KeyEncrypter) (*bundle, *postgres.KeyStore, *eventstore.Shredder) {
	t.Helper()
	db := pgtest.OpenDriver(t, driver)
	reg := testRegistry()
	eventstore.MustRegister[Patient](reg, "patient_admitted")
	schema := pgtest.Schema(t, db)
	ks, err := postgres.NewKeyStore(db, postgres.KeyStoreConfig{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if _, err := ks.Migrate(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	sh, err := eventstore.NewShredder(ks, kek, eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg.SetShredder(sh)
	s := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema})
	return &bundle{db: db, store: s, schema: schema}, ks, sh
}

func localKEK(t *testing.T, b byte, retired ...[]byte) *eventstore.LocalKeyEncrypter {
	t.Helper()
	k, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{b}, 32), retired...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKeyStore: on both drivers, the keys are stored wrapped, one live key
// per subject, forgotten ones kept as tombstones; Stats counts them.
func TestKeyStore(t *testing.T) {
	t.Parallel()
	for _, driver := range pgtest.Drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			b, ks, sh := personalSetup(t, driver, localKEK(t, 1))
			ctx := testCtx(t)
			for _, id := range []string{"p-1", "p-2", "p-1"} {
				if _, err := b.store.Append(ctx, "patient-"+id, eventstore.Any, []eventstore.Event{{Data: Patient{PatientID: id, Name: "Name of " + id, Ward: "A"}}}); err != nil {
					t.Fatal(err)
				}
			}
			var n int
			if err := b.db.GetContext(ctx, &n, `SELECT count(*) FROM `+b.store.QualifiedEventsTable()+` WHERE payload::text LIKE '%Name of%'`); err != nil || n != 0 {
				t.Fatalf("%d events hold a name in the clear (%v)", n, err)
			}
			st, err := ks.Stats(ctx)
			if err != nil || st.Live != 2 || st.Forgotten != 0 {
				t.Fatalf("Stats = %+v, %v; want 2 live keys", st, err)
			}
			if _, err := sh.Forget(ctx, "p-1"); err != nil {
				t.Fatal(err)
			}
			st, err = ks.Stats(ctx)
			if err != nil || st.Live != 1 || st.Forgotten != 1 || st.LastForgotten.IsZero() {
				t.Fatalf("Stats after Forget = %+v, %v", st, err)
			}
			recs := b.readStream(t, "patient-p-1", 0)
			if len(recs) != 2 || recs[0].Data != (Patient{PatientID: "p-1", Ward: "A"}) || !slices.Equal(recs[1].Redacted, []string{"name"}) {
				t.Fatalf("after Forget: %+v", recs)
			}
			p2 := b.readStream(t, "patient-p-2", 0)
			if p2[0].Data != (Patient{PatientID: "p-2", Name: "Name of p-2", Ward: "A"}) {
				t.Fatalf("another subject: %+v", p2)
			}
			// LookupEvents decrypts too.
			got, err := b.store.LookupEvents(ctx, []uuid.UUID{p2[0].ID, recs[0].ID})
			if err != nil || len(got) != 2 || got[0].Data != p2[0].Data || got[1].Data != recs[0].Data || !slices.Equal(got[1].Redacted, []string{"name"}) {
				t.Fatalf("LookupEvents = %+v, %v", got, err)
			}
		})
	}
}

// TestMovedCiphertextRefused: an encrypted field copied, through raw SQL,
// into another event of the same subject does not decrypt there (the
// ciphertext is bound to its event's ID): the read fails with a
// PayloadError, and Verify reports the change.
func TestMovedCiphertextRefused(t *testing.T) {
	t.Parallel()
	b, _, _ := personalSetup(t, "postgres", localKEK(t, 1))
	ctx := testCtx(t)
	for _, name := range []string{"Alice", "Mallory"} {
		if _, err := b.store.Append(ctx, "patient-p", eventstore.Any, []eventstore.Event{{Data: Patient{PatientID: "p", Name: name, Ward: "B"}}}); err != nil {
			t.Fatal(err)
		}
	}
	b.exec(t, `UPDATE {events} SET payload = jsonb_set(payload, '{name}', (SELECT payload->'name' FROM {events} WHERE stream_id = 'patient-p' AND stream_version = 1))
WHERE stream_id = 'patient-p' AND stream_version = 2`)
	var (
		err    error
		before []eventstore.Record
	)
	for r, e := range b.store.ReadStream(ctx, "patient-p", 0) {
		if e != nil {
			err = e
		} else {
			before = append(before, r)
		}
	}
	if !errors.Is(err, eventstore.ErrMalformedPayload) {
		t.Fatalf("ReadStream of a moved ciphertext = %v, want ErrMalformedPayload", err)
	}
	// The page fails to decrypt as a whole; the record before the moved
	// ciphertext is still yielded, decrypted, before the error.
	if len(before) != 1 || before[0].Data.(Patient).Name != "Alice" {
		t.Fatalf("ReadStream yielded %+v before the error, want version 1 (Alice)", before)
	}
	if res := b.verify(t, nil); res.OK() || res.Breaks[0].Kind != eventstore.BreakChanged || res.Breaks[0].StreamVersion != 2 {
		t.Fatalf("Verify = %+v, want version 2 changed", res)
	}
}

// TestRewrapRotatesKEK: after a rotation (the new KEK current, the old one
// retired) Rewrap re-wraps every live key, so that the new KEK alone reads
// the events; forgotten keys stay forgotten.
func TestRewrapRotatesKEK(t *testing.T) {
	t.Parallel()
	oldKEK := bytes.Repeat([]byte{1}, 32)
	b, ks, sh := personalSetup(t, "pgx", localKEK(t, 1))
	ctx := testCtx(t)
	for _, id := range []string{"p-1", "p-2", "p-3"} {
		if _, err := b.store.Append(ctx, "patient-"+id, eventstore.NoStream, []eventstore.Event{{Data: Patient{PatientID: id, Name: "N " + id}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sh.Forget(ctx, "p-3"); err != nil {
		t.Fatal(err)
	}
	n, err := ks.Rewrap(ctx, localKEK(t, 2, oldKEK))
	if err != nil || n != 2 {
		t.Fatalf("Rewrap = %d, %v; want the 2 live keys", n, err)
	}
	// A reader with only the new KEK.
	reg := testRegistry()
	eventstore.MustRegister[Patient](reg, "patient_admitted")
	newOnly, err := eventstore.NewShredder(ks, localKEK(t, 2), eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg.SetShredder(newOnly)
	s, err := postgres.New(b.db, reg, postgres.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for _, id := range []string{"p-1", "p-2", "p-3"} {
		for r, err := range s.ReadStream(ctx, "patient-"+id, 0) {
			if err != nil {
				t.Fatalf("%s with the new KEK only: %v", id, err)
			}
			want := Patient{PatientID: id, Name: "N " + id}
			if id == "p-3" {
				want.Name = ""
			}
			if r.Data != want {
				t.Errorf("%s: %+v, want %+v", id, r.Data, want)
			}
		}
	}
	if _, err := ks.Rewrap(ctx, nil); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("Rewrap(nil) = %v", err)
	}
}

// TestReadStreamYieldsRecordsBeforeAKeyFailure: ReadStream decrypts a page
// at a time; when the page's key lookup fails (here, one subject's key is
// wrapped under a KEK this reader does not hold), it yields the records
// before the failing one, decrypted, and then the error.
func TestReadStreamYieldsRecordsBeforeAKeyFailure(t *testing.T) {
	t.Parallel()
	kek1, kek2 := localKEK(t, 1), localKEK(t, 2, bytes.Repeat([]byte{1}, 32))
	b, ks, _ := personalSetup(t, "postgres", kek1)
	ctx := testCtx(t)
	if _, err := b.store.Append(ctx, "ward-x", eventstore.NoStream, []eventstore.Event{{Data: Patient{PatientID: "a", Name: "Alice"}}}); err != nil {
		t.Fatal(err)
	}
	// A writer whose current KEK is kek2 wraps b's key under it.
	reg := testRegistry()
	eventstore.MustRegister[Patient](reg, "patient_admitted")
	sh2, err := eventstore.NewShredder(ks, kek2, eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg.SetShredder(sh2)
	w, err := postgres.New(b.db, reg, postgres.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	if _, err := w.Append(ctx, "ward-x", eventstore.Exact(1), []eventstore.Event{{Data: Patient{PatientID: "b", Name: "Bob"}}}); err != nil {
		t.Fatal(err)
	}
	var (
		got  []eventstore.Record
		last error
	)
	for r, err := range b.store.ReadStream(ctx, "ward-x", 0) { // kek1 only
		if err != nil {
			last = err
			continue
		}
		got = append(got, r)
	}
	if last == nil || len(got) != 1 || got[0].Data.(Patient).Name != "Alice" {
		t.Fatalf("ReadStream with kek1 only: %+v, then %v; want Alice's record, then the key error", got, last)
	}
}
