package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// This file holds the store's hash chain (docs/compliance.md): the part of
// the append statement that computes each event's digest, Verify, and the
// seals. The digest's byte layout is eventstore.ChainDigest's, computed in
// SQL by esox_chain_step (migration 004).

var _ eventstore.Verifier = (*Store)(nil)

// chainColumn is the append statement's extra column: the digest, unless
// chaining is disabled.
func (s *Store) chainColumn() string {
	if s.cfg.DisableChain {
		return ""
	}
	return ", digest"
}

// chainValue is the digest of each appended event, in the statements that
// compute it (the others get it from the store: clientChain): the chain
// folded, in order, over the append's events from the stream's last stored digest
// (NULL, the genesis, for a new stream or one whose last event is
// unchained), within the one statement: no extra round trip. The statement
// for exactly one event (n == 1) writes the step out inline (chainStep);
// the others fold the esox_chain aggregate over their events as a window,
// linear in their number. Inline, a single-event append skips the window
// and the PL/pgSQL call, whose set-up in every new transaction cost it more
// than the digest itself: chained single-event appends ran at 0.81–0.89 of
// unchained ones through the aggregate, 0.90–0.95 inline
// (BenchmarkAppendChain on a quiet 2-core machine). Writing the step out
// for several events too (a recursive query over the VALUES) gained
// nothing measurable there: their cost is the per-event work (rendering
// payload and metadata as text, hashing), not the call.
func (s *Store) chainValue(n int) string {
	switch {
	case s.cfg.DisableChain:
		return ""
	case n == 1:
		return ", " + chainStep("(SELECT digest FROM last)", "v", "cur.version + v.ord")
	}
	return `, ` + QuoteIdentifier(s.cfg.Schema) + `.esox_chain((SELECT digest FROM last), v.event_id, $1, cur.version + v.ord,
	v.event_type, v.schema_version, v.payload, v.metadata) OVER (ORDER BY v.ord)`
}

// chainStep is esox_chain_step (migration 004) written out in SQL: the
// digest of the event whose columns are those of ev (a row with
// event_id, event_type, schema_version, payload and metadata; the stream is
// $1) at version, chained after prev (NULL: the genesis), in
// eventstore.ChainDigest's byte layout. Keep the two in step;
// TestChainDigestsMatchGo checks every statement against Go.
func chainStep(prev, ev, version string) string {
	bytes := func(text string) string {
		c := `convert_to(` + text + `, 'UTF8')`
		return `int4send(octet_length(` + c + `)) || ` + c
	}
	p := `coalesce(` + prev + `, ''::bytea)`
	return `sha256(int4send(octet_length(` + p + `)) || ` + p + ` || uuid_send(` + ev + `.event_id)
		|| ` + bytes("$1") + ` || int8send(` + version + `)
		|| ` + bytes(ev+".event_type") + ` || int4send(` + ev + `.schema_version)
		|| ` + bytes(ev+".payload::text") + `
		|| ` + bytes(ev+".metadata::text") + `)`
}

// chainColumns are the columns Verify reads of each event.
const chainColumns = `stream_id, stream_version, event_id, event_type, schema_version, payload::text, metadata::text, digest,
	transaction_id::text AS transaction_id_text, position`

// Verify checks the hash chain of one stream (opts.StreamID) or of every
// stream (see eventstore.Verifier): it reads the events in stream order, in
// batches of opts.BatchSize by keyset over the (stream_id, stream_version)
// index, recomputes each digest in Go (eventstore.ChainChecker) from the
// payload and metadata as jsonb renders them, and reports the first broken
// link of each broken stream. It reads committed events, visible in the
// feed or not, holds no transaction and no connection between batches, and
// takes no lock: appends go on meanwhile (the events they add are checked
// when the read gets to them).
//
// A broken chain is a result (VerifyResult.OK, Err), not an error. Errors:
// an *eventstore.InvalidArgumentError or *eventstore.InvalidStreamIDError
// for bad opts, ctx's, and database errors wrapped. ctx bounds the whole
// run. Safe for concurrent use.
func (s *Store) Verify(ctx context.Context, opts *eventstore.VerifyOpts) (eventstore.VerifyResult, error) {
	o, err := opts.WithDefaults()
	if err != nil {
		return eventstore.VerifyResult{}, fmt.Errorf("eventstore/postgres: verify: %w", err)
	}
	var query string
	if o.StreamID != "" {
		query = `SELECT ` + chainColumns + ` FROM ` + s.events + `
WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3`
	} else {
		query = `SELECT ` + chainColumns + ` FROM ` + s.events + `
WHERE (stream_id, stream_version) > ($1, $2) ORDER BY stream_id, stream_version LIMIT $3`
	}
	st, err := s.stmt(ctx, query)
	if err != nil {
		return eventstore.VerifyResult{}, err
	}
	check := eventstore.NewChainChecker(o.MaxBreaks)
	afterStream, afterVersion := o.StreamID, int64(0)
	for {
		n, err := s.verifyBatch(ctx, st, check, afterStream, afterVersion, o.BatchSize, &afterStream, &afterVersion)
		if err != nil {
			return eventstore.VerifyResult{}, err
		}
		if n < o.BatchSize {
			return check.Result(), nil
		}
	}
}

