package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
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
// stream's next version to a concurrent append is retried at once (up to
// 128 times), since its expectation still holds; Exact and NoStream
// conflicts are returned.
//
// What an error means about what was written: an error matching
// eventstore.ErrOutcomeUnknown (an *eventstore.OutcomeUnknownError) means
// the events may or may not be stored, all or none; every other error means
// none of them was written. Append settles its own outcome: when the
// connection fails after the statement (or, with hooks, COMMIT) was sent, it
// looks the event IDs up on a new connection, retrying with backoff for up to
// Config.SettleTimeout (or until ctx ends; once at most, bounded by
// SettleTimeout, when ctx has already ended), and returns the AppendResult
// when they were written, or the connection's error, saying "not written",
// when they were not. (An append that never got a connection sent nothing:
// it fails at once with the connection's error.) Only when the lookup also
// fails does it return the
// *eventstore.OutcomeUnknownError, which carries the stream and the event
// IDs: settle it with SettleAppend before retrying, or retry with the same
// event IDs (see below), never with fresh ones.
//
// The other errors: *eventstore.ConcurrencyError (ErrConcurrencyConflict)
// when the expected version does not hold or a concurrent append won; the
// typed input errors of eventstore.EncodeAppend (including a
// *eventstore.PayloadError for a payload PostgreSQL cannot store and an
// *eventstore.EventTooLargeError above Config.MaxEventSize); a
// *eventstore.PayloadError for data PostgreSQL refused that the checks did
// not foresee (SQLSTATE classes 22 and 54); an *eventstore.InvalidArgumentError
// when an event ID is already stored; a hook's error, wrapped; database errors
// wrapped (IsTransient tells whether retrying may help).
//
// An append whose events are all stored already, with the same IDs in the
// same order as one earlier append to streamID at versions expected allows
// (a retry after an unknown outcome, or database/sql re-sending the statement
// on a new connection after the first one broke), is a replay: it writes
// nothing, runs no hooks and returns the stored events' AppendResult. Any
// other reuse of a stored event ID is refused.
//
// ctx bounds the whole append except the settling described above. Safe for
// concurrent use.
func (s *Store) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	ctx, op := s.startAppend(ctx, streamID, expected, events)
	res, err := s.append(ctx, streamID, expected, events)
	return op.end(ctx, s.reg, res, err)
}

func (s *Store) append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	enc, err := eventstore.EncodeAppend(ctx, s.reg, streamID, expected, events, s.encodeOpts())
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", err)
	}
	for attempt := 1; ; attempt++ {
		res, err := s.appendOnce(ctx, streamID, expected, enc)
		var vt *versionTaken
		if errors.As(err, &vt) {
			// An Any or StreamExists append whose next version a
			// concurrent append took: retry at once, without reading
			// the stream's version, so as not to fall behind appends
			// that did not lose; after the last attempt, report the
			// conflict.
			if attempt < maxAnyAttempts {
				continue
			}
			err = s.refused(ctx, streamID, expected, enc, err, false)
		}
		if attempt < maxAnyAttempts && lostRace(expected, err) {
			continue
		}
		return res, err
	}
}

// retryable reports whether err is a *versionTaken of an append whose
// expectation names no version, which Append retries as it is.
func retryable(expected eventstore.ExpectedVersion, err error) bool {
	var vt *versionTaken
	_, exact := expected.Version()
	return !exact && errors.As(err, &vt)
}

func (s *Store) encodeOpts() *eventstore.EncodeOpts {
	return &eventstore.EncodeOpts{MaxEventSize: s.cfg.MaxEventSize, DisableTraceContext: s.tel == nil || s.noTraceContext}
}

// maxAnyAttempts bounds how often Append retries an Any or StreamExists
// append that lost a race for the stream's next version.
const maxAnyAttempts = 128

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

// appendOnce is one attempt of Append with the events already encoded:
// with the digests computed here when it can (plan), again with them left
// to the server when the stream's last digest was not the remembered one.
func (s *Store) appendOnce(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) (eventstore.AppendResult, error) {
	res, err := s.appendPlanned(ctx, streamID, expected, enc, s.plan(streamID, expected, enc, false))
	if errors.Is(err, errStaleHead) {
		s.heads.forget(streamID)
		res, err = s.appendPlanned(ctx, streamID, expected, enc, s.plan(streamID, expected, enc, true))
	}
	return res, err
}

