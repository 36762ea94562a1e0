package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/telemetry"
)

func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }

// TestOptionsOverflow: past MaxCachedOptions keys, measurements share the
// overflow key's attributes instead of growing the series without bound.
func TestOptionsOverflow(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	c := telemetry.Int64Counter(rec.MeterProvider.Meter("test"), "c")
	opts := telemetry.NewOptions(telemetry.Overflow, func(k string) attribute.Set { return attribute.NewSet(attribute.String("k", k)) })
	ctx := context.Background()
	for i := range telemetry.MaxCachedOptions + 5 {
		c.Add(ctx, 1, opts.Get(fmt.Sprint(i)))
	}
	c.Add(ctx, 1, opts.Get("0")) // cached before the limit: its own series
	if got := rec.Value(t, "c", attribute.String("k", telemetry.Overflow)); got != 5 {
		t.Errorf("overflow series = %v, want the 5 keys past the limit", got)
	}
	if got := rec.Value(t, "c", attribute.String("k", "0")); got != 2 {
		t.Errorf("series of key 0 = %v, want 2", got)
	}
	if got := rec.Value(t, "c", attribute.String("k", fmt.Sprint(telemetry.MaxCachedOptions-1))); got != 1 {
		t.Errorf("series of the last key under the limit = %v, want 1", got)
	}
}

func raw(pos int64, at time.Time) eventstore.RawRecord {
	return eventstore.RawRecord{Position: eventstore.Position{TransactionID: 1, Position: pos}, RecordedAt: at}
}

// TestProgress: a read that returns records makes the reader behind, with
// the first record's age as lag and the positions as backlog (the head when
// it is further); an empty read makes it caught up: lag and backlog 0.
func TestProgress(t *testing.T) {
	t.Parallel()
	var p telemetry.Progress
	if p.State().Known {
		t.Fatal("a new Progress knows something")
	}
	now := time.Now()
	after := eventstore.Position{TransactionID: 1, Position: 10}
	p.Read(after, []eventstore.RawRecord{raw(11, now.Add(-3*time.Second)), raw(12, now.Add(-time.Second))}, 2)
	s := p.State()
	if !s.Behind() || !s.Full || s.Done != after || s.ReadEnd.Position != 12 {
		t.Fatalf("after a full read: %+v", s)
	}
	if got := s.Lag(now); got != 3*time.Second {
		t.Errorf("lag %v, want the first record's age, 3s", got)
	}
	if got := s.Backlog(eventstore.Position{}); got != 2 {
		t.Errorf("backlog without a head %d, want 2", got)
	}
	if got := s.Backlog(eventstore.Position{TransactionID: 5, Position: 50}); got != 40 {
		t.Errorf("backlog with head 50 %d, want 40", got)
	}
	p.Read(eventstore.Position{TransactionID: 1, Position: 12}, nil, 2)
	s = p.State()
	if s.Behind() || s.Full || s.Lag(now) != 0 || s.Backlog(eventstore.Position{TransactionID: 5, Position: 50}) != 0 || s.Done.Position != 12 {
		t.Errorf("after an empty read: %+v, lag %v", s, s.Lag(now))
	}
}

// TestHead: the head is loaded only when asked to refresh, at most once
// per Every; a failed load keeps the last value.
func TestHead(t *testing.T) {
	t.Parallel()
	var loads atomic.Int64
	var fail atomic.Bool
	h := &telemetry.Head{Every: time.Hour, Load: func(context.Context) (eventstore.Position, error) {
		n := loads.Add(1)
		if fail.Load() {
			return eventstore.Position{}, errors.New("down")
		}
		return eventstore.Position{TransactionID: 1, Position: n * 10}, nil
	}}
	ctx := context.Background()
	if got := h.Get(ctx, false); !got.IsZero() || loads.Load() != 0 {
		t.Fatalf("Get without refresh loaded (%d) or returned %v", loads.Load(), got)
	}
	if got := h.Get(ctx, true); got.Position != 10 {
		t.Fatalf("first refresh: %v", got)
	}
	for range 5 {
		h.Get(ctx, true)
	}
	if loads.Load() != 1 {
		t.Errorf("%d loads within Every, want 1", loads.Load())
	}
	fail.Store(true)
	h2 := &telemetry.Head{Every: time.Nanosecond, Load: h.Load}
	if got := h2.Get(ctx, true); !got.IsZero() {
		t.Errorf("a failed first load returned %v", got)
	}
}

// TestLeadership: wrapped work leads while it runs; acquiring and releasing
// make a span each and count in esox.leader.changes; a failed leadership's
// release span is an error.
func TestLeadership(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	l := telemetry.NewLeadership(rec.TracerProvider.Tracer("t"), rec.MeterProvider.Meter("t"), "forwarder", "esox:forwarder:s:g", attribute.String("g", "x"))
	var during bool
	boom := errors.New("boom")
	err := l.Wrap(func(context.Context) error {
		during = l.Leading()
		return boom
	})(context.Background())
	if !errors.Is(err, boom) || !during || l.Leading() {
		t.Fatalf("Wrap returned %v, leading during %v, after %v", err, during, l.Leading())
	}
	for _, change := range []string{telemetry.LeaderAcquired, telemetry.LeaderReleased} {
		if got := rec.Value(t, "esox.leader.changes", attribute.String("g", "x"), telemetry.KeyLeaderJob.String("forwarder"), telemetry.KeyLeaderChange.String(change)); got != 1 {
			t.Errorf("%s counted %v times, want 1", change, got)
		}
	}
	rec.One(t, "acquire leadership")
	if s := rec.One(t, "release leadership"); s.Status.Code != codes.Error {
		t.Errorf("release span of a failed leadership: status %v", s.Status)
	}
}
