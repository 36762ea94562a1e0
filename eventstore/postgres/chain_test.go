package postgres_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// chainStream appends n events to streamID, one append per event, and
// returns the last result.
func (b *bundle) chainStream(t *testing.T, streamID string, n int) eventstore.AppendResult {
	t.Helper()
	var res eventstore.AppendResult
	for i := range n {
		var err error
		res, err = b.store.Append(testCtx(t), streamID, eventstore.Any, []eventstore.Event{{Data: OrderPlaced{OrderID: streamID, Amount: i + 1}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// exec runs a tampering statement on the events table, {events} standing
// for its name.
func (b *bundle) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	q := strings.ReplaceAll(query, "{events}", b.store.QualifiedEventsTable())
	q = strings.ReplaceAll(q, "{schema}", postgres.QuoteIdentifier(b.schema))
	if _, err := b.db.ExecContext(testCtx(t), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (b *bundle) verify(t *testing.T, opts *eventstore.VerifyOpts) eventstore.VerifyResult {
	t.Helper()
	res, err := b.store.Verify(testCtx(t), opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

// TestChainDigestsMatchGo: the digests the append statement computes are
// eventstore.ChainDigest over the stored columns, payload and metadata as
// jsonb renders them, each chained to the one before in its stream: for
// single appends (the statement for one event, which computes the digest
// inline: a stream's first and one chained to a digest), a multi-event
// append (the VALUES statement, through the esox_chain aggregate) and a
// 70-event one (the unnest statement). And the digests the store computes
// itself when it knows the stream's last one (Config.ChainHeads, the
// "client" run) are the same bytes: the same appends, the statements that
// received the digests counted.
func TestChainDigestsMatchGo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		heads  int
		client int // appends whose digests the store computes
	}{
		{"server", -1, 0}, // Config.ChainHeads < 0: every digest computed by the statement
		{"client", 0, 3},  // all but the 70-event append, which takes the array statement
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, stmts := pgtest.OpenCounting(t)
			b := setupOn(t, db, postgres.Config{ChainHeads: tc.heads})
			mark := stmts.Len()
			ctx := eventstore.WithReason(testCtx(t), "ticket <7> & \"quotes\" é\n\u2028")
			if _, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: OrderPlaced{OrderID: "1", Amount: 3}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.Append(ctx, "order-1", eventstore.Exact(1), items(3)); err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.Append(ctx, "order-1", eventstore.Exact(4), items(70)); err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.Append(ctx, "order-1", eventstore.Exact(74), items(1)); err != nil { // single, chained to a digest
				t.Fatal(err)
			}
			client := 0
			for _, q := range stmts.Since(mark) {
				if strings.Contains(q, "IS NOT DISTINCT FROM") {
					client++
				}
			}
			if client != tc.client {
				t.Errorf("%d appends sent the digests, want %d", client, tc.client)
			}
			checkDigests(t, b, 75)
		})
	}
}

// checkDigests recomputes every digest of b's events table in Go, in
// stream order, from the stored columns, and runs Verify.
func checkDigests(t *testing.T, b *bundle, events int) {
	t.Helper()
	ctx := testCtx(t)
	rows, err := b.db.QueryContext(ctx, `SELECT event_id, stream_id, stream_version, event_type, schema_version, payload::text, metadata::text, digest
FROM `+b.store.QualifiedEventsTable()+` ORDER BY stream_id, stream_version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var (
		prev       []byte
		lastStream string
	)
	n := 0
	for rows.Next() {
		var (
			e      eventstore.ChainEvent
			id     string
			digest []byte
		)
		if err := rows.Scan(&id, &e.StreamID, &e.StreamVersion, &e.Type, &e.SchemaVersion, &e.Payload, &e.Metadata, &digest); err != nil {
			t.Fatal(err)
		}
		if e.StreamID != lastStream {
			prev, lastStream = nil, e.StreamID
		}
		e.ID = uuid.MustParse(id)
		want := eventstore.ChainDigest(prev, e)
		if !bytes.Equal(digest, want) {
			t.Fatalf("%s@%d: digest %x, want %x (Go's ChainDigest over %s / %s)", e.StreamID, e.StreamVersion, digest, want, e.Payload, e.Metadata)
		}
		prev = digest
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != events {
		t.Fatalf("%d events, want %d", n, events)
	}
	if res := b.verify(t, nil); !res.OK() || res.Events != int64(events) || res.Unchained != 0 {
		t.Fatalf("Verify = %+v, want %d events, OK", res, events)
	}
}

// TestAppendAfterStaleHead: a store remembers the last digest of the
// streams it appended to (Config.ChainHeads) and sends its next append's
// digests with the check that they chain after it. When the stream's last
// event changed under it at the same version (here deleted and written
// again through another store, as a restore might), the check refuses the
// statement and the append goes through with the digests computed by the
// server, chained after the digest stored: no conflict, and the chain
// verifies.
func TestAppendAfterStaleHead(t *testing.T) {
	t.Parallel()
	db, stmts := pgtest.OpenCounting(t)
	b := setupOn(t, db, postgres.Config{})
	ctx := testCtx(t)
	other, err := postgres.New(b.db, testRegistry(), postgres.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	if _, err := b.store.Append(ctx, "order-s", eventstore.NoStream, []eventstore.Event{placed("1", 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.ExecContext(ctx, `DELETE FROM `+b.store.QualifiedEventsTable()+` WHERE stream_id = 'order-s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Append(ctx, "order-s", eventstore.NoStream, []eventstore.Event{placed("1", 2)}); err != nil {
		t.Fatal(err)
	}
	mark := stmts.Len()
	res, err := b.store.Append(ctx, "order-s", eventstore.Exact(1), items(2))
	if err != nil {
		t.Fatalf("append after the head changed: %v", err)
	}
	if res.FirstVersion != 2 || res.LastVersion != 3 {
		t.Fatalf("append at versions %d–%d, want 2–3", res.FirstVersion, res.LastVersion)
	}
	var checked, folded int
	for _, q := range stmts.Since(mark) {
		switch {
		case strings.Contains(q, "IS NOT DISTINCT FROM"):
			checked++
		case strings.Contains(q, "INSERT INTO") && strings.Contains(q, "esox_chain("):
			folded++
		}
	}
	if checked != 1 || folded != 1 {
		t.Errorf("sent %d statements with digests and %d computing them, want 1 and 1", checked, folded)
	}
	checkDigests(t, b, 3)
	// The server's statement returned the new head: the next append sends
	// its digests again.
	mark = stmts.Len()
	if _, err := b.store.Append(ctx, "order-s", eventstore.Exact(3), items(1)); err != nil {
		t.Fatal(err)
	}
	checked = 0
	for _, q := range stmts.Since(mark) {
		if strings.Contains(q, "IS NOT DISTINCT FROM") {
			checked++
		}
	}
	if checked != 1 {
		t.Errorf("the append after sent %d statements with digests, want 1", checked)
	}
	checkDigests(t, b, 4)
}

// TestVerifyDetectsTampering tampers with a stream through raw SQL, one
// kind of tampering per subtest, and checks that Verify reports the first
// broken link, of the right kind, while the untouched stream beside it
// still verifies.
func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	const stream = "order-t"
	for _, tc := range []struct {
		name    string
		tamper  string
		args    []any
		version int64
		kind    eventstore.BreakKind
	}{
		{"PayloadChanged", `UPDATE {events} SET payload = jsonb_set(payload, '{amount}', '999') WHERE stream_id = $1 AND stream_version = 3`,
			nil, 3, eventstore.BreakChanged},
		{"MetadataChanged", `UPDATE {events} SET metadata = metadata || '{"actor": "mallory"}' WHERE stream_id = $1 AND stream_version = 3`,
			nil, 3, eventstore.BreakChanged},
		{"LastEventChanged", `UPDATE {events} SET payload = jsonb_set(payload, '{amount}', '999') WHERE stream_id = $1 AND stream_version = 5`,
			nil, 5, eventstore.BreakChanged},
		{"TypeChanged", `UPDATE {events} SET event_type = 'item_added' WHERE stream_id = $1 AND stream_version = 2`,
			nil, 2, eventstore.BreakChanged},
		{"Deleted", `DELETE FROM {events} WHERE stream_id = $1 AND stream_version = 3`,
			nil, 3, eventstore.BreakMissing},
		{"FirstDeleted", `DELETE FROM {events} WHERE stream_id = $1 AND stream_version = 1`,
			nil, 1, eventstore.BreakMissing},
		{"DeletedAndRenumbered", `DELETE FROM {events} WHERE stream_id = $1 AND stream_version = 3;
UPDATE {events} SET stream_version = stream_version + 1000 WHERE stream_id = $1 AND stream_version > 3;
UPDATE {events} SET stream_version = stream_version - 1001 WHERE stream_id = $1 AND stream_version > 1000`,
			nil, 3, eventstore.BreakMissing},
		{"Inserted", `UPDATE {events} SET stream_version = stream_version + 1000 WHERE stream_id = $1 AND stream_version >= 3;
UPDATE {events} SET stream_version = stream_version - 999 WHERE stream_id = $1 AND stream_version > 1000;
INSERT INTO {events} (event_id, stream_id, stream_version, event_type, payload, digest)
VALUES (gen_random_uuid(), $1, 3, 'order_placed', '{"order_id": "forged", "amount": 1}', sha256('x'))`,
			nil, 3, eventstore.BreakInserted},
		{"InsertedWithItsDigest", `UPDATE {events} SET stream_version = stream_version + 1000 WHERE stream_id = $1 AND stream_version >= 3;
UPDATE {events} SET stream_version = stream_version - 999 WHERE stream_id = $1 AND stream_version > 1000;
INSERT INTO {events} (event_id, stream_id, stream_version, event_type, payload, digest)
SELECT id, $1, 3, 'order_placed', '{"order_id": "forged", "amount": 1}',
	{schema}.esox_chain_step(NULL, (SELECT digest FROM {events} WHERE stream_id = $1 AND stream_version = 2),
		id, $1, 3, 'order_placed', 1, '{"order_id": "forged", "amount": 1}', '{}')
FROM gen_random_uuid() AS id`,
			nil, 3, eventstore.BreakInserted},
		{"Swapped", `UPDATE {events} SET stream_version = 1003 WHERE stream_id = $1 AND stream_version = 3;
UPDATE {events} SET stream_version = 3 WHERE stream_id = $1 AND stream_version = 4;
UPDATE {events} SET stream_version = 4 WHERE stream_id = $1 AND stream_version = 1003`,
			nil, 3, eventstore.BreakReordered},
		{"DigestRemoved", `UPDATE {events} SET digest = NULL WHERE stream_id = $1 AND stream_version = 3`,
			nil, 3, eventstore.BreakUnchained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, postgres.Config{})
			b.chainStream(t, stream, 5)
			b.chainStream(t, "order-untouched", 5)
			if res := b.verify(t, nil); !res.OK() {
				t.Fatalf("before tampering: %+v", res)
			}
			for _, stmt := range strings.Split(tc.tamper, ";\n") {
				b.exec(t, stmt, append([]any{stream}, tc.args...)...)
			}
			res := b.verify(t, nil)
			if res.OK() || res.BrokenStreams != 1 || len(res.Breaks) != 1 {
				t.Fatalf("Verify after tampering = %+v, want one broken stream", res)
			}
			br := res.Breaks[0]
			if br.StreamID != stream || br.StreamVersion != tc.version || br.Kind != tc.kind {
				t.Fatalf("break = %s, want stream %s version %d %s", br, stream, tc.version, tc.kind)
			}
			if err := res.Err(); !errors.Is(err, eventstore.ErrChainBroken) {
				t.Errorf("Err() = %v, want ErrChainBroken", err)
			}
			// One stream only: the same break.
			one := b.verify(t, &eventstore.VerifyOpts{StreamID: stream, BatchSize: 2})
			if one.OK() || one.Breaks[0] != br {
				t.Errorf("Verify(StreamID) = %+v, want the same break %s", one, br)
			}
			if other := b.verify(t, &eventstore.VerifyOpts{StreamID: "order-untouched"}); !other.OK() || other.Events != 5 {
				t.Errorf("the untouched stream: %+v", other)
			}
		})
	}
}

// sealAfter waits until the feed's head is at or past p (an open
// transaction of another test can hold it back) and seals.
func (b *bundle) sealAfter(t *testing.T, p eventstore.Position) eventstore.Seal {
	t.Helper()
	testwait.Until(t, "the feed's head to reach "+p.String(), func() bool {
		head, err := b.store.Head(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		return !head.Less(p)
	})
	seal, err := b.store.Seal(testCtx(t))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return seal
}

// TestSealDetectsTruncationAndRewrites: a chain alone cannot tell that a
// stream's last events were deleted, nor that its whole history was
// rewritten with digests recomputed; checked against a seal exported
// before, both are found. Events appended after the seal change nothing.
func TestSealDetectsTruncationAndRewrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		tamper []string
		detail string
	}{
		{"TailTruncated", []string{`DELETE FROM {events} WHERE stream_id = 'order-s' AND stream_version >= 4`}, "events were removed"},
		{"StreamDeleted", []string{`DELETE FROM {events} WHERE stream_id = 'order-s'`}, "events were removed"},
		{"ChainRewritten", append([]string{
			`UPDATE {events} SET payload = jsonb_set(payload, '{amount}', '999') WHERE stream_id = 'order-s' AND stream_version = 2`,
		}, recomputeDigests("order-s", 2, 6)...), "rewritten"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, postgres.Config{})
			b.chainStream(t, "order-s", 5)
			last := b.chainStream(t, "order-z", 2)
			seal := b.sealAfter(t, last.LastPosition)
			if seal.Streams != 2 || seal.Events != 7 || seal.ID == 0 || seal.SealedAt.IsZero() {
				t.Fatalf("Seal = %+v, want 2 streams, 7 events, recorded", seal)
			}
			exported, err := seal.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			// Later appends are after the seal's position: still a match.
			b.chainStream(t, "order-s", 1)
			b.chainStream(t, "order-new", 1)
			back, err := eventstore.ParseSeal(exported)
			if err != nil {
				t.Fatalf("ParseSeal(%s): %v", exported, err)
			}
			if r, err := b.store.VerifySeal(testCtx(t), back); err != nil || !r.OK() {
				t.Fatalf("VerifySeal before tampering = %+v, %v", r, err)
			}
			for _, stmt := range tc.tamper {
				b.exec(t, stmt)
			}
			if tc.name != "StreamDeleted" {
				// The chain alone finds nothing wrong.
				if res := b.verify(t, nil); !res.OK() {
					t.Fatalf("Verify = %+v: the tampering was meant to keep every chain valid", res)
				}
			}
			r, err := b.store.VerifySeal(testCtx(t), back)
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() || !strings.Contains(r.Detail, tc.detail) || !errors.Is(r.Err(), eventstore.ErrChainBroken) {
				t.Fatalf("VerifySeal after tampering = %+v, want a mismatch saying %q", r, tc.detail)
			}
		})
	}
}