// appendPlanned is appendOnce with plan's statement.
func (s *Store) appendPlanned(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, plan appendPlan) (eventstore.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, translate(ctx, "append", err) // nothing sent
	}
	st, err := s.stmt(ctx, plan.sql)
	if err != nil {
		return eventstore.AppendResult{}, err // nothing of the append sent
	}
	if len(s.cfg.AppendHooks) == 0 {
		// database/sql runs the statement on a connection of the pool,
		// again on another one when the driver reports ErrBadConn. handed
		// counts the times it handed the statement to the driver: zero
		// means no attempt got a connection, so nothing was sent.
		var handed atomic.Int32
		query := func(ctx context.Context, args ...any) (*sql.Rows, error) {
			args[0] = handedArg{v: args[0], n: &handed}
			return st.QueryContext(ctx, args...)
		}
		recs, res, head, err := s.insert(ctx, query, nil, streamID, expected, enc, plan)
		if err != nil {
			if handed.Load() == 0 && mayHaveCommitted(err) {
				return eventstore.AppendResult{}, translate(ctx, "append: not sent", err)
			}
			if retryable(expected, err) || errors.Is(err, errStaleHead) {
				return eventstore.AppendResult{}, err
			}
			return s.afterPoolFailure(ctx, streamID, expected, enc, err)
		}
		s.wake()
		if recs == nil {
			return res, nil // a replay
		}
		s.heads.put(streamID, head)
		return result(streamID, recs), nil
	}

	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return eventstore.AppendResult{}, translate(ctx, "append: begin", err)
	}
	defer func() { _ = tx.Rollback() }()
	recs, res, head, err := s.insert(ctx, tx.StmtxContext(ctx, st).QueryContext, tx, streamID, expected, enc, plan)
	if err != nil {
		// The transaction never committed, whatever broke: nothing is
		// written. Release the connection before refused reads the pool.
		_ = tx.Rollback()
		if retryable(expected, err) || errors.Is(err, errStaleHead) {
			return eventstore.AppendResult{}, err
		}
		return eventstore.AppendResult{}, s.refused(ctx, streamID, expected, enc, err, false)
	}
	if recs == nil {
		return res, nil // a replay: nothing inserted, no hooks to run
	}
	if err := s.runHooks(ctx, NewTx(tx), recs); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := tx.Commit(); err != nil {
		if !mayHaveCommitted(err) {
			return eventstore.AppendResult{}, translate(ctx, "append: commit", err)
		}
		return s.settleOutcome(ctx, streamID, expected, enc, fmt.Errorf("commit: %w", err))
	}
	s.wake()
	s.heads.put(streamID, head)
	return result(streamID, recs), nil
}

// handedArg is an argument of the append statement that counts how often
// database/sql converts it for the driver: once per attempt that got a
// connection, before anything of that attempt is sent.
type handedArg struct {
	v any
	n *atomic.Int32
}

// Value implements driver.Valuer.
func (a handedArg) Value() (driver.Value, error) {
	a.n.Add(1)
	return a.v, nil
}

// afterPoolFailure turns an error of the append statement run on the pool
// (no transaction of ours around it) into what Append returns.
//
// The statement commits on its own, so an error that is not the server's
// answer to it leaves open whether it committed: settleOutcome finds out.
// And database/sql re-sends a statement on a new connection when the driver
// reports driver.ErrBadConn, which lib/pq does when the connection broke
// after sending: a refusal may then be the re-sent statement colliding with
// the first one, which committed. So refused checks for a replay first.
func (s *Store) afterPoolFailure(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, err error) (eventstore.AppendResult, error) {
	if mayHaveCommitted(err) {
		return s.settleOutcome(ctx, streamID, expected, enc, err)
	}
	var rp *replayed
	if err := s.refused(ctx, streamID, expected, enc, err, true); !errors.As(err, &rp) {
		if err != nil && mayHaveCommitted(err) {
			// The reads after the refusal broke: find out afresh.
			return s.settleOutcome(ctx, streamID, expected, enc, err)
		}
		return eventstore.AppendResult{}, err
	}
	return rp.res, nil
}

