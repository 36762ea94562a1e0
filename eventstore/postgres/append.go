package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// Append writes events to the end of streamID if its current version
// satisfies expected (see eventstore.Store.Append). Without AppendHooks it is
// one prepared statement, one round trip, committed on its own; with hooks it
// runs BEGIN, the insert, the hooks and COMMIT. After it commits, Subscribe
// channels are woken. An Any or StreamExists append that loses a race for the
// stream's next version to a concurrent append is retried (up to 32 times),
// since its expectation still holds; Exact and NoStream conflicts are
// returned.
//
// Errors: *eventstore.ConcurrencyError (ErrConcurrencyConflict) when the
// expected version does not hold or a concurrent append won; the typed
// input errors of eventstore.EncodeAppend; *eventstore.PayloadError
// (ErrMalformedPayload) for a payload PostgreSQL refuses (e.g. \u0000 in a
// JSON string); an *eventstore.InvalidArgumentError when an event ID is
// already stored; a hook's error, wrapped; database errors wrapped. In every
// error case nothing is written. ctx bounds the whole append. Safe for
// concurrent use.
func (s *Store) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	enc, err := eventstore.EncodeAppend(ctx, s.reg, streamID, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", err)
	}
	for attempt := 1; ; attempt++ {
		res, err := s.appendOnce(ctx, streamID, expected, enc)
		if attempt < maxAnyAttempts && lostRace(expected, err) {
			continue
		}
		return res, err
	}
}

// maxAnyAttempts bounds how often Append retries an Any or StreamExists
// append that lost a race for the stream's next version.
const maxAnyAttempts = 32

// lostRace reports whether err is a conflict that an append whose
// expectation does not name a version should retry: a concurrent append
// took the version this one computed, and the stream still satisfies the
// expectation. Exact and NoStream conflicts are final.
func lostRace(expected eventstore.ExpectedVersion, err error) bool {
	if _, exact := expected.Version(); exact || err == nil {
		return false
	}
	var ce *eventstore.ConcurrencyError
	return errors.As(err, &ce) && ce.Reason == "" && expected.Matches(ce.Actual)
}

// appendOnce is one attempt of Append with the events already encoded.
func (s *Store) appendOnce(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) (eventstore.AppendResult, error) {
	st, err := s.appendStmt(ctx, len(enc))
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(s.cfg.AppendHooks) == 0 {
		recs, err := s.insert(ctx, st.QueryContext, nil, streamID, expected, enc)
		if err != nil {
			return eventstore.AppendResult{}, s.settle(ctx, err)
		}
		s.wake()
		return result(streamID, recs), nil
	}

	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return eventstore.AppendResult{}, translate(ctx, "append: begin", err)
	}
	defer func() { _ = tx.Rollback() }()
	recs, err := s.insert(ctx, tx.StmtxContext(ctx, st).QueryContext, tx, streamID, expected, enc)
	if err != nil {
		_ = tx.Rollback() // release the connection before settle reads
		return eventstore.AppendResult{}, s.settle(ctx, err)
	}
	if err := s.runHooks(ctx, NewTx(tx), recs); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := tx.Commit(); err != nil {
		return eventstore.AppendResult{}, translate(ctx, "append: commit", err)
	}
	s.wake()
	return result(streamID, recs), nil
}

// AppendTx is Append inside the caller's transaction tx: the events, the
// AppendHooks' writes and whatever else the caller does in tx commit or roll
// back together (guarantee 4 in docs/guarantees.md). tx is a *sqlx.Tx, a
// *sql.Tx, or the Tx handed to a hook or projection handler; with a
// *sqlx.Tx or a Tx it runs the store's prepared statement, one round trip
// without hooks. AppendHooks need a *sqlx.Tx or a Tx (they are handed a
// Tx); with another eventstore.Tx and hooks configured, AppendTx refuses
// with an *eventstore.InvalidArgumentError.
//
// Besides Append's errors, it refuses with a *eventstore.ConcurrencyError
// whose Reason is set when the stream's last event was written by a
// transaction newer than tx (one that took its transaction id after tx
// did): committing would put the stream out of order in the global feed
// (guarantee 3). Retry in a new transaction.
//
// On any error the caller must roll tx back: PostgreSQL aborts the
// transaction after a failed statement, and a hook may have written part of
// its work. AppendTx does not wake Subscribe channels (it cannot know when tx
// commits). tx is used by one goroutine at a time, as database/sql requires.
func (s *Store) AppendTx(ctx context.Context, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	if tx == nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", &eventstore.InvalidArgumentError{Field: "tx", Reason: "must not be nil"})
	}
	var hookTx Tx
	switch t := tx.(type) {
	case *sqlx.Tx: // before Tx, which *sqlx.Tx satisfies: hooks get the view
		hookTx = NewTx(t)
	case Tx:
		hookTx = t
	}
	if hookTx == nil && len(s.cfg.AppendHooks) > 0 {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", &eventstore.InvalidArgumentError{Field: "tx",
			Reason: fmt.Sprintf("a %T cannot run AppendHooks: pass a *sqlx.Tx or a postgres.Tx", tx)})
	}
	enc, err := eventstore.EncodeAppend(ctx, s.reg, streamID, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", err)
	}
	st, err := s.appendStmt(ctx, len(enc))
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	recs, err := s.insert(ctx, bindStmt(ctx, tx, st, s.appendSQL(len(enc))), tx, streamID, expected, enc)
	if err != nil {
		// tx is aborted; a lost race reads the stream's version through
		// the pool, so leave the pool one connection more than the
		// transactions that may append at once.
		return eventstore.AppendResult{}, s.settle(ctx, err)
	}
	if hookTx != nil {
		if err := s.runHooks(ctx, hookTx, recs); err != nil {
			return eventstore.AppendResult{}, err
		}
	}
	return result(streamID, recs), nil
}

