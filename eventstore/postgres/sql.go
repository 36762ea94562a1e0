package postgres

import (
	"fmt"
	"strings"
)

// maxValuesEvents is the largest append written with a VALUES list (one
// prepared statement per event count); larger appends use one statement
// over unnest'ed arrays.
const maxValuesEvents = 64

// Expected-version modes, the $2 of the append statement, which tests
// "$2 IN (1, 3)" for the modes that name a version: keep them in step.
const (
	modeAny int64 = iota
	modeNoStream
	modeStreamExists
	modeExact
)

// appendSQLHead is the common part of the append statement: it reads the
// stream's last event (version and writing transaction) and inserts the rows
// only when the expected version holds ($2 mode, $3 version), the last
// event's transaction is not newer than the current one (guarantee 3 in
// docs/guarantees.md) and, for an expectation that names no version (Any,
// StreamExists), the first event's ID (%[3]s) is not stored yet; zero rows
// back mean a conflict, a duplicate ID or a replay, which Store.conflict
// tells apart. The ID check makes a replay (the same append sent again, by
// the caller or by database/sql on a new connection, after the first
// committed) insert nothing instead of failing on the unique index. An
// expectation that names a version (NoStream, Exact) needs no such probe: a
// replay of it finds the stream past that version and inserts nothing
// already; a first event ID stored elsewhere fails on the unique index
// instead, which Store.refused reports as the same duplicate-ID error. %[4]s
// and %[5]s are the hash chain's column and value (chainColumn, chainValue;
// empty with Config.DisableChain), chained to the last event's digest.
// %[6]s is the RETURNING columns after stream_version (appendReturning).
// %[7]s is empty, or, for a statement given the events' digests (a
// clientChain), the check that they chain after the stream's last digest.
const appendSQLHead = `WITH last AS (
	SELECT stream_version, transaction_id, digest FROM %[1]s
	WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1
), cur AS (
	SELECT coalesce((SELECT stream_version FROM last), 0) AS version,
	       (SELECT transaction_id FROM last) AS last_txid
)
INSERT INTO %[1]s (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata%[4]s)
SELECT v.event_id, $1, cur.version + v.ord, v.event_type, v.schema_version, v.payload, v.metadata%[5]s
FROM cur CROSS JOIN %[2]s
WHERE (CASE $2::bigint WHEN 0 THEN true WHEN 1 THEN cur.version = 0 WHEN 2 THEN cur.version > 0 ELSE cur.version = $3::bigint END)
  AND (cur.last_txid IS NULL OR cur.last_txid <= pg_current_xact_id())
  AND ($2::bigint IN (1, 3) OR NOT EXISTS (SELECT 1 FROM %[1]s WHERE event_id = %[3]s))%[7]s
ORDER BY v.ord
RETURNING position, transaction_id::text, stream_version%[6]s`

// appendReturning returns the append statement's RETURNING columns after
// stream_version, in scanInserted's order: the digest when the statement
// computes it (the store remembers the stream's last one, headCache), and
// recorded_at only for a store with AppendHooks, the one reader of the
// records' times (the append's result does not hold them).
func (s *Store) appendReturning(serverChain bool) string {
	r := ""
	if serverChain && !s.cfg.DisableChain {
		r += ", digest"
	}
	if len(s.cfg.AppendHooks) > 0 {
		r += ", recorded_at"
	}
	return r
}

// transaction_id::text is aliased so that ORDER BY transaction_id sorts by
// the xid8 column (and uses the primary key), not by the text output column
// of the same name: "999" sorts after "1000" as text.
const recordColumns = `position, transaction_id::text AS transaction_id_text, event_id, stream_version, event_type, schema_version, payload, metadata, recorded_at`