// mayHaveCommitted reports whether err, the error of a statement that
// commits (an append run on its own, or COMMIT), leaves open whether it
// committed: anything but the server's refusal of the statement itself. A
// connection that broke, a server shutting down (57P01), ctx ending while
// the statement ran, and connection errors of a re-sent statement (08, 28,
// 3D, 53, 57P03…) all may follow a commit.
func mayHaveCommitted(err error) bool {
	var (
		vt *versionTaken
		it *idTaken
		ce *eventstore.ConcurrencyError
		ie *eventstore.InvalidArgumentError
		pe *eventstore.PayloadError
	)
	if errors.As(err, &vt) || errors.As(err, &it) || errors.As(err, &ce) || errors.As(err, &ie) || errors.As(err, &pe) {
		return false
	}
	code := SQLState(err)
	if code == codeQueryCanceled {
		// A statement cancelled by a timeout or a cancel request: it
		// had not committed (a cancel that arrives later is ignored).
		return false
	}
	if len(code) == 5 {
		switch code[:2] {
		case "22", "23", "25", "40", "42", "44", "54", "55", "0A", "P0":
			// The server ran the statement and refused it: data
			// exceptions, constraints, transaction state,
			// serialization failures and deadlocks, syntax and
			// access, limits, object state, unsupported features, and
			// errors raised by triggers. It rolled back.
			return false
		}
	}
	return true
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

// appendSQL returns the append statement for n events.
func (s *Store) appendSQL(n int) string {
	if n <= maxValuesEvents {
		return s.valuesSQL[n]
	}
	return s.appendArraySQL
}

// appendArgs returns the arguments of plan's statement.
func appendArgs(streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, plan appendPlan) []any {
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
		versions := make([]string, len(enc))
		payloads := make([]string, len(enc))
		metas := make([]string, len(enc))
		for i, e := range enc {
			ids[i], types[i], versions[i], payloads[i], metas[i] = e.ID.String(), e.Type, strconv.Itoa(e.SchemaVersion), string(e.Payload), string(e.Metadata)
		}
		return []any{streamID, mode, version, arrayLiteral(ids), arrayLiteral(types), arrayLiteral(versions), arrayLiteral(payloads), arrayLiteral(metas)}
	}
	if plan.digests != nil {
		args := make([]any, 0, 4+appendChainedEventParams*len(enc))
		args = append(args, streamID, mode, version)
		for i, e := range enc {
			args = append(args, e.ID.String(), e.Type, int64(e.SchemaVersion), string(e.Payload), string(e.Metadata), plan.digests[i])
		}
		return append(args, plan.prev)
	}
	args := make([]any, 0, 3+appendEventParams*len(enc))
	args = append(args, streamID, mode, version)
	for _, e := range enc {
		// JSON goes as string, not []byte: with binary_parameters=yes lib/pq
		// would send []byte in binary format, which jsonb does not accept.
		args = append(args, e.ID.String(), e.Type, int64(e.SchemaVersion), string(e.Payload), string(e.Metadata))
	}
	return args
}

