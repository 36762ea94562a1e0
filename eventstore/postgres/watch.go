package postgres

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esox-go/esox/eventstore"
)

// WatchPollIntervalDefault is the poll interval of a Watch subscription
// given a zero or negative interval.
const WatchPollIntervalDefault = 10 * time.Millisecond

// hub holds a Store's subscriptions (Subscribe and Watch) and its feed
// watcher: the one goroutine that polls the feed's head while at least one
// Watch subscription is open.
type hub struct {
	mu     sync.Mutex
	subs   map[int]*subscription
	nextID int
	w      *watcher // the running watcher; nil while no Watch subscription is open
	head   eventstore.Position
	seen   bool // head holds the running watcher's last poll

	running atomic.Int32 // watcher goroutines started and not yet returned (tests)
}

type subscription struct {
	ch chan struct{} // buffer 1
	// interval is the subscription's poll interval; 0 for Subscribe, which
	// does not make the store poll.
	interval time.Duration
}

type watcher struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when its goroutine has returned
	poke   chan struct{} // buffer 1: the shortest poll interval changed
}

// Subscribe returns a channel that receives after each Append through this
// Store commits, and a cancel func that unsubscribes (safe to call more than
// once; the channel is not closed). The channel has a buffer of 1 and a send
// never blocks the appender: wake-ups coalesce while the reader is busy, so
// after receiving, read until ReadAll returns nothing new.
//
// A Subscribe subscription makes the store poll nothing: appends by
// AppendTx, by other Stores or other processes wake it only while a Watch
// subscription of the same Store is open (its polls wake every
// subscriber). To be woken by those, use Watch. Safe for concurrent use.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	return s.subscribe(0, nil)
}

// Watch returns a channel that receives when the feed may have new records
// for a reader, and a cancel func that ends the subscription: after each
// Append through this Store commits (as with Subscribe), and whenever the
// store's feed watcher sees the feed's head (Head) move, which covers
// AppendTx, other Stores and other processes.
//
// While at least one Watch subscription is open, the Store runs one watcher
// goroutine that calls Head every pollInterval (the shortest interval among
// the open subscriptions; zero or negative means WatchPollIntervalDefault):
// one read-only index lookup that takes no transaction id, however many
// subscribers wait. A poll that finds the head moved wakes every
// subscriber, each of which then reads its own batch; a poll that finds
// nothing new wakes nobody. The head moves exactly when records become
// visible to ReadFeed (guarantee 2 in docs/guarantees.md: a record becomes
// visible only after every record that sorts before it), so a reader that
// reads after each wake-up until ReadFeed returns nothing new misses
// nothing, and one woken by a commit in another process reads it within
// about one pollInterval (plus the query).
//
// The channel has a buffer of 1; sends never block, and wake-ups coalesce
// while the reader is busy: read until ReadFeed returns nothing new, then
// wait again. Subscribe before the first read, so that nothing committed
// between the read and the wait is missed.
//
// The watcher is started by the first open Watch subscription and stopped
// by the cancel of the last one, which returns only once the watcher's
// goroutine has exited: the subscriptions own it. Its queries run with
// ctx's values but not its cancellation. The subscription ends when cancel
// is called or ctx is done, whichever comes first; call cancel in any case
// (it is safe to call more than once and from several goroutines; every
// call returns once the subscription has ended). Poll errors are logged
// (at Warn for the first and every tenth in a row) and the watcher goes on
// polling; a closed Store stops it. Safe for concurrent use.
func (s *Store) Watch(ctx context.Context, pollInterval time.Duration) (<-chan struct{}, func()) {
	if pollInterval <= 0 {
		pollInterval = WatchPollIntervalDefault
	}
	ch, cancel := s.subscribe(pollInterval, func() context.Context { return ctx })
	stop := context.AfterFunc(ctx, cancel)
	return ch, func() {
		stop()
		cancel()
	}
}