// verifyBatch feeds one batch of rows after (stream, version) to check and
// sets *lastStream and *lastVersion to the last row's.
func (s *Store) verifyBatch(ctx context.Context, st *sqlx.Stmt, check *eventstore.ChainChecker, stream string, version int64, limit int, lastStream *string, lastVersion *int64) (int, error) {
	rows, err := st.QueryContext(ctx, stream, version, limit)
	if err != nil {
		return 0, translate(ctx, "verify", err)
	}
	defer rows.Close()
	var (
		n                                 int
		streamID, typ, payload, meta, dig sql.RawBytes
		id                                uuid.UUID
		txid                              string
		r                                 eventstore.ChainRow
	)
	for rows.Next() {
		if err := rows.Scan(&streamID, &r.StreamVersion, &id, &typ, &r.SchemaVersion, &payload, &meta, &dig, &txid, &r.Position.Position); err != nil {
			return n, translate(ctx, "verify", err)
		}
		n++
		r.ID = id
		if string(streamID) != r.StreamID {
			r.StreamID = string(streamID)
		}
		r.Type, r.Payload, r.Metadata = string(typ), payload, meta
		r.Digest = nil
		if dig != nil {
			r.Digest = dig
		}
		if r.Position.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			return n, fmt.Errorf("eventstore/postgres: verify: transaction id %q: %w", txid, err)
		}
		check.Add(r)
		*lastVersion = r.StreamVersion
	}
	if err := rows.Err(); err != nil {
		return n, translate(ctx, "verify", err)
	}
	if n > 0 {
		*lastStream = r.StreamID
	}
	return n, nil
}

// headsSQL selects the head of every stream at a feed position ($1
// transaction id, $2 position): its last event at or before it. It skips
// from stream to stream along the (stream_id, stream_version) index, one
// probe per stream, and orders the heads by the bytes of their IDs (the
// order eventstore.SealHasher takes).
func (s *Store) headsSQL() string {
	return `WITH RECURSIVE s(stream_id) AS (
	(SELECT stream_id FROM ` + s.events + ` ORDER BY stream_id LIMIT 1)
	UNION ALL
	SELECT (SELECT stream_id FROM ` + s.events + ` WHERE stream_id > s.stream_id ORDER BY stream_id LIMIT 1)
	FROM s WHERE s.stream_id IS NOT NULL
)
SELECT s.stream_id, h.stream_version, h.digest FROM s
CROSS JOIN LATERAL (SELECT stream_version, digest FROM ` + s.events + `
	WHERE stream_id = s.stream_id AND (transaction_id, position) <= ($1::xid8, $2::bigint)
	ORDER BY stream_version DESC LIMIT 1) AS h
WHERE s.stream_id IS NOT NULL
ORDER BY s.stream_id COLLATE "C"`
}

// sealOf computes the seal digest of the heads at pos.
func (s *Store) sealOf(ctx context.Context, pos eventstore.Position) (digest []byte, streams, events int64, err error) {
	rows, err := s.db.QueryContext(ctx, s.headsSQL(), strconv.FormatUint(pos.TransactionID, 10), pos.Position)
	if err != nil {
		return nil, 0, 0, translate(ctx, "seal: read stream heads", err)
	}
	defer rows.Close()
	h := eventstore.NewSealHasher(pos)
	var (
		stream  string
		version int64
		dig     sql.RawBytes
	)
	for rows.Next() {
		if err := rows.Scan(&stream, &version, &dig); err != nil {
			return nil, 0, 0, translate(ctx, "seal: read stream heads", err)
		}
		h.Add(stream, version, dig)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, 0, translate(ctx, "seal: read stream heads", err)
	}
	digest, streams, events, err = h.Sum()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("eventstore/postgres: %w", err)
	}
	return digest, streams, events, nil
}

