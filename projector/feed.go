package projector

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/esox-go/esox/eventstore"
)

// rawRecord is a feed row before decoding: the runner decodes only the types
// a projection handles, so an event no projection handles costs no decoding
// and an event that does not decode stops (or is parked by) only the
// projections that handle its type.
type rawRecord struct {
	pos      eventstore.Position
	id       uuid.UUID
	streamID string
	version  int64
	typ      string
	payload  []byte
	metadata []byte
	at       time.Time
}

// feedSQL is the store's gap-free feed query (see postgres.Store.ReadAll):
// only rows of transactions older than every running one, in
// (transaction_id, position) order, from after the checkpoint. It is an
// index range scan on the primary key, so its cost does not depend on how
// far behind the checkpoint is.
func feedSQL(events string) string {
	return `SELECT position, transaction_id::text AS transaction_id_text, event_id, stream_id, stream_version, event_type, payload, metadata, recorded_at
FROM ` + events + `
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position LIMIT $3`
}

// readFeed reads up to limit raw records after pos, outside any transaction.
func (r *Runner) readFeed(ctx context.Context, after eventstore.Position, limit int) ([]rawRecord, error) {
	args := []any{strconv.FormatUint(after.TransactionID, 10), after.Position, limit}
	var rows *sql.Rows
	var err error
	if st := r.feedStmt.Load(); st != nil {
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = r.db.QueryContext(ctx, r.feedSQL, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("read feed: %w", err)
	}
	defer rows.Close()
	out := make([]rawRecord, 0, min(limit, 1024))
	for rows.Next() {
		var rr rawRecord
		var txid string
		if err := rows.Scan(&rr.pos.Position, &txid, &rr.id, &rr.streamID, &rr.version, &rr.typ, &rr.payload, &rr.metadata, &rr.at); err != nil {
			return nil, fmt.Errorf("read feed: %w", err)
		}
		if rr.pos.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			return nil, fmt.Errorf("read feed: parse transaction id %q: %w", txid, err)
		}
		out = append(out, rr)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read feed: %w", err)
	}
	return out, nil
}

// decode turns rr into a Record, decoding its payload with reg.
func decode(reg *eventstore.Registry, rr rawRecord) (eventstore.Record, error) {
	rec := eventstore.Record{
		Position:      rr.pos,
		ID:            rr.id,
		StreamID:      rr.streamID,
		StreamVersion: rr.version,
		Type:          rr.typ,
		Payload:       json.RawMessage(rr.payload),
		RecordedAt:    rr.at,
	}
	if len(rr.metadata) > 2 {
		if err := json.Unmarshal(rr.metadata, &rec.Metadata); err != nil {
			return rec, recordError(rec, &eventstore.PayloadError{Type: rr.typ, Op: "decode", Err: fmt.Errorf("metadata: %w", err)})
		}
	}
	data, err := reg.Decode(rr.typ, rr.payload)
	if err != nil {
		return rec, recordError(rec, err)
	}
	rec.Data = data
	return rec, nil
}

// isTransient reports whether err is a database or network condition that
// goes away by itself (connection lost, server restarting, serialization
// failure, deadlock), as opposed to a handler's own failure.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		code := string(pe.Code)
		switch {
		case code == "40001" || code == "40P01": // serialization failure, deadlock
			return true
		case code == "57014": // query_canceled: a statement timeout is the handler's
			return false
		case len(code) >= 2 && (code[:2] == "08" || code[:2] == "53" || code[:2] == "57" || code[:2] == "58"):
			// connection exception, insufficient resources, operator
			// intervention (shutdown, crash), system error
			return true
		}
	}
	return false
}

// isUndefinedTable reports whether err is PostgreSQL's undefined_table
// (42P01), e.g. the projector's tables before the first Migrate.
func isUndefinedTable(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && string(pe.Code) == "42P01"
}
