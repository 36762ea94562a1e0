package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// settleAttemptTimeout bounds one attempt to look an append's events up,
// so that a connection that hangs does not use up the whole settle time.
const settleAttemptTimeout = 10 * time.Second

// settleOutcome finds out whether the append of enc to streamID, whose
// statement (or COMMIT) failed with cause after it was sent, was written,
// and returns what Append returns: the stored events' result, the cause
// saying "not written", or an *eventstore.OutcomeUnknownError. It keeps
// trying for Config.SettleTimeout while ctx lasts; once ctx has ended it
// tries once more (within the same bound) and gives up if that fails:
// settling matters most then.
func (s *Store) settleOutcome(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, cause error) (eventstore.AppendResult, error) {
	ids := make([]uuid.UUID, len(enc))
	for i, e := range enc {
		ids[i] = e.ID
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.SettleTimeout)
	defer cancel()
	res, written, err := s.settleLoop(sctx, ctx.Done(), streamID, expected, ids)
	switch {
	case err != nil:
		s.log.WarnContext(ctx, "append outcome unknown: the connection failed after the append was sent, and its events could not be looked up",
			"stream_id", streamID, "event_id", ids[0], "error", cause, "lookup_error", err)
		return eventstore.AppendResult{}, &eventstore.OutcomeUnknownError{StreamID: streamID, EventIDs: ids, Err: translate(ctx, "append", cause), Lookup: err}
	case written:
		s.log.InfoContext(ctx, "append settled as written after its connection failed", "stream_id", streamID, "event_id", ids[0], "error", cause)
		s.wake()
		return res, nil
	}
	s.log.DebugContext(ctx, "append settled as not written after its connection failed", "stream_id", streamID, "event_id", ids[0], "error", cause)
	return eventstore.AppendResult{}, translate(ctx, "append: not written (the connection failed after the append was sent; "+
		"its events were looked up on a new connection and are not stored)", cause)
}