// queryFunc runs one of the store's statements with its arguments.
type queryFunc func(ctx context.Context, args ...any) (*sql.Rows, error)

// bindStmt returns st, prepared from query, run in tx: prepared when tx can
// bind a prepared statement, else query sent as is.
func bindStmt(ctx context.Context, tx eventstore.Tx, st *sqlx.Stmt, query string) queryFunc {
	switch t := tx.(type) {
	case stmtBinder:
		return t.StmtxContext(ctx, st).QueryContext
	case *sql.Tx:
		return t.StmtContext(ctx, st.Stmt).QueryContext
	}
	return func(ctx context.Context, args ...any) (*sql.Rows, error) {
		return tx.QueryContext(ctx, query, args...)
	}
}

func (s *Store) runHooks(ctx context.Context, tx Tx, recs []eventstore.Record) error {
	for i, h := range s.cfg.AppendHooks {
		if err := h(ctx, tx, recs); err != nil {
			return fmt.Errorf("eventstore/postgres: append hook %d: %w", i, err)
		}
	}
	return nil
}

func (s *Store) appendStmt(ctx context.Context, n int) (*sqlx.Stmt, error) {
	return s.stmt(ctx, s.appendSQL(n))
}

// appendSQL returns the append statement for n events.
func (s *Store) appendSQL(n int) string {
	if n <= maxValuesEvents {
		return s.valuesSQL[n]
	}
	return s.appendArraySQL
}

func appendArgs(streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) []any {
	mode, version := modeAny, int64(0)
	switch {
	case expected.IsAny():
	case expected.IsStreamExists():
		mode = modeStreamExists
	default:
		v, _ := expected.Version()
		if v == 0 {
			mode = modeNoStream
		} else {
			mode, version = modeExact, v
		}
	}
	if len(enc) > maxValuesEvents {
		ids := make([]string, len(enc))
		types := make([]string, len(enc))
		payloads := make([]string, len(enc))
		metas := make([]string, len(enc))
		for i, e := range enc {
			ids[i], types[i], payloads[i], metas[i] = e.ID.String(), e.Type, string(e.Payload), string(e.Metadata)
		}
		return []any{streamID, mode, version, arrayLiteral(ids), arrayLiteral(types), arrayLiteral(payloads), arrayLiteral(metas)}
	}
	args := make([]any, 0, 3+4*len(enc))
	args = append(args, streamID, mode, version)
	for _, e := range enc {
		// JSON goes as string, not []byte: with binary_parameters=yes lib/pq
		// would send []byte in binary format, which jsonb does not accept.
		args = append(args, e.ID.String(), e.Type, string(e.Payload), string(e.Metadata))
	}
	return args
}

// insert runs the append statement through query (in tx when tx is not
// nil) and returns the records written, or the translated conflict.
func (s *Store) insert(ctx context.Context, query queryFunc, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) ([]eventstore.Record, error) {
	recs := make([]eventstore.Record, len(enc))
	n, err := scanInserted(ctx, query, appendArgs(streamID, expected, enc), recs)
	if err != nil {
		return nil, s.appendError(ctx, streamID, expected, enc, err)
	}
	if n == 0 {
		return nil, s.conflict(ctx, tx, streamID, expected)
	}
	if n != len(enc) {
		// Cannot happen: the statement inserts all rows or none.
		return nil, fmt.Errorf("eventstore/postgres: append: inserted %d of %d events", n, len(enc))
	}
	for i, e := range enc {
		r := &recs[i]
		r.ID, r.StreamID, r.Type, r.Data, r.Payload, r.Metadata = e.ID, streamID, e.Type, e.Data, e.Payload, e.Meta
	}
	return recs, nil
}

