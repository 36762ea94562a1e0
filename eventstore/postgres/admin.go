package postgres

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// This file holds the store's reads for operators (the esox command, an
// admin endpoint): they return raw records, payloads as stored, and need no
// registered event types.

// Defaults of the operator reads.
const (
	// ListStreamsLimitDefault is the page size of ListStreams when
	// ListStreamsParams.Limit is zero.
	ListStreamsLimitDefault = 100
	// FollowBatchSizeDefault is FollowFeedOpts.BatchSize's default.
	FollowBatchSizeDefault = 100
	// FollowPollIntervalDefault is FollowFeedOpts.PollInterval's default.
	FollowPollIntervalDefault = 500 * time.Millisecond
)

// StreamSummary describes one stream, as ListStreams returns it.
type StreamSummary struct {
	// StreamID is the stream's ID.
	StreamID string
	// Version is the stream's current version: its number of events.
	Version int64
	// LastRecordedAt is when the stream's last event was appended.
	LastRecordedAt time.Time
}

// ListStreamsParams selects the streams ListStreams returns.
type ListStreamsParams struct {
	// Category, when not empty, lists only the streams of that category
	// (eventstore.Category of their ID: the part before the first '-'). It
	// must not contain '-'.
	Category string
	// After lists the streams whose ID sorts after it (in the events
	// table's collation): pass the last StreamID of a page to get the next.
	// Empty starts at the first stream.
	After string
	// Limit is the most streams returned. Defaults to
	// ListStreamsLimitDefault; at most eventstore.MaxReadAllLimit.
	Limit int
}

// ListStreams returns the streams that have events, ordered by stream ID,
// with each one's version and the time of its last event, one page at a
// time (see ListStreamsParams). A page shorter than its Limit is the last.
//
// It skips from stream to stream along the index on (stream_id,
// stream_version), so its cost grows with the streams it returns, not with
// their events. With a Category it reads the category's streams only when
// the column's collation orders by bytes (C, or C.UTF-8), as PostgreSQL can
// then turn the prefix into an index range; under other collations it
// walks the streams before the category's end too, so it is slower, not
// wrong. It reads committed events, whether or not the global feed shows
// them yet.
//
// Errors: an *eventstore.InvalidArgumentError for a Category with '-' or a
// Limit out of range; database errors wrapped. ctx bounds the query. Safe
// for concurrent use.
func (s *Store) ListStreams(ctx context.Context, p ListStreamsParams) ([]StreamSummary, error) {
	if p.Limit == 0 {
		p.Limit = ListStreamsLimitDefault
	}
	if p.Limit < 1 || p.Limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: list streams: %w", &eventstore.InvalidArgumentError{Field: "Limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, p.Limit)})
	}
	if strings.Contains(p.Category, "-") {
		return nil, fmt.Errorf("eventstore/postgres: list streams: %w", &eventstore.InvalidArgumentError{Field: "Category", Reason: fmt.Sprintf("%q: a category is the part of a stream ID before its first '-', so it contains none", p.Category)})
	}
	// next finds the first stream ID after %s; with a category, among that
	// category's (the LIKE prefix lets a C-collated index bound the scan).
	next := `SELECT stream_id FROM ` + s.events + ` WHERE stream_id > %s ORDER BY stream_id LIMIT 1`
	args := []any{p.After, p.Limit}
	if p.Category != "" {
		next = `SELECT stream_id FROM ` + s.events + ` WHERE stream_id > %s AND stream_id LIKE $3
		AND (stream_id = $4 OR stream_id LIKE $5) ORDER BY stream_id LIMIT 1`
		prefix := likeEscape(p.Category)
		args = append(args, prefix+"%", p.Category, prefix+"-%")
	}
	query := `WITH RECURSIVE s(stream_id) AS (
	(` + fmt.Sprintf(next, "$1") + `)
	UNION ALL
	SELECT (` + fmt.Sprintf(next, "s.stream_id") + `) FROM s WHERE s.stream_id IS NOT NULL
)
SELECT s.stream_id, last.stream_version, last.recorded_at FROM s
CROSS JOIN LATERAL (SELECT stream_version, recorded_at FROM ` + s.events + `
	WHERE stream_id = s.stream_id ORDER BY stream_version DESC LIMIT 1) AS last
WHERE s.stream_id IS NOT NULL
LIMIT $2`
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, translate(ctx, "list streams", err)
	}
	defer rows.Close()
	var out []StreamSummary
	for rows.Next() {
		var st StreamSummary
		if err := rows.Scan(&st.StreamID, &st.Version, &st.LastRecordedAt); err != nil {
			return nil, translate(ctx, "list streams", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(ctx, "list streams", err)
	}
	return out, nil
}

// likeEscape escapes LIKE's wildcards (and its escape character) in s.
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// ReadStreamRaw returns up to limit records of streamID with StreamVersion
// >= from (from < 1 reads from the start), in version order, without
// decoding them: payloads and metadata as stored, so no event type needs
// to be registered. A stream without events, or without events from
// from on, returns none (StreamInfo tells which).
//
// Errors: an *eventstore.InvalidStreamIDError for a bad ID, an
// *eventstore.InvalidArgumentError for a limit outside
// 1..eventstore.MaxReadAllLimit; database errors wrapped. ctx bounds the
// query. Safe for concurrent use.
func (s *Store) ReadStreamRaw(ctx context.Context, streamID string, from int64, limit int) ([]eventstore.RawRecord, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return nil, fmt.Errorf("eventstore/postgres: read stream: %w", err)
	}
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: read stream: %w", &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	st, err := s.stmt(ctx, s.readStreamSQL)
	if err != nil {
		return nil, err
	}
	return s.queryRaw(ctx, st, "read stream", streamID, min(limit, 1024), streamID, max(from, 1), limit)
}

