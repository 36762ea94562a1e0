package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"iter"
	"strconv"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// queryRecords runs st and decodes its rows into Records. When streamID is
// empty the query returns stream_id as its last column; otherwise every row
// belongs to streamID. Driver errors are translated with op. When a row does
// not decode, it returns the records before it and the typed error.
func (s *Store) queryRecords(ctx context.Context, st *sqlx.Stmt, op, streamID string, capHint int, args ...any) ([]eventstore.Record, error) {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	defer rows.Close()
	out := make([]eventstore.Record, 0, capHint)
	// Type names and stream IDs repeat from row to row: keep one string
	// of each rather than one per row.
	names := map[string]string{}
	intern := func(b []byte) string {
		if v, ok := names[string(b)]; ok {
			return v
		}
		v := string(b)
		names[v] = v
		return v
	}
	var (
		typ, metadata, stream sql.RawBytes
		payload               []byte
	)
	for rows.Next() {
		var r eventstore.Record
		dest := []any{&r.Position.Position, &r.Position.TransactionID, &r.ID, &r.StreamVersion, &typ, &payload, &metadata, &r.RecordedAt}
		if streamID == "" {
			dest = append(dest, &stream)
		}
		if err := rows.Scan(dest...); err != nil {
			return out, translate(ctx, op, err)
		}
		r.Type = intern(typ)
		r.StreamID = streamID
		if streamID == "" {
			r.StreamID = intern(stream)
		}
		r.Payload = json.RawMessage(payload)
		payload = nil // the next row scans into a new slice
		if r.Data, err = s.reg.Decode(r.Type, r.Payload); err != nil {
			return out, fmt.Errorf("eventstore/postgres: stream %q version %d: %w", r.StreamID, r.StreamVersion, err)
		}
		if len(metadata) > 2 { // "{}" is the zero Metadata
			if r.Metadata, err = decodeMetadata(metadata); err != nil {
				return out, fmt.Errorf("eventstore/postgres: stream %q version %d: metadata: %w", r.StreamID, r.StreamVersion, &eventstore.PayloadError{Type: r.Type, Op: "decode", Err: err})
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return out, translate(ctx, op, err)
	}
	return out, nil
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
			recs, err := s.queryRecords(ctx, st, "read stream", streamID, page+1, streamID, from, page+1)
			more := len(recs) > page
			if more {
				from = recs[page].StreamVersion
				recs = recs[:page]
				err = nil // a bad extra row fails the next page
			}
			for _, rec := range recs {
				if !yield(rec, nil) {
					return
				}
			}
			if err != nil {
				yield(eventstore.Record{}, err)
				return
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
	recs, err := s.queryRecords(ctx, st, "read all", "", min(limit, 1024), strconv.FormatUint(after.TransactionID, 10), after.Position, limit)
	if err != nil {
		return nil, err
	}
	return recs, nil
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
