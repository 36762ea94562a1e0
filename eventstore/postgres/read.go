package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"iter"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// queryRaw runs st and scans its rows into RawRecords. When streamID is
// empty the query returns stream_id as its last column; otherwise every row
// belongs to streamID. Driver errors are translated with op.
//
// The rows are scanned into one set of destinations, reused from row to
// row, and each record's payload and metadata are copied into shared
// chunks of memory (capped slices: appending to one does not touch the
// next), so a row costs few allocations beyond the driver's own.
func (s *Store) queryRaw(ctx context.Context, st *sqlx.Stmt, op, streamID string, capHint int, args ...any) ([]eventstore.RawRecord, error) {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	defer rows.Close()
	out := make([]eventstore.RawRecord, 0, capHint)
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
		row                                      rawRow
		chunk                                    []byte
		txid, id, typ, stream, payload, metadata sql.RawBytes
	)
	dest := []any{&row.position, &txid, &id, &row.streamVersion, &typ, &row.schemaVersion, &payload, &metadata, &row.recordedAt}
	if streamID == "" {
		dest = append(dest, &stream)
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return out, translate(ctx, op, err)
		}
		r := eventstore.RawRecord{
			Position:      eventstore.Position{Position: row.position},
			StreamID:      streamID,
			StreamVersion: row.streamVersion,
			Type:          intern(typ),
			SchemaVersion: int(row.schemaVersion),
			RecordedAt:    row.recordedAt,
		}
		if r.Position.TransactionID, err = parseUint(txid); err != nil {
			return out, translate(ctx, op, fmt.Errorf("transaction_id %q: %w", txid, err))
		}
		if r.ID, err = uuid.ParseBytes(id); err != nil {
			return out, translate(ctx, op, fmt.Errorf("event_id %q: %w", id, err))
		}
		if streamID == "" {
			r.StreamID = intern(stream)
		}
		r.Payload, chunk = copyInto(chunk, payload)
		r.Metadata, chunk = copyInto(chunk, metadata)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return out, translate(ctx, op, err)
	}
	return out, nil
}

// rawRow holds the columns of a row that queryRaw scans into Go values.
type rawRow struct {
	position, streamVersion, schemaVersion int64
	recordedAt                             time.Time
}

// readChunkSize is the size of the chunks of memory queryRaw copies
// payloads and metadata into; a larger value gets a chunk of its own.
const readChunkSize = 32 << 10

// copyInto returns a copy of b (nil for nil) in chunk's free capacity, or
// in a new chunk when it does not fit, capped at its length, and the chunk
// to copy into next.
func copyInto(chunk, b []byte) ([]byte, []byte) {
	if b == nil {
		return nil, chunk
	}
	if cap(chunk)-len(chunk) < len(b) {
		if len(b) > readChunkSize/4 {
			return append([]byte(nil), b...), chunk
		}
		chunk = make([]byte, 0, readChunkSize)
	}
	start := len(chunk)
	chunk = append(chunk, b...)
	return chunk[start:len(chunk):len(chunk)], chunk
}

// parseUint parses the decimal text of an xid8 without copying it into a
// string.
func parseUint(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, fmt.Errorf("not an unsigned integer")
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not an unsigned integer")
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("out of range")
		}
		n = n*10 + d
	}
	return n, nil
}

// decodeAll decrypts raws' personal fields (Registry.Decrypt) and decodes
// them into Records with the store's registry, upcast
// (RawRecord.AppendDecoded). When one does not decode, it returns the
// records before it and the typed error.
func (s *Store) decodeAll(ctx context.Context, op string, raws []eventstore.RawRecord) ([]eventstore.Record, error) {
	if err := s.reg.Decrypt(ctx, raws); err != nil {
		return nil, fmt.Errorf("eventstore/postgres: %s: %w", op, err)
	}
	out := make([]eventstore.Record, 0, len(raws))
	for _, raw := range raws {
		var err error
		if out, err = raw.AppendDecoded(out, s.reg); err != nil {
			return out, fmt.Errorf("eventstore/postgres: %s: %w", op, err)
		}
	}
	return out, nil
}

// ReadStream yields the records of streamID with StreamVersion >= from
// (from < 1 reads from the start), in version order: the stored events,
// each decrypted (eventstore.Registry.Decrypt), upcast and decoded into the
// registered types (eventstore.RawRecord.AppendDecoded). A stored event that upcasters split
// yields several records with its StreamVersion; one they drop yields
// none.
//
// An error (an *eventstore.InvalidStreamIDError, an
// *eventstore.UnknownEventTypeError, *eventstore.SchemaVersionError or
// *eventstore.PayloadError for a stored event that cannot be read, ctx's
// error, a database error) is yielded once as the last pair; records before
// it are yielded first. ctx bounds the whole iteration. Safe for concurrent
// use; each iteration queries afresh.
func (s *Store) ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return s.tracedReadStream(ctx, streamID, from, func(ctx context.Context) iter.Seq2[eventstore.Record, error] {
		return s.readStream(ctx, streamID, from)
	})
}