// Seal seals the feed at its head (Head): it computes the digest over the
// head of every stream at that position (eventstore.SealHasher), records
// it in the seals table and returns it; export it (Seal.MarshalJSON) to
// somewhere a database superuser cannot reach, and check it later with
// VerifySeal (see the threat model in docs/compliance.md). The events at or
// before the head are final (no transaction can add one there), so
// appends may go on while it runs. It reads one index probe per stream.
//
// Errors: ctx's and database errors wrapped. ctx bounds the whole call.
// Safe for concurrent use.
func (s *Store) Seal(ctx context.Context) (eventstore.Seal, error) {
	head, err := s.Head(ctx)
	if err != nil {
		return eventstore.Seal{}, err
	}
	digest, streams, events, err := s.sealOf(ctx, head)
	if err != nil {
		return eventstore.Seal{}, err
	}
	seal := eventstore.Seal{Position: head, Streams: streams, Events: events, Digest: digest}
	err = s.db.QueryRowContext(ctx, `INSERT INTO `+s.seals+` (transaction_id, position, streams, events, digest)
VALUES ($1::xid8, $2, $3, $4, $5) RETURNING seal_id, sealed_at`,
		strconv.FormatUint(head.TransactionID, 10), head.Position, streams, events, digest).Scan(&seal.ID, &seal.SealedAt)
	if err != nil {
		return eventstore.Seal{}, translate(ctx, "seal: record", err)
	}
	seal.SealedAt = seal.SealedAt.UTC()
	s.log.InfoContext(ctx, "sealed", "seal_id", seal.ID, "position", head.String(), "streams", streams, "events", events)
	return seal, nil
}

// VerifySeal recomputes seal's digest from the events at or before its
// position and compares (see eventstore.Verifier): a stream whose tail
// events were removed, or whose history was rewritten (digests recomputed
// or not), no longer matches. A mismatch is a result
// (eventstore.SealResult.OK, Err), not an error; run Verify too, to find
// the broken links. The seal's position is a transaction id and a
// position: a logical restore that renumbers transaction ids (see
// docs/operations.md) invalidates it, so check a restored copy against the
// last exported seal before renumbering, and seal again after.
//
// Errors: an *eventstore.InvalidArgumentError for a seal without a digest,
// ctx's and database errors wrapped. ctx bounds the whole call. Safe for
// concurrent use.
func (s *Store) VerifySeal(ctx context.Context, seal eventstore.Seal) (eventstore.SealResult, error) {
	if len(seal.Digest) != eventstore.DigestSize {
		return eventstore.SealResult{}, fmt.Errorf("eventstore/postgres: verify seal: %w", &eventstore.InvalidArgumentError{Field: "seal",
			Reason: fmt.Sprintf("digest must be %d bytes, got %d", eventstore.DigestSize, len(seal.Digest))})
	}
	digest, streams, events, err := s.sealOf(ctx, seal.Position)
	if err != nil {
		return eventstore.SealResult{}, err
	}
	return eventstore.NewSealResult(seal, streams, events, digest), nil
}

// Seals returns the seals recorded in the store, newest first, up to limit
// (1 to eventstore.MaxReadAllLimit, else an
// *eventstore.InvalidArgumentError). A recorded seal is only as
// trustworthy as the database: check the events against a copy exported
// when it was taken. ctx bounds the query. Safe for concurrent use.
func (s *Store) Seals(ctx context.Context, limit int) ([]eventstore.Seal, error) {
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: seals: %w", &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seal_id, transaction_id::text, position, streams, events, digest, sealed_at
FROM `+s.seals+` ORDER BY seal_id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, translate(ctx, "seals", err)
	}
	defer rows.Close()
	var out []eventstore.Seal
	for rows.Next() {
		var (
			seal eventstore.Seal
			txid string
		)
		if err := rows.Scan(&seal.ID, &txid, &seal.Position.Position, &seal.Streams, &seal.Events, &seal.Digest, &seal.SealedAt); err != nil {
			return nil, translate(ctx, "seals", err)
		}
		if seal.Position.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			return nil, fmt.Errorf("eventstore/postgres: seals: transaction id %q: %w", txid, err)
		}
		seal.SealedAt = seal.SealedAt.UTC()
		out = append(out, seal)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(ctx, "seals", err)
	}
	return out, nil
}