// LookupRawEvents is LookupEvents without decoding: the stored events with
// the given IDs, payloads and metadata as stored, in the order of ids; IDs
// that are not stored are left out, and an ID given twice is returned
// once. No event type needs to be registered. It reads committed events,
// whether or not the global feed shows them yet.
//
// Errors: an *eventstore.InvalidArgumentError for more than
// eventstore.MaxReadAllLimit IDs; database errors wrapped. ctx bounds the
// query. Safe for concurrent use.
func (s *Store) LookupRawEvents(ctx context.Context, ids []uuid.UUID) ([]eventstore.RawRecord, error) {
	if len(ids) > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: look up events: %w", &eventstore.InvalidArgumentError{Field: "ids", Reason: fmt.Sprintf("at most %d, got %d", eventstore.MaxReadAllLimit, len(ids))})
	}
	if len(ids) == 0 {
		return nil, nil
	}
	st, err := s.stmt(ctx, s.lookupSQL)
	if err != nil {
		return nil, err
	}
	raws, err := s.queryRaw(ctx, st, "look up events", "", len(ids), uuidArray(ids))
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]eventstore.RawRecord, len(raws))
	for _, r := range raws {
		byID[r.ID] = r
	}
	out := make([]eventstore.RawRecord, 0, len(raws))
	for _, id := range ids {
		if r, ok := byID[id]; ok {
			out = append(out, r)
			delete(byID, id)
		}
	}
	return out, nil
}

// FollowFeedOpts tunes FollowFeed. nil means all defaults.
type FollowFeedOpts struct {
	// BatchSize is the most records read per query. Defaults to
	// FollowBatchSizeDefault; at most eventstore.MaxReadAllLimit.
	BatchSize int
	// PollInterval is how long FollowFeed waits after finding nothing new
	// before it reads again; appends through this Store wake it at once.
	// Defaults to FollowPollIntervalDefault.
	PollInterval time.Duration
}

// FollowFeed yields the global feed's raw records after the position
// after, in feed order, and then every record as it becomes readable,
// until ctx is done: the feed followed live, as "tail -f" follows a file.
// It reads with ReadFeed (so it never skips an event that commits later
// with a smaller position), batch after batch; once caught up it waits
// opts.PollInterval, or less when an append through this Store wakes it,
// and reads again. Each wait is one read-only query: it takes no
// transaction id and holds no connection while waiting or yielding.
//
// The iteration ends without an error when ctx is done (check ctx.Err())
// or when the loop body breaks. A read error (ReadFeed's) is yielded once
// as the last pair; resume after the last record yielded. Bad opts yield
// an *eventstore.InvalidArgumentError. Safe for concurrent use; each
// iteration follows afresh.
func (s *Store) FollowFeed(ctx context.Context, after eventstore.Position, opts *FollowFeedOpts) iter.Seq2[eventstore.RawRecord, error] {
	var o FollowFeedOpts
	if opts != nil {
		o = *opts
	}
	if o.BatchSize == 0 {
		o.BatchSize = FollowBatchSizeDefault
	}
	if o.PollInterval == 0 {
		o.PollInterval = FollowPollIntervalDefault
	}
	return func(yield func(eventstore.RawRecord, error) bool) {
		if o.PollInterval < 0 {
			yield(eventstore.RawRecord{}, fmt.Errorf("eventstore/postgres: follow feed: %w", &eventstore.InvalidArgumentError{Field: "PollInterval", Reason: "must not be negative"}))
			return
		}
		wake, unsubscribe := s.Subscribe()
		defer unsubscribe()
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			if ctx.Err() != nil {
				return
			}
			recs, err := s.ReadFeed(ctx, after, o.BatchSize)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				yield(eventstore.RawRecord{}, err) // ReadFeed's, which says where it failed
				return
			}
			for _, r := range recs {
				if !yield(r, nil) {
					return
				}
				after = r.Position
			}
			if len(recs) == o.BatchSize {
				continue // more may be readable at once
			}
			timer.Reset(o.PollInterval)
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-timer.C:
			}
		}
	}
}