// insert runs plan's append statement through query (in tx when tx is not
// nil). It returns the records written and the stream's new head (for
// headCache; a zero digest when chaining is off); or, for a replay (see
// Append), nil records and the stored events' result; or the refusal: a
// conflict or duplicate event ID read after a statement that inserted
// nothing, errStaleHead when only plan's check of the stream's last digest
// refused it, a *versionTaken or *idTaken for a unique violation, a
// *PayloadError for data PostgreSQL refused, or the driver's error.
func (s *Store) insert(ctx context.Context, query queryFunc, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, plan appendPlan) ([]eventstore.Record, eventstore.AppendResult, chainHead, error) {
	recs := make([]eventstore.Record, len(enc))
	n, digest, err := scanInserted(ctx, query, appendArgs(streamID, expected, enc, plan), recs)
	if err != nil {
		return nil, eventstore.AppendResult{}, chainHead{}, s.appendError(ctx, streamID, expected, enc, err)
	}
	if n == 0 {
		res, replay, err := s.conflict(ctx, tx, streamID, expected, enc)
		if replay {
			return nil, res, chainHead{}, nil
		}
		var ce *eventstore.ConcurrencyError
		if plan.digests != nil && errors.As(err, &ce) && ce.Reason == "" && expected.Matches(ce.Actual) {
			// Nothing refused the append but the digest check.
			return nil, eventstore.AppendResult{}, chainHead{}, errStaleHead
		}
		return nil, eventstore.AppendResult{}, chainHead{}, err
	}
	if n != len(enc) {
		// Cannot happen: the statement inserts all rows or none.
		return nil, eventstore.AppendResult{}, chainHead{}, fmt.Errorf("eventstore/postgres: append: inserted %d of %d events", n, len(enc))
	}
	if plan.digests != nil {
		digest = plan.digests[len(plan.digests)-1]
	}
	for i, e := range enc {
		r := &recs[i]
		r.ID, r.StreamID, r.Data, r.Metadata = e.ID, streamID, e.Data, e.Meta
		r.Type, r.SchemaVersion, r.Payload = e.Current.Type, e.Current.Version, e.Current.Payload
		r.StoredType, r.StoredSchemaVersion = e.Type, e.SchemaVersion
	}
	return recs, eventstore.AppendResult{}, chainHead{version: recs[len(recs)-1].StreamVersion, digest: digest}, nil
}