// scanInserted reads the RETURNING rows into recs by stream version order.
func scanInserted(ctx context.Context, query queryFunc, args []any, recs []eventstore.Record) (int, error) {
	rows, err := query(ctx, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	type ret struct {
		pos, version int64
		txid         uint64
		at           time.Time
	}
	var got []ret
	if len(recs) > 0 {
		got = make([]ret, 0, len(recs))
	}
	for rows.Next() {
		var r ret
		if err := rows.Scan(&r.pos, &r.txid, &r.version, &r.at); err != nil {
			return 0, err
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(got) == 0 {
		return 0, nil
	}
	first := got[0].version
	for _, r := range got {
		first = min(first, r.version)
	}
	for _, r := range got {
		i := int(r.version - first)
		if i < 0 || i >= len(recs) {
			return 0, fmt.Errorf("unexpected stream version %d", r.version)
		}
		recs[i].Position = eventstore.Position{TransactionID: r.txid, Position: r.pos}
		recs[i].StreamVersion = r.version
		recs[i].RecordedAt = r.at
	}
	return len(got), nil
}

func result(streamID string, recs []eventstore.Record) eventstore.AppendResult {
	res := eventstore.AppendResult{
		StreamID:     streamID,
		FirstVersion: recs[0].StreamVersion,
		LastVersion:  recs[len(recs)-1].StreamVersion,
		LastPosition: recs[len(recs)-1].Position,
		EventIDs:     make([]uuid.UUID, len(recs)),
	}
	for i, r := range recs {
		res.EventIDs[i] = r.ID
	}
	return res
}

// conflict builds the ConcurrencyError of an append that inserted nothing.
// It reads the stream's state in tx when given (the failed statement did not
// abort it), else from the pool.
func (s *Store) conflict(ctx context.Context, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion) error {
	var q eventstore.Tx = s.db
	if tx != nil {
		q = tx
	}
	var (
		actual int64
		txid   string
		later  bool
	)
	err := q.QueryRowContext(ctx, s.conflictSQL, streamID).Scan(&actual, &txid, &later)
	if err != nil && !isNoRows(err) {
		return translate(ctx, "append: read stream version after conflict", err)
	}
	ce := &eventstore.ConcurrencyError{StreamID: streamID, Expected: expected, Actual: actual}
	if later && expected.Matches(actual) {
		ce.Reason = fmt.Sprintf("the stream's last event was written by transaction %s, which is newer than this one; "+
			"committing would put the stream out of order in the global feed, retry in a new transaction", txid)
	}
	s.log.DebugContext(ctx, "append conflict", "stream_id", streamID, "expected", expected.String(), "actual", actual)
	return ce
}

// appendError translates an error of the append statement.
func (s *Store) appendError(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, err error) error {
	switch SQLState(err) {
	case codeUniqueViolation:
		switch violatedConstraint(err, s.streamVersionKeyName, s.eventIDKeyName) {
		case s.streamVersionKeyName:
			// A concurrent append won. Its version is read by
			// settle, once the caller has let go of this append's
			// connection.
			return &versionTaken{streamID: streamID, expected: expected}
		case s.eventIDKeyName:
			return fmt.Errorf("eventstore/postgres: append: %w", &eventstore.InvalidArgumentError{Field: "events", Reason: "an event ID is already stored"})
		}
	case codeUntranslatableCharacter:
		return fmt.Errorf("eventstore/postgres: append: %w", &eventstore.PayloadError{Type: nulEventType(enc), Op: "encode", Err: fmt.Errorf("PostgreSQL jsonb cannot store this payload (a \\u0000 character?): %w", err)})
	}
	return translate(ctx, "append", err)
}

// versionTaken is the unique violation of an append whose next version a
// concurrent append committed first. settle turns it into the
// *eventstore.ConcurrencyError callers see.
type versionTaken struct {
	streamID string
	expected eventstore.ExpectedVersion
}

func (e *versionTaken) Error() string { return "stream version taken by a concurrent append" }

// settle returns err, with a versionTaken replaced by the ConcurrencyError
// carrying the stream's actual version. The winner has committed, so the pool
// sees it. Call it only after releasing the failed append's transaction:
// reading through the pool while holding a connection could wait forever on
// a pool that is at MaxOpenConns.
func (s *Store) settle(ctx context.Context, err error) error {
	var vt *versionTaken
	if !errors.As(err, &vt) {
		return err
	}
	var actual int64
	if qerr := s.db.QueryRowxContext(ctx, s.streamInfoSQL, vt.streamID).Scan(&actual); qerr != nil {
		s.log.DebugContext(ctx, "read stream version after unique violation", "stream_id", vt.streamID, "error", qerr)
	}
	return &eventstore.ConcurrencyError{StreamID: vt.streamID, Expected: vt.expected, Actual: actual}
}

// nulEventType names the first event whose payload or metadata contains an
// escaped NUL character, for the PayloadError of SQLSTATE 22P05.
func nulEventType(enc []eventstore.EncodedEvent) string {
	for _, e := range enc {
		if containsNUL(e.Payload) || containsNUL(e.Metadata) {
			return e.Type
		}
	}
	return enc[0].Type
}
