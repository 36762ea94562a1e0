package forwarder

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// pollBackoff is the watermill-sql BackoffManager of a leading Forwarder. The
// Subscriber calls HandleError after every poll, from its one consume
// goroutine.
//
// After an empty poll it blocks until the store signals an append made
// through it, PollInterval passes or the leadership ends, and returns 0: so
// an append in this process reaches the broker at once, others within one
// PollInterval. After a failed query it backs off exponentially. A
// *MalformedRowError is fatal: it is handed to the Forwarder, which stops.
type pollBackoff struct {
	ctx   context.Context
	wake  <-chan struct{}
	poll  time.Duration
	retry time.Duration
	max   time.Duration
	log   *slog.Logger

	failures int
	fatalCh  chan error
}

// fatal returns the channel that receives a fatal query error, once.
func (b *pollBackoff) fatal() <-chan error { return b.fatalCh }

// HandleError implements wsql.BackoffManager.
func (b *pollBackoff) HandleError(_ watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if err != nil {
		if b.ctx.Err() != nil {
			// Stopping: the Subscriber sees ctx done next. A failed poll
			// is expected then (its query is cancelled), but the final
			// offset write is detached from ctx: its failure means the
			// events just published are published again by the next
			// leader, which deserves a word.
			var ow *offsetWriteError
			if errors.As(err, &ow) && !errors.Is(err, context.Canceled) {
				b.log.WarnContext(b.ctx, "recording the offset of the events published before stopping failed; the next leader publishes them again", "error", err.Error())
			}
			return 0
		}
		var bad *MalformedRowError
		if errors.As(err, &bad) {
			select {
			case b.fatalCh <- bad:
			default:
			}
			return b.max
		}
		wait := b.retry << min(b.failures, 30)
		if wait <= 0 || wait > b.max {
			wait = b.max
		}
		b.failures++
		b.log.WarnContext(b.ctx, "polling the events table or writing the offset failed; retrying", "error", err.Error(), "retry_in", wait, "failures", b.failures)
		return wait
	}
	b.failures = 0
	if !noMsg {
		return 0
	}
	t := time.NewTimer(b.poll)
	defer t.Stop()
	select {
	case <-b.ctx.Done():
	case <-b.wake:
	case <-t.C:
	}
	return 0
}