// settleLoop runs settleOnce until it answers, retrying errors that may go
// away (a server restarting, a connection refused, an attempt that timed
// out) with backoff, until ctx ends. Once stop is closed it makes one more
// attempt, without waiting, and gives up if that fails too.
func (s *Store) settleLoop(ctx context.Context, stop <-chan struct{}, streamID string, expected eventstore.ExpectedVersion, ids []uuid.UUID) (eventstore.AppendResult, bool, error) {
	wait := 20 * time.Millisecond
	stopped := false
	for {
		select {
		case <-stop:
			stopped = true
		default:
		}
		actx, cancel := context.WithTimeout(ctx, settleAttemptTimeout)
		res, written, err := s.settleOnce(actx, streamID, expected, ids)
		cancel()
		if err == nil {
			return res, written, nil
		}
		if ctx.Err() != nil {
			return eventstore.AppendResult{}, false, translate(ctx, "look up events", err)
		}
		if code := SQLState(err); code != "" && !IsTransient(err) && code != codeQueryCanceled {
			return eventstore.AppendResult{}, false, err // would fail again
		}
		if stopped {
			return eventstore.AppendResult{}, false, err
		}
		select {
		case <-ctx.Done():
			return eventstore.AppendResult{}, false, err
		case <-stop:
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// settleOnce looks ids up on a connection of the pool, after waiting for
// any transaction still inserting one of them to end, and reports whether
// they are stored as one append to streamID at versions expected allows.
//
// The wait is a probe: in a transaction that is always rolled back, it
// inserts rows with the same event IDs into a stream of its own, ON
// CONFLICT DO NOTHING, which waits for a transaction that inserted one of
// the IDs and has not ended yet (the append, if the server still runs it
// although its client's connection broke). The lookup that follows in the
// same transaction sees what that transaction committed.
func (s *Store) settleOnce(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, ids []uuid.UUID) (eventstore.AppendResult, bool, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return eventstore.AppendResult{}, false, err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, s.probeSQL, uuidArray(ids), "esox-settle-probe-"+uuid.NewString()); err != nil {
		return eventstore.AppendResult{}, false, err
	}
	found, err := s.lookup(ctx, tx, ids, false)
	if err != nil {
		return eventstore.AppendResult{}, false, err
	}
	res, ok, err := s.matchAppend(ctx, tx, found, streamID, expected, ids)
	if err != nil {
		return eventstore.AppendResult{}, false, err
	}
	if err := tx.Rollback(); err != nil {
		return eventstore.AppendResult{}, false, err
	}
	return res, ok, nil
}

// replay reports whether enc is stored already as one earlier append to
// streamID at versions expected allows (see Append), reading through q, and
// returns that append's result.
func (s *Store) replay(ctx context.Context, q eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) (eventstore.AppendResult, bool, error) {
	ids := make([]uuid.UUID, len(enc))
	for i, e := range enc {
		ids[i] = e.ID
	}
	found, err := s.lookup(ctx, q, ids, false)
	if err != nil {
		return eventstore.AppendResult{}, false, translate(ctx, "append: look up stored event IDs", err)
	}
	res, ok, err := s.matchAppend(ctx, q, found, streamID, expected, ids)
	if err != nil {
		return eventstore.AppendResult{}, false, translate(ctx, "append: look up stored event IDs", err)
	}
	if ok {
		s.log.DebugContext(ctx, "append is a replay of a stored append", "stream_id", streamID, "event_id", ids[0])
	}
	return res, ok, nil
}

// matchAppend reports whether found holds every one of ids in streamID at
// consecutive versions in the order of ids, the first at a version that
// expected allows, and whether they are all that one transaction wrote to
// streamID (its events at the versions around them are another
// transaction's, read through q): the events of one append with those IDs.
// An append is atomic, so anything else means the append of ids was not
// written.
func (s *Store) matchAppend(ctx context.Context, q eventstore.Tx, found map[uuid.UUID][]eventstore.Record, streamID string, expected eventstore.ExpectedVersion, ids []uuid.UUID) (eventstore.AppendResult, bool, error) {
	firsts, ok := found[ids[0]]
	if !ok || firsts[0].StreamID != streamID || !expected.Matches(firsts[0].StreamVersion-1) {
		return eventstore.AppendResult{}, false, nil
	}
	first := firsts[0]
	var last eventstore.Record
	for i, id := range ids {
		rs, ok := found[id]
		var r eventstore.Record
		if ok {
			r = rs[0]
		}
		if !ok || r.StreamID != streamID || r.StreamVersion != first.StreamVersion+int64(i) || r.Position.TransactionID != first.Position.TransactionID {
			return eventstore.AppendResult{}, false, nil
		}
		last = r
	}
	var more bool
	err := q.QueryRowContext(ctx, s.sameTxNeighborSQL, streamID, first.StreamVersion-1, last.StreamVersion+1, strconv.FormatUint(first.Position.TransactionID, 10)).Scan(&more)
	if err != nil || more {
		return eventstore.AppendResult{}, false, err
	}
	return eventstore.AppendResult{
		StreamID:     streamID,
		FirstVersion: first.StreamVersion,
		LastVersion:  last.StreamVersion,
		LastPosition: last.Position,
		EventIDs:     slices.Clone(ids),
	}, true, nil
}

// lookup reads the stored events with the given IDs through q, by ID. With
// decode, each stored event is upcast and decoded into the records it reads
// as (none, one or several); without, each maps to one record, its Data nil
// and Metadata zero.
func (s *Store) lookup(ctx context.Context, q eventstore.Tx, ids []uuid.UUID, decode bool) (map[uuid.UUID][]eventstore.Record, error) {
	rows, err := q.QueryContext(ctx, s.lookupSQL, uuidArray(ids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[uuid.UUID][]eventstore.Record, len(ids))
	var raws []eventstore.RawRecord
	for rows.Next() {
		var raw eventstore.RawRecord
		if err := rows.Scan(&raw.Position.Position, &raw.Position.TransactionID, &raw.ID, &raw.StreamVersion, &raw.Type, &raw.SchemaVersion, &raw.Payload, &raw.Metadata, &raw.RecordedAt, &raw.StreamID); err != nil {
			return nil, err
		}
		if decode {
			raws = append(raws, raw)
			continue
		}
		out[raw.ID] = []eventstore.Record{{Position: raw.Position, ID: raw.ID, StreamID: raw.StreamID, StreamVersion: raw.StreamVersion, Type: raw.Type, Payload: raw.Payload, RecordedAt: raw.RecordedAt}}
	}
	if err := rows.Err(); err != nil || !decode {
		return out, err
	}
	rows.Close() // the connection back, before the key store may need one
	if err := s.reg.Decrypt(ctx, raws); err != nil {
		return nil, fmt.Errorf("eventstore/postgres: look up events: %w", err)
	}
	for _, raw := range raws {
		recs, err := raw.AppendDecoded(nil, s.reg)
		if err != nil {
			return nil, fmt.Errorf("eventstore/postgres: event %s: %w", raw.ID, err)
		}
		out[raw.ID] = recs
	}
	return out, nil
}

func uuidArray(ids []uuid.UUID) string {
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	return arrayLiteral(strs)
}

// SettleAppend finds out whether an append whose outcome is open was
// written: eventIDs are its events' IDs in order (AppendResult.EventIDs, or
// OutcomeUnknownError.EventIDs), streamID its stream. Use it after a Commit
// of a transaction holding an AppendTx failed (see AppendTx), or after an
// *eventstore.OutcomeUnknownError from Append.
//
// It returns the stored events' result and true when all of eventIDs are
// stored in streamID, in order, at consecutive versions, written by one
// transaction; false when they are not (an append is atomic, so nothing of
// it was written). Before looking, it waits for a transaction that is still
// inserting one of the IDs to end, so call it only after the appending
// transaction has ended on the client's side (Commit or Rollback returned),
// or it waits for itself. It cannot tell an earlier append of the same
// events from this one: both mean the events are stored, once.
//
// It retries what may go away (a server restarting, a refused connection)
// with backoff until it answers or ctx ends: give ctx a deadline. When it
// cannot answer, the error matches eventstore.ErrOutcomeUnknown (an
// *eventstore.OutcomeUnknownError) and wraps ctx's error; a stream ID or an
// empty eventIDs it refuses with an *eventstore.InvalidStreamIDError or
// *eventstore.InvalidArgumentError. It writes nothing (the probe rolls
// back). Safe for concurrent use.
func (s *Store) SettleAppend(ctx context.Context, streamID string, eventIDs []uuid.UUID) (eventstore.AppendResult, bool, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("eventstore/postgres: settle append: %w", err)
	}
	if len(eventIDs) == 0 {
		return eventstore.AppendResult{}, false, fmt.Errorf("eventstore/postgres: settle append: %w", &eventstore.InvalidArgumentError{Field: "eventIDs", Reason: "at least one event ID is required"})
	}
	res, written, err := s.settleLoop(ctx, nil, streamID, eventstore.Any, eventIDs)
	if err != nil {
		return eventstore.AppendResult{}, false, &eventstore.OutcomeUnknownError{StreamID: streamID, EventIDs: slices.Clone(eventIDs),
			Err: translate(ctx, "settle append: look up events", err)}
	}
	return res, written, nil
}

// LookupEvents returns the stored events with the given IDs, upcast and
// decoded (eventstore.RawRecord.AppendDecoded), in the order of ids; IDs
// that are not stored are left out (an empty result means none is), and so
// are events upcasters drop, while an event they split returns its records
// one after the other. It reads committed events, whether or not the global
// feed shows them yet. Use it to show an event by ID, or to check an append
// whose outcome is unknown (SettleAppend does that check, waiting for a
// transaction still writing them).
//
// Errors: an *eventstore.InvalidArgumentError for more than
// eventstore.MaxReadAllLimit IDs; a stored type that is not registered
// (*eventstore.UnknownEventTypeError), a schema version the registry cannot
// read (*eventstore.SchemaVersionError) or a payload that does not decode
// (*eventstore.PayloadError); database errors wrapped. ctx bounds the query.
// Safe for concurrent use.
func (s *Store) LookupEvents(ctx context.Context, ids []uuid.UUID) ([]eventstore.Record, error) {
	if len(ids) > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: look up events: %w", &eventstore.InvalidArgumentError{Field: "ids", Reason: fmt.Sprintf("at most %d, got %d", eventstore.MaxReadAllLimit, len(ids))})
	}
	if len(ids) == 0 {
		return nil, nil
	}
	found, err := s.lookup(ctx, s.db, ids, true)
	if err != nil {
		var ue *eventstore.UnknownEventTypeError
		var pe *eventstore.PayloadError
		var se *eventstore.SchemaVersionError
		if errors.As(err, &ue) || errors.As(err, &pe) || errors.As(err, &se) {
			return nil, err
		}
		return nil, translate(ctx, "look up events", err)
	}
	out := make([]eventstore.Record, 0, len(found))
	for _, id := range ids {
		if rs, ok := found[id]; ok {
			out = append(out, rs...)
			delete(found, id) // an ID asked for twice is returned once
		}
	}
	return out, nil
}