func (s *Store) readStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		var recs []eventstore.Record
		// emit decodes raw (decrypted) and yields what it reads as.
		emit := func(raw eventstore.RawRecord) bool {
			var err error
			if recs, err = raw.AppendDecoded(recs[:0], s.reg); err != nil {
				err = fmt.Errorf("eventstore/postgres: read stream: %w", err)
			}
			for _, rec := range recs {
				if !yield(rec, nil) {
					return false
				}
			}
			if err != nil {
				yield(eventstore.Record{}, err)
				return false
			}
			return true
		}
		s.rawStreamPages(ctx, streamID, from, func(page []eventstore.RawRecord, err error) bool {
			// One decryption stage per page (one key lookup for all its
			// subjects), as ReadAll does; when it fails, record by record,
			// so that the records before the one that fails are yielded.
			if len(page) > 0 && s.reg.Decrypt(ctx, page) != nil {
				for i := range page {
					if derr := s.reg.Decrypt(ctx, page[i:i+1]); derr != nil {
						yield(eventstore.Record{}, fmt.Errorf("eventstore/postgres: read stream: %w", derr))
						return false
					}
					if !emit(page[i]) {
						return false
					}
				}
			} else {
				for _, raw := range page {
					if !emit(raw) {
						return false
					}
				}
			}
			if err != nil {
				yield(eventstore.Record{}, err)
				return false
			}
			return true
		})
	}
}

// rawStreamPages reads the stored events of streamID with StreamVersion >=
// from (from < 1 reads from the start), in version order, as stored:
// RawRecords neither upcast nor decoded. It queries one page of
// Config.ReadStreamPageSize rows at a time, calls yield with each page, and
// holds no connection while yield runs, so a long stream never sits in
// memory and a slow consumer holds no database resources. The error that
// ends the read (an *eventstore.InvalidStreamIDError, ctx's error, a
// database error), if any, is the err of the last call, with the rows read
// before it (possibly none). It stops when yield returns false. A page is
// yield's to modify (decrypt) until it returns. ctx bounds the whole read.
func (s *Store) rawStreamPages(ctx context.Context, streamID string, from int64, yield func(page []eventstore.RawRecord, err error) bool) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		yield(nil, fmt.Errorf("eventstore/postgres: read stream: %w", err))
		return
	}
	from = max(from, 1)
	page := s.cfg.ReadStreamPageSize
	st, err := s.stmt(ctx, s.readStreamSQL)
	if err != nil {
		yield(nil, err)
		return
	}
	for {
		if err := ctx.Err(); err != nil {
			yield(nil, fmt.Errorf("eventstore/postgres: read stream: %w", err))
			return
		}
		// One row more than a page tells whether another page follows,
		// without a last query that returns nothing.
		raws, err := s.queryRaw(ctx, st, "read stream", streamID, page+1, streamID, from, page+1)
		more := len(raws) > page
		if more {
			from = raws[page].StreamVersion
			raws = raws[:page]
			err = nil // a failure after the page's rows fails the next page
		}
		if !yield(raws, err) || err != nil || !more {
			return
		}
	}
}

// ReadAll returns the records of up to limit stored events after the
// position after in the global feed, decrypted, upcast and decoded with the
// store's registry: ReadFeed, eventstore.Registry.Decrypt for the page (one
// key fetch at most), then eventstore.RawRecord.AppendDecoded for each
// stored event. A stored event that upcasters split returns several records
// (so the result may be longer than limit); one they drop returns none, and
// when a whole page reads as nothing, ReadAll reads the next one, until it
// has a record or the feed ends. A stored event that cannot be read returns
// an *eventstore.UnknownEventTypeError, *eventstore.SchemaVersionError or
// *eventstore.PayloadError and no records; other errors are ReadFeed's.
// Safe for concurrent use.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	for {
		raws, err := s.readFeed(ctx, "read all", after, limit)
		if err != nil {
			return nil, err
		}
		recs, err := s.decodeAll(ctx, "read all", raws)
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 || len(raws) < limit {
			return recs, nil
		}
		after = raws[len(raws)-1].Position // every event of the page was dropped
	}
}

// ReadFeed returns up to limit raw records after the position after in the
// global feed, ordered by (TransactionID, Position), without decoding their
// payloads. It is the one read of the feed in esox: ReadAll, the projector
// and the forwarder all call it.
//
// It reads only records whose transaction is older than every transaction
// still running (transaction_id < pg_snapshot_xmin(pg_current_snapshot())),
// so it never returns a record while one that sorts before it could still
// commit (guarantees 2 and 3 in docs/guarantees.md): resume from the last
// Position returned and nothing is missed. An open transaction holding a
// transaction id anywhere on the server holds the feed back until it ends.
// The query is an index range scan of the events table's primary key from
// after, so its cost does not depend on how far behind the reader is.
//
// Run it outside any transaction that has a transaction id; the store uses
// its pool and its prepared statement, and the read takes no transaction
// id. limit must be 1..eventstore.MaxReadAllLimit and after.Position not
// negative, else an *eventstore.InvalidArgumentError. ctx bounds the query;
// database errors are wrapped (classify them with IsTransient). Safe for
// concurrent use.
func (s *Store) ReadFeed(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RawRecord, error) {
	return s.readFeed(ctx, "read feed", after, limit)
}

func (s *Store) readFeed(ctx context.Context, op string, after eventstore.Position, limit int) ([]eventstore.RawRecord, error) {
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: %s: %w", op, &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	if after.Position < 0 {
		return nil, fmt.Errorf("eventstore/postgres: %s: %w", op, &eventstore.InvalidArgumentError{Field: "after", Reason: fmt.Sprintf("position must not be negative, got %d", after.Position)})
	}
	st, err := s.stmt(ctx, s.readAllSQL)
	if err != nil {
		return nil, err
	}
	return s.queryRaw(ctx, st, op, "", min(limit, 1024), strconv.FormatUint(after.TransactionID, 10), after.Position, limit)
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
