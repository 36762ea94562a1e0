package telemetry

import (
	"context"
	"sync"
	"time"

	"github.com/esox-go/esox/eventstore"
)

// Progress is what a reader of the global feed (a projection worker, a
// forwarder) knows of its own lag, kept in memory from the reads it makes
// anyway, so that reporting its lag costs no query. Safe for concurrent
// use; the zero value knows nothing yet.
type Progress struct {
	mu sync.Mutex
	s  ProgressState
}

// ProgressState is a Progress at one moment.
type ProgressState struct {
	// Known is false before the first read.
	Known bool
	// Done is the position after which the last read started: every record
	// up to it is handled (a checkpoint, an offset).
	Done eventstore.Position
	// ReadEnd is the last position the last read returned (Done when it
	// returned nothing).
	ReadEnd eventstore.Position
	// Full reports that the last read returned as many records as it asked
	// for: more may follow ReadEnd.
	Full bool
	// PendingSince is when the oldest record read but not yet handled was
	// recorded (the database's clock); zero when the last read returned
	// nothing, i.e. the reader had caught up.
	PendingSince time.Time
}

// Read records a read of the feed after the position after that asked for
// limit records and returned raws. Call it after every successful read,
// before handling the records.
func (p *Progress) Read(after eventstore.Position, raws []eventstore.RawRecord, limit int) {
	s := ProgressState{Known: true, Done: after, ReadEnd: after, Full: len(raws) >= limit}
	if len(raws) > 0 {
		s.ReadEnd = raws[len(raws)-1].Position
		s.PendingSince = raws[0].RecordedAt
	}
	p.mu.Lock()
	p.s = s
	p.mu.Unlock()
}

// State returns the progress now.
func (p *Progress) State() ProgressState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s
}

// Behind reports whether the last read returned records: the reader has
// work in hand or more to read.
func (s ProgressState) Behind() bool { return s.Known && !s.PendingSince.IsZero() }

// Backlog approximates the records after Done, given the feed's head (the
// zero Position when unknown): the difference of positions, as
// projector.ProjectionStatus.LagEvents does, never negative.
func (s ProgressState) Backlog(head eventstore.Position) int64 {
	end := s.ReadEnd.Position
	if s.Behind() {
		end = max(end, head.Position)
	}
	return max(end-s.Done.Position, 0)
}

// Lag is the age at now of the oldest record not yet handled: 0 when the
// reader had caught up at its last read.
func (s ProgressState) Lag(now time.Time) time.Duration {
	if !s.Behind() {
		return 0
	}
	return max(now.Sub(s.PendingSince), 0)
}

// HeadRefreshDefault is how often at most a Head queries the feed's head.
const HeadRefreshDefault = time.Second

// Head is the feed's head, read at most once per Every however often it is
// asked for, for the backlog gauges of readers that are behind (a reader
// that has caught up knows its backlog is 0 without it). Safe for
// concurrent use.
type Head struct {
	// Load reads the head (postgres.Store.Head).
	Load func(context.Context) (eventstore.Position, error)
	// Every is the shortest time between two loads; 0 means
	// HeadRefreshDefault.
	Every time.Duration
	// Timeout bounds one load; 0 means one second.
	Timeout time.Duration

	mu  sync.Mutex
	pos eventstore.Position
	at  time.Time
}

// Get returns the head, loading it first when refresh is true and the last
// load is older than Every. A failed load leaves the last value (the zero
// Position at first); ctx bounds the load.
func (h *Head) Get(ctx context.Context, refresh bool) eventstore.Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	every := h.Every
	if every == 0 {
		every = HeadRefreshDefault
	}
	if !refresh || time.Since(h.at) < every {
		return h.pos
	}
	timeout := h.Timeout
	if timeout == 0 {
		timeout = time.Second
	}
	h.at = time.Now()
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if pos, err := h.Load(lctx); err == nil {
		h.pos = pos
	}
	return h.pos
}