// recomputeDigests returns the statements that recompute the digests of
// stream's versions from to to, in order, as a superuser covering their
// tracks would.
func recomputeDigests(stream string, from, to int) []string {
	var out []string
	for v := from; v <= to; v++ {
		out = append(out, fmt.Sprintf(`UPDATE {events} e SET digest = {schema}.esox_chain_step(NULL,
	(SELECT digest FROM {events} WHERE stream_id = e.stream_id AND stream_version = %d),
	e.event_id, e.stream_id, e.stream_version, e.event_type, e.schema_version, e.payload, e.metadata)
WHERE stream_id = '%s' AND stream_version = %d`, v-1, stream, v))
	}
	return out
}

// TestSealsRecorded: every seal is recorded, newest first, and reads back
// as exported; an empty store seals at the zero position.
func TestSealsRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	empty, err := b.store.Seal(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if empty.Streams != 0 || empty.Events != 0 || !empty.Position.IsZero() || len(empty.Digest) != eventstore.DigestSize {
		t.Fatalf("seal of an empty store = %+v", empty)
	}
	res := b.chainStream(t, "order-1", 2)
	second := b.sealAfter(t, res.LastPosition)
	seals, err := b.store.Seals(testCtx(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(seals) != 2 || seals[0].ID != second.ID || seals[1].ID != empty.ID || !bytes.Equal(seals[0].Digest, second.Digest) ||
		seals[0].Position != second.Position || !seals[0].SealedAt.Equal(second.SealedAt) {
		t.Fatalf("Seals = %+v, want the two seals newest first", seals)
	}
	if _, err := b.store.Seals(testCtx(t), 0); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("Seals(0) = %v, want ErrInvalidArgument", err)
	}
	if _, err := b.store.VerifySeal(testCtx(t), eventstore.Seal{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("VerifySeal(zero Seal) = %v, want ErrInvalidArgument", err)
	}
}

// TestChainOnExistingTable: a table of a release before chaining gets the
// digest column from migration 004 without a rewrite; its events stay
// unchained (Verify counts them, finds nothing broken), and each stream
// chains from its next append on, from the genesis.
func TestChainOnExistingTable(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, db)
	applyOldMigrations(t, db, schema)
	events := postgres.QuoteIdentifier(schema) + `."events"`
	for v := 1; v <= 3; v++ {
		if _, err := db.ExecContext(ctx, `INSERT INTO `+events+` (event_id, stream_id, stream_version, event_type, payload)
			VALUES ($1, 'order-old', $2, 'item_added', '{"sku": "a", "n": 1}')`, uuid.NewString(), v); err != nil {
			t.Fatal(err)
		}
	}
	s := esoxtest.Store(t, db, testRegistry(), postgres.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	b := &bundle{db: db, store: s, schema: schema}
	b.chainStream(t, "order-old", 2)
	b.chainStream(t, "order-new", 2)
	res := b.verify(t, nil)
	if !res.OK() || res.Unchained != 3 || res.Events != 7 || res.Streams != 2 {
		t.Fatalf("Verify = %+v, want OK with 3 unchained events of 7", res)
	}
	// Once a stream is chained, an event without a digest is a break.
	b.exec(t, `UPDATE {events} SET digest = NULL WHERE stream_id = 'order-old' AND stream_version = 5`)
	if res := b.verify(t, nil); res.OK() || res.Breaks[0].Kind != eventstore.BreakUnchained || res.Breaks[0].StreamVersion != 5 {
		t.Fatalf("Verify after removing the last digest = %+v, want unchained at version 5", res)
	}
}

// TestDisableChain: a store with DisableChain writes no digests; Verify
// counts its events as unchained.
func TestDisableChain(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{DisableChain: true})
	b.chainStream(t, "order-1", 3)
	if _, err := b.store.Append(testCtx(t), "order-1", eventstore.Exact(3), items(70)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.db.GetContext(testCtx(t), &n, `SELECT count(*) FROM `+b.store.QualifiedEventsTable()+` WHERE digest IS NOT NULL`); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d digests written with DisableChain", n)
	}
	if res := b.verify(t, nil); !res.OK() || res.Unchained != 73 {
		t.Fatalf("Verify = %+v, want 73 unchained events", res)
	}
}

// TestVerifyRefusesBadOpts: bad options are typed errors.
func TestVerifyRefusesBadOpts(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	for _, o := range []eventstore.VerifyOpts{{BatchSize: -1}, {BatchSize: eventstore.MaxReadAllLimit + 1}, {MaxBreaks: -1}, {StreamID: " bad"}} {
		if _, err := b.store.Verify(testCtx(t), &o); !errors.Is(err, eventstore.ErrInvalidArgument) && !errors.Is(err, eventstore.ErrInvalidStreamID) {
			t.Errorf("Verify(%+v) = %v, want a typed refusal", o, err)
		}
	}
}
