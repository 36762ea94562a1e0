package aggregate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/esox-go/esox/eventstore"
)

// Retry runs fn, and runs it again after a concurrency conflict, with the
// Repository's retry policy: up to Config.MaxRetries more times, waiting
// between attempts as Update does (Config.RetryBackoff, doubling up to
// Config.MaxRetryBackoff, with jitter). It is Update's retry loop for work
// that Update cannot do alone: a transaction of the caller that saves
// aggregates with the Tx forms and writes other rows. A conflict inside a
// transaction cannot be retried inside it, so fn runs the whole
// transaction — begin, UpdateTx (or Load and SaveTx), the other writes,
// commit — and returns the conflict after rolling back:
//
//	err := orders.Retry(ctx, func(ctx context.Context) error {
//		tx, err := db.BeginTxx(ctx, nil)
//		if err != nil {
//			return err
//		}
//		defer tx.Rollback()
//		if _, err := orders.UpdateTx(ctx, tx, id, pay); err != nil {
//			return err
//		}
//		// … other writes in tx …
//		return tx.Commit()
//	})
//
// fn is retried when its error matches eventstore.ErrConcurrencyConflict,
// except an *AlreadyExistsError (ErrAlreadyExists), which another attempt
// would meet again; any other error, and nil, is returned as is. fn must
// therefore leave no effects behind when it fails, which a rolled-back
// transaction guarantees. When every attempt conflicts, Retry gives up
// with an error that wraps the last conflict and names Config.MaxRetries;
// with Config.DisableRetries, fn runs once.
//
// ctx is passed to fn and bounds the waits: when it ends during one, Retry
// returns ctx's error, wrapping the last conflict too. Retry is safe for
// concurrent use.
func (r *Repository[T]) Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	return r.retry(ctx, "retry", func(ctx context.Context) (bool, error) {
		err := fn(ctx)
		return errors.Is(err, eventstore.ErrConcurrencyConflict) && !errors.Is(err, ErrAlreadyExists), err
	})
}

// retry runs attempt until it succeeds, fails with an error it does not
// call retryable, or has run 1+MaxRetries times, waiting between attempts.
// what names the operation in the errors.
func (r *Repository[T]) retry(ctx context.Context, what string, attempt func(context.Context) (retryable bool, err error)) error {
	attempts := 1 + r.cfg.MaxRetries
	if r.cfg.DisableRetries {
		attempts = 1
	}
	for n := 1; ; n++ {
		retryable, err := attempt(ctx)
		if err == nil || !retryable {
			return err
		}
		if r.cfg.DisableRetries {
			return fmt.Errorf("aggregate: %s: not retried (aggregate.Config.DisableRetries is set): %w", what, err)
		}
		if n == attempts {
			return fmt.Errorf("aggregate: %s: gave up after %d attempts, each a concurrency conflict (raise aggregate.Config.MaxRetries for an aggregate this busy): %w", what, attempts, err)
		}
		d := r.backoff(n)
		noteRetry(ctx, n)
		r.logger.DebugContext(ctx, "concurrency conflict, retrying", "operation", what, "attempt", n, "wait", d, "error", err)
		if werr := wait(ctx, d); werr != nil {
			return fmt.Errorf("aggregate: %s: %w while waiting to retry (after %d attempts, the last: %w)", what, werr, n, err)
		}
	}
}

// backoff returns the wait after the retry-th failed attempt: a random
// duration between half and all of RetryBackoff·2^(retry-1), capped at
// MaxRetryBackoff.
func (r *Repository[T]) backoff(retry int) time.Duration {
	ceiling := r.cfg.MaxRetryBackoff
	if shift := retry - 1; shift < 62 {
		if d := r.cfg.RetryBackoff << shift; d>>shift == r.cfg.RetryBackoff && d < ceiling {
			ceiling = d
		}
	}
	half := ceiling / 2
	if ceiling-half <= 0 {
		return half
	}
	return half + rand.N(ceiling-half)
}

// wait returns after d, or with ctx's error when ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