func (s *Store) buildSQL() {
	ev := s.events
	s.valuesSQL = make([]string, maxValuesEvents+1)
	for n := 1; n <= maxValuesEvents; n++ {
		s.valuesSQL[n] = s.appendValuesSQL(n)
	}
	if !s.cfg.DisableChain {
		s.chainedValuesSQL = make([]string, maxValuesEvents+1)
		for n := 1; n <= maxValuesEvents; n++ {
			s.chainedValuesSQL[n] = s.appendChainedValuesSQL(n)
		}
	}
	s.appendArraySQL = fmt.Sprintf(appendSQLHead, ev,
		`unnest($4::uuid[], $5::text[], $6::integer[], $7::jsonb[], $8::jsonb[]) WITH ORDINALITY AS v(event_id, event_type, schema_version, payload, metadata, ord)`,
		`($4::uuid[])[1]`, s.chainColumn(), s.chainValue(0), s.appendReturning(true), "")
	s.readStreamSQL = `SELECT ` + recordColumns + ` FROM ` + ev + `
WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3`
	s.readAllSQL = `SELECT ` + recordColumns + `, stream_id FROM ` + ev + `
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position LIMIT $3`
	s.headSQL = `SELECT transaction_id::text AS transaction_id_text, position FROM ` + ev + `
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id DESC, position DESC LIMIT 1`
	s.streamInfoSQL = `SELECT coalesce(max(stream_version), 0) FROM ` + ev + ` WHERE stream_id = $1`
	s.conflictSQL = `WITH last AS (
	SELECT stream_version, transaction_id FROM ` + ev + `
	WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1
)
SELECT coalesce((SELECT stream_version FROM last), 0),
	coalesce((SELECT transaction_id::text FROM last), ''),
	coalesce((SELECT transaction_id > pg_current_xact_id_if_assigned() FROM last), false),
	EXISTS (SELECT 1 FROM ` + ev + ` WHERE event_id = $2::uuid)`
	s.sameTxNeighborSQL = `SELECT EXISTS (SELECT 1 FROM ` + ev + `
WHERE stream_id = $1 AND stream_version IN ($2::bigint, $3::bigint) AND transaction_id = $4::text::xid8)`
	s.lookupSQL = `SELECT ` + recordColumns + `, stream_id FROM ` + ev + ` WHERE event_id = ANY($1::uuid[])`
	// The probe inserts rows with the given event IDs into a stream of its
	// own, in a transaction that is always rolled back: ON CONFLICT waits
	// for a transaction still inserting one of the IDs to end.
	s.probeSQL = `INSERT INTO ` + ev + ` (event_id, stream_id, stream_version, event_type, payload, metadata)
SELECT t.id, $2, t.ord, '', '{}', '{}' FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord)
ON CONFLICT (event_id) DO NOTHING`
	s.saveSnapshotSQL = `INSERT INTO ` + s.snapshots + ` AS s (stream_id, stream_version, snapshot_type, schema_version, payload)
VALUES ($1, $2, $3, $4, $5::json)
ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version,
	snapshot_type = excluded.snapshot_type, schema_version = excluded.schema_version, payload = excluded.payload, recorded_at = excluded.recorded_at
WHERE s.stream_version <= excluded.stream_version`
	s.loadSnapshotSQL = `SELECT stream_version, snapshot_type, schema_version, payload::text, recorded_at FROM ` + s.snapshots + ` WHERE stream_id = $1`
}

// appendEventParams is the number of parameters of each event in the
// append statement's VALUES list: event_id, event_type, schema_version,
// payload, metadata.
const appendEventParams = 5

// appendValuesSQL returns the append statement for exactly n events, with
// the events' columns as parameters $4 onwards.
func (s *Store) appendValuesSQL(n int) string {
	return fmt.Sprintf(appendSQLHead, s.events, valuesList(n, false), "$4::uuid", s.chainColumn(), s.chainValue(n), s.appendReturning(true), "")
}

// appendChainedEventParams is the number of parameters of each event in
// the statement given the events' digests: appendEventParams and the digest.
const appendChainedEventParams = appendEventParams + 1

// appendChainedValuesSQL returns the append statement for exactly n events
// whose digests the store computed (clientChain): the events' columns and
// digests are parameters $4 onwards, and the last one, $(4+6n), is the
// digest they chain after (NULL: the genesis), which must be the stream's
// last digest for the statement to insert anything.
func (s *Store) appendChainedValuesSQL(n int) string {
	guard := fmt.Sprintf("\n  AND (SELECT digest FROM last) IS NOT DISTINCT FROM $%d::bytea", 4+appendChainedEventParams*n)
	return fmt.Sprintf(appendSQLHead, s.events, valuesList(n, true), "$4::uuid", s.chainColumn(), ", v.digest", s.appendReturning(false), guard)
}

// valuesList is the VALUES list v of n events whose columns are parameters
// from $4 on: event_id, event_type, schema_version, payload, metadata, and
// digest when digests, then the event's ordinal, ord.
func valuesList(n int, digests bool) string {
	per, cols := appendEventParams, "event_id, event_type, schema_version, payload, metadata, ord"
	if digests {
		per, cols = appendChainedEventParams, "event_id, event_type, schema_version, payload, metadata, digest, ord"
	}
	var b strings.Builder
	b.WriteString("(VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		p := 4 + per*i
		fmt.Fprintf(&b, "($%d::uuid, $%d::text, $%d::integer, $%d::jsonb, $%d::jsonb", p, p+1, p+2, p+3, p+4)
		if digests {
			fmt.Fprintf(&b, ", $%d::bytea", p+5)
		}
		fmt.Fprintf(&b, ", %d)", i+1)
	}
	b.WriteString(") AS v(" + cols + ")")
	return b.String()
}