// scanInserted reads the RETURNING rows into recs by stream version order:
// position, transaction id, stream version, then the digest and recorded_at
// when the statement returns them (appendReturning). It returns how many
// rows came back and the digest of the last event, when returned.
func scanInserted(ctx context.Context, query queryFunc, args []any, recs []eventstore.Record) (int, []byte, error) {
	rows, err := query(ctx, args...)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	type ret struct {
		pos, version int64
		txid         uint64
		digest       []byte
		at           time.Time
	}
	var got []ret
	if len(recs) > 0 {
		got = make([]ret, 0, len(recs))
	}
	cols, err := rows.Columns()
	if err != nil {
		return 0, nil, err
	}
	var r ret
	dest := []any{&r.pos, &r.txid, &r.version}
	for _, c := range cols[len(dest):] {
		switch c {
		case "digest":
			dest = append(dest, &r.digest)
		case "recorded_at":
			dest = append(dest, &r.at)
		default:
			return 0, nil, fmt.Errorf("unexpected column %q", c)
		}
	}
	for rows.Next() {
		r.digest = nil
		if err := rows.Scan(dest...); err != nil {
			return 0, nil, err
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	if len(got) == 0 {
		return 0, nil, nil
	}
	first, last := got[0].version, got[0]
	for _, r := range got {
		first = min(first, r.version)
		if r.version > last.version {
			last = r
		}
	}
	for _, r := range got {
		i := int(r.version - first)
		if i < 0 || i >= len(recs) {
			return 0, nil, fmt.Errorf("unexpected stream version %d", r.version)
		}
		recs[i].Position = eventstore.Position{TransactionID: r.txid, Position: r.pos}
		recs[i].StreamVersion = r.version
		recs[i].RecordedAt = r.at
	}
	return len(got), last.digest, nil
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

// conflict explains an append statement that inserted nothing: a replay of
// an earlier append (see Append), a *ConcurrencyError, or an event ID that
// is already stored (the statement inserts nothing when the first event's ID
// is stored). It reads the stream's state in tx when given (the statement
// did not abort it), else from the pool. A version mismatch takes precedence
// over a duplicate event ID, as in the memory store.
func (s *Store) conflict(ctx context.Context, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) (eventstore.AppendResult, bool, error) {
	var q eventstore.Tx = s.db
	if tx != nil {
		q = tx
	}
	var (
		actual        int64
		txid          string
		later, stored bool
	)
	err := q.QueryRowContext(ctx, s.conflictSQL, streamID, enc[0].ID.String()).Scan(&actual, &txid, &later, &stored)
	if err != nil {
		return eventstore.AppendResult{}, false, translate(ctx, "append: read stream version after conflict", err)
	}
	if stored {
		res, replay, err := s.replay(ctx, q, streamID, expected, enc)
		if err != nil || replay {
			return res, replay, err
		}
		if expected.Matches(actual) && !later {
			return eventstore.AppendResult{}, false, duplicateID()
		}
	}
	ce := &eventstore.ConcurrencyError{StreamID: streamID, Expected: expected, Actual: actual}
	if later && expected.Matches(actual) {
		ce.Reason = fmt.Sprintf("the stream's last event was written by transaction %s, which is newer than this one; "+
			"committing would put the stream out of order in the global feed, retry in a new transaction", txid)
	}
	s.log.DebugContext(ctx, "append conflict", "stream_id", streamID, "expected", expected.String(), "actual", actual)
	return eventstore.AppendResult{}, false, ce
}

func duplicateID() error {
	return fmt.Errorf("eventstore/postgres: append: %w", &eventstore.InvalidArgumentError{Field: "events", Reason: "an event ID is already stored"})
}

// appendError translates an error of the append statement.
func (s *Store) appendError(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, err error) error {
	code := SQLState(err)
	switch {
	case code == codeUniqueViolation:
		switch violatedConstraint(err, s.streamVersionKeyName, s.eventIDKeyName) {
		case s.streamVersionKeyName:
			// A concurrent append won. Its version is read by refused,
			// once the caller has let go of this append's connection.
			return &versionTaken{streamID: streamID, expected: expected}
		case s.eventIDKeyName:
			return &idTaken{}
		}
	case len(code) == 5 && (code[:2] == "22" || code[:2] == "54"):
		// Data PostgreSQL refused (22P05 \u0000, 22P02 a lone surrogate,
		// 22003 a number out of range, 22021 bad UTF-8, 54000 jsonb's
		// size limits, 54001 nesting too deep) that
		// eventstore.EncodeAppend did not refuse first.
		typ := enc[0].Type
		what := "the payload or metadata of an event of this append"
		if len(enc) == 1 {
			what = "the event's payload or metadata"
		}
		return fmt.Errorf("eventstore/postgres: append: %w", &eventstore.PayloadError{Type: typ, Op: "encode",
			Err: fmt.Errorf("PostgreSQL refused %s (SQLSTATE %s): %w", what, code, err)})
	}
	return translate(ctx, "append", err)
}

// versionTaken is the unique violation of an append whose next version a
// concurrent append committed first. refused turns it into the
// *eventstore.ConcurrencyError callers see.
type versionTaken struct {
	streamID string
	expected eventstore.ExpectedVersion
}

func (e *versionTaken) Error() string { return "stream version taken by a concurrent append" }

// idTaken is the unique violation of an append one of whose event IDs a
// concurrent append committed first.
type idTaken struct{}

func (e *idTaken) Error() string { return "event ID taken by a concurrent append" }

// refused returns the error of an append statement that did not insert,
// translated: a *versionTaken becomes the ConcurrencyError carrying the
// stream's actual version (the winner has committed, so the pool sees it),
// an *idTaken the duplicate-ID error; anything else is returned as is. With
// replayOK (an append run on the pool, which database/sql may have re-sent)
// an *idTaken is first checked for a replay, returned as a *replayed. Call it only after releasing the failed append's transaction:
// reading through the pool while holding a connection could wait forever on
// a pool that is at MaxOpenConns.
func (s *Store) refused(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, err error, replayOK bool) error {
	var (
		vt *versionTaken
		it *idTaken
	)
	isVT, isIT := errors.As(err, &vt), errors.As(err, &it)
	if !isVT && !isIT {
		return err
	}
	// Only an ID collision can be a replay: a re-sent statement waits on
	// the event_id index, checked before the stream version's, for the
	// first statement's rows.
	if replayOK && isIT {
		res, replay, rerr := s.replay(ctx, s.db, streamID, expected, enc)
		if rerr != nil {
			return rerr
		}
		if replay {
			return &replayed{res: res}
		}
	}
	if isIT {
		return duplicateID()
	}
	var actual int64
	if qerr := s.db.QueryRowxContext(ctx, s.streamInfoSQL, vt.streamID).Scan(&actual); qerr != nil {
		s.log.DebugContext(ctx, "read stream version after unique violation", "stream_id", vt.streamID, "error", qerr)
	}
	return &eventstore.ConcurrencyError{StreamID: vt.streamID, Expected: vt.expected, Actual: actual}
}

// replayed carries the result of a replay out of refused.
type replayed struct{ res eventstore.AppendResult }

func (e *replayed) Error() string { return "replay of a stored append" }

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
// its work. Nothing AppendTx does commits, so its errors never leave an
// outcome open and it never returns ErrOutcomeUnknown. A replay (see
// Append) that the statement detects returns the stored events' result and
// runs no hooks; one whose insert collides with the stored events is refused
// as a duplicate event ID, since the failed insert aborted tx.
//
// The events are written only when the caller's Commit succeeds. A Commit
// that returns an error may still have committed, when the connection broke
// after COMMIT was sent; settle it with SettleAppend before retrying:
//
//	res, err := store.AppendTx(ctx, tx, streamID, expected, events)
//	if err != nil {
//		_ = tx.Rollback()
//		return err // nothing written
//	}
//	if err := tx.Commit(); err != nil {
//		got, written, serr := store.SettleAppend(ctx, streamID, res.EventIDs)
//		switch {
//		case serr != nil:
//			return serr // outcome still unknown: matches ErrOutcomeUnknown
//		case !written:
//			return err // nothing of tx was written: safe to retry
//		}
//		res = got // tx committed after all
//	}
//
// SettleAppend sees only the events: whether the rest of tx committed
// follows from them, since they commit together. AppendTx does not wake
// Subscribe channels (it cannot know when tx commits). tx is used by one
// goroutine at a time, as database/sql requires.
func (s *Store) AppendTx(ctx context.Context, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	ctx, op := s.startAppend(ctx, streamID, expected, events)
	res, err := s.appendTx(ctx, tx, streamID, expected, events)
	return op.end(ctx, s.reg, res, err)
}

func (s *Store) appendTx(ctx context.Context, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	if tx == nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", &eventstore.InvalidArgumentError{Field: "tx", Reason: "must not be nil"})
	}
	var hookTx Tx
	switch t := tx.(type) {
	case *sqlx.Tx: // before Tx, which it satisfies: hooks get the view without Commit
		hookTx = NewTx(t)
	case Tx:
		hookTx = t
	}
	if hookTx == nil && len(s.cfg.AppendHooks) > 0 {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", &eventstore.InvalidArgumentError{Field: "tx",
			Reason: fmt.Sprintf("a %T cannot run AppendHooks: pass a *sqlx.Tx or a postgres.Tx", tx)})
	}
	enc, err := eventstore.EncodeAppend(ctx, s.reg, streamID, expected, events, s.encodeOpts())
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: %w", err)
	}
	recs, res, err := s.insertTx(ctx, tx, streamID, expected, enc, s.plan(streamID, expected, enc, false))
	if errors.Is(err, errStaleHead) {
		// The statement inserted nothing and did not fail: tx goes on.
		s.heads.forget(streamID)
		recs, res, err = s.insertTx(ctx, tx, streamID, expected, enc, s.plan(streamID, expected, enc, true))
	}
	if err != nil {
		// tx is aborted; a lost race reads the stream's version through
		// the pool, so leave the pool one connection more than the
		// transactions that may append at once.
		return eventstore.AppendResult{}, s.refused(ctx, streamID, expected, enc, err, false)
	}
	if recs == nil {
		return res, nil // a replay
	}
	if hookTx != nil {
		if err := s.runHooks(ctx, hookTx, recs); err != nil {
			return eventstore.AppendResult{}, err
		}
	}
	return result(streamID, recs), nil
}

// insertTx is insert in the caller's tx. It does not remember the stream's
// new head (headCache): tx may yet roll back.
func (s *Store) insertTx(ctx context.Context, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, plan appendPlan) ([]eventstore.Record, eventstore.AppendResult, error) {
	st, err := s.stmt(ctx, plan.sql)
	if err != nil {
		return nil, eventstore.AppendResult{}, err
	}
	recs, res, _, err := s.insert(ctx, bindStmt(ctx, tx, st, plan.sql), tx, streamID, expected, enc, plan)
	return recs, res, err
}