// subscribe registers a subscription with poll interval (0: none) and
// returns its channel and its cancel func. When interval is positive,
// valuesOf returns the context whose values a watcher it starts uses.
func (s *Store) subscribe(interval time.Duration, valuesOf func() context.Context) (<-chan struct{}, func()) {
	h := &s.hub
	sub := &subscription{ch: make(chan struct{}, 1), interval: interval}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[int]*subscription{}
	}
	id := h.nextID
	h.nextID++
	shortest := h.shortestLocked()
	h.subs[id] = sub
	var start *watcher
	var wctx context.Context
	switch {
	case interval <= 0:
	case h.w == nil:
		var cancel context.CancelFunc
		wctx, cancel = context.WithCancel(context.WithoutCancel(valuesOf()))
		start = &watcher{cancel: cancel, done: make(chan struct{}), poke: make(chan struct{}, 1)}
		h.w, h.seen = start, false
	case interval < shortest:
		select {
		case h.w.poke <- struct{}{}:
		default:
		}
	}
	h.mu.Unlock()
	if start != nil {
		h.running.Add(1)
		go s.watch(wctx, start)
	}
	var once sync.Once
	return sub.ch, func() {
		// Do returns to every caller only once the first call is done, so
		// no cancel returns before the watcher it stops has exited.
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, id)
			var stop *watcher
			if h.w != nil && h.shortestLocked() == 0 {
				stop, h.w = h.w, nil
			}
			h.mu.Unlock()
			if stop != nil {
				stop.cancel()
				<-stop.done
			}
		})
	}
}

// shortestLocked returns the shortest poll interval among the open Watch
// subscriptions, 0 when there is none. h.mu must be held.
func (h *hub) shortestLocked() time.Duration {
	var d time.Duration
	for _, sub := range h.subs {
		if sub.interval > 0 && (d == 0 || sub.interval < d) {
			d = sub.interval
		}
	}
	return d
}

// wake signals every subscriber without blocking.
func (s *Store) wake() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.wakeLocked()
}

func (h *hub) wakeLocked() {
	for _, sub := range h.subs {
		select {
		case sub.ch <- struct{}{}:
		default:
		}
	}
}

// observe records head, seen by w's poll, and wakes every subscriber when
// it differs from w's previous poll (or w has not polled before: a reader
// may have read before the head it knows). It reports false when w is no
// longer the running watcher.
func (h *hub) observe(w *watcher, head eventstore.Position) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.w != w {
		return false
	}
	if !h.seen || head != h.head {
		h.head, h.seen = head, true
		h.wakeLocked()
	}
	return true
}

// pollInterval returns the poll interval w must use now, and false when w
// is no longer the running watcher.
func (h *hub) pollInterval(w *watcher) (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.w != w {
		return 0, false
	}
	return h.shortestLocked(), true
}

func (s *Store) isClosed() bool {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	return s.closed
}

// watch is the feed watcher's goroutine: it polls Head every poll
// interval until ctx is done (the last Watch subscription ended) or the
// store is closed, and wakes the subscribers when the head moves.
func (s *Store) watch(ctx context.Context, w *watcher) {
	// done closes last: a cancel that waits for it returns only once the
	// watcher no longer counts as running.
	defer close(w.done)
	defer s.hub.running.Add(-1)
	s.log.DebugContext(ctx, "feed watcher started")
	defer s.log.DebugContext(ctx, "feed watcher stopped")
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	failures := 0
	for {
		d, ok := s.hub.pollInterval(w)
		if !ok {
			return
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
			return
		case <-w.poke:
			continue // the interval changed: wait the new one from now
		case <-t.C:
		}
		if s.isClosed() {
			return
		}
		head, err := s.Head(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			level := slog.LevelDebug
			if failures == 1 || failures%10 == 0 {
				level = slog.LevelWarn
			}
			s.log.Log(ctx, level, "feed watcher: polling the feed's head failed; retrying", "failures", failures, "error", err)
			continue
		}
		failures = 0
		if !s.hub.observe(w, head) {
			return
		}
	}
}
