package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// row is a stored event as scanned, before decoding.
type row struct {
	pos      int64
	txid     string
	id       uuid.UUID
	streamID string
	version  int64
	typ      string
	payload  []byte
	metadata []byte
	at       time.Time
}

// queryRows runs st and scans every row; withStream says whether the query
// returns stream_id as its last column.
func queryRows(ctx context.Context, st *sqlx.Stmt, withStream bool, capHint int, args ...any) ([]row, error) {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]row, 0, capHint)
	for rows.Next() {
		var r row
		dest := []any{&r.pos, &r.txid, &r.id, &r.version, &r.typ, &r.payload, &r.metadata, &r.at}
		if withStream {
			dest = append(dest, &r.streamID)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// decode turns a scanned row into a Record, decoding its payload with the
// registry.
func (s *Store) decode(r row) (eventstore.Record, error) {
	txid, err := strconv.ParseUint(r.txid, 10, 64)
	if err != nil {
		return eventstore.Record{}, fmt.Errorf("eventstore/postgres: parse transaction id %q: %w", r.txid, err)
	}
	data, err := s.reg.Decode(r.typ, r.payload)
	if err != nil {
		return eventstore.Record{}, fmt.Errorf("eventstore/postgres: stream %q version %d: %w", r.streamID, r.version, err)
	}
	rec := eventstore.Record{
		Position:      eventstore.Position{TransactionID: txid, Position: r.pos},
		ID:            r.id,
		StreamID:      r.streamID,
		StreamVersion: r.version,
		Type:          r.typ,
		Data:          data,
		Payload:       json.RawMessage(r.payload),
		RecordedAt:    r.at,
	}
	if len(r.metadata) > 2 { // "{}" is the zero Metadata
		if rec.Metadata, err = decodeMetadata(r.metadata); err != nil {
			return eventstore.Record{}, fmt.Errorf("eventstore/postgres: stream %q version %d: metadata: %w", r.streamID, r.version, &eventstore.PayloadError{Type: r.typ, Op: "decode", Err: err})
		}
	}
	return rec, nil
}

// decodeMetadata decodes a metadata column. esox writes flat objects of
// strings, decoded in one pass; anything else goes through
// Metadata.UnmarshalJSON, which keeps non-string values as their JSON text.
func decodeMetadata(b []byte) (eventstore.Metadata, error) {
	var kv map[string]string
	if json.Unmarshal(b, &kv) == nil {
		return eventstore.MetadataFromMap(kv), nil
	}
	var md eventstore.Metadata
	err := json.Unmarshal(b, &md)
	return md, err
}

// ReadStream yields the records of streamID with StreamVersion >= from
// (from < 1 reads from the start), in version order. It queries one page of
// Config.ReadStreamPageSize records at a time and holds no connection while
// yielding, so a long stream never sits in memory and a slow consumer holds
// no database resources. Payloads decode into the registered types.
//
// An error (an *eventstore.InvalidStreamIDError, an
// *eventstore.UnknownEventTypeError or *eventstore.PayloadError for a stored
// event that does not decode, ctx's error, a database error) is yielded once
// as the last pair; records before it are yielded first. ctx bounds the
// whole iteration. Safe for concurrent use; each iteration queries afresh.
func (s *Store) ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		if err := eventstore.ValidateStreamID(streamID); err != nil {
			yield(eventstore.Record{}, fmt.Errorf("eventstore/postgres: read stream: %w", err))
			return
		}
		from := max(from, 1)
		page := s.cfg.ReadStreamPageSize
		st, err := s.stmt(ctx, s.readStreamSQL)
		if err != nil {
			yield(eventstore.Record{}, err)
			return
		}
		for {
			if err := ctx.Err(); err != nil {
				yield(eventstore.Record{}, fmt.Errorf("eventstore/postgres: read stream: %w", err))
				return
			}
			// One row more than a page tells whether another page follows,
			// without a last query that returns nothing.
			rows, err := queryRows(ctx, st, false, page+1, streamID, from, page+1)
			if err != nil {
				yield(eventstore.Record{}, translate(ctx, "read stream", err))
				return
			}
			more := len(rows) > page
			if more {
				from = rows[page].version
				rows = rows[:page]
			}
			for _, r := range rows {
				r.streamID = streamID
				rec, err := s.decode(r)
				if err != nil {
					yield(eventstore.Record{}, err)
					return
				}
				if !yield(rec, nil) {
					return
				}
			}
			if !more {
				return
			}
		}
	}
}

// ReadAll returns up to limit records after the position after in the global
// feed, ordered by (TransactionID, Position). It reads only records whose
// transaction is older than every transaction still running
// (transaction_id < pg_snapshot_xmin(pg_current_snapshot())), so it never
// returns a record while one that sorts before it could still commit (DESIGN
// guarantees 2 and 3): resume from the last Position returned and nothing is
// missed. An open transaction holding a transaction id anywhere on the
// server holds the feed back until it ends.
//
// Run it outside any transaction that has a transaction id; the store uses
// its pool. limit must be 1..eventstore.MaxReadAllLimit, else an
// *eventstore.InvalidArgumentError. A stored event that does not decode
// returns an *eventstore.UnknownEventTypeError or *eventstore.PayloadError
// and no records. ctx bounds the query. Safe for concurrent use.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: read all: %w", &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	if after.Position < 0 {
		return nil, fmt.Errorf("eventstore/postgres: read all: %w", &eventstore.InvalidArgumentError{Field: "after", Reason: fmt.Sprintf("position must not be negative, got %d", after.Position)})
	}
	st, err := s.stmt(ctx, s.readAllSQL)
	if err != nil {
		return nil, err
	}
	rows, err := queryRows(ctx, st, true, min(limit, 1024), strconv.FormatUint(after.TransactionID, 10), after.Position, limit)
	if err != nil {
		return nil, translate(ctx, "read all", err)
	}
	out := make([]eventstore.Record, len(rows))
	for i, r := range rows {
		if out[i], err = s.decode(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// StreamInfo reports whether streamID has events and its current version.
// It returns an *eventstore.InvalidStreamIDError for a bad ID. ctx bounds
// the query. Safe for concurrent use.
func (s *Store) StreamInfo(ctx context.Context, streamID string) (eventstore.StreamInfo, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return eventstore.StreamInfo{}, fmt.Errorf("eventstore/postgres: stream info: %w", err)
	}
	st, err := s.stmt(ctx, s.streamInfoSQL)
	if err != nil {
		return eventstore.StreamInfo{}, err
	}
	var v int64
	if err := st.QueryRowContext(ctx, streamID).Scan(&v); err != nil {
		return eventstore.StreamInfo{}, translate(ctx, "stream info", err)
	}
	return eventstore.StreamInfo{StreamID: streamID, Exists: v > 0, Version: v}, nil
}
