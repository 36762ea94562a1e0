package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/benchkit"
)

// BenchmarkAppendChain measures what the hash chain costs an append
// (docs/compliance.md; target: chained at least 0.9× unchained in every
// shape): events per commit (1 or 10) from writers goroutines (1 or 8),
// two variants interleaved on the same table, each writer to its own
// streams of 100 events with an exact expected version:
//
//   - chained: Store.Append of the default store, which computes each
//     event's digest in the append statement;
//   - unchained: Store.Append of a second store on the same table with
//     Config.DisableChain.
//
// It reports events/s per variant and the ratio chained/unchained.
func BenchmarkAppendChain(b *testing.B) {
	for _, events := range []int{1, 10} {
		for _, nw := range []int{1, 8} {
			b.Run(fmt.Sprintf("events=%d/writers=%d", events, nw), func(b *testing.B) {
				env := newBenchEnv(b, nw)
				unchained, err := postgres.New(env.db, testRegistry(), postgres.Config{Schema: env.schema, DisableChain: true, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = unchained.Close() })
				ctx := context.Background()
				evs := items(events)
				appender := func(prefix string, s *postgres.Store) func(r *benchkit.Round) error {
					return writers(nw, events, func(w, i int) error {
						stream, version := streamAt(prefix, w, i, events)
						_, err := s.Append(ctx, stream, eventstore.Exact(version), evs)
						return err
					})
				}
				benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "unchained", Variants: []benchkit.Variant{
					{Name: "chained", Run: appender("chained", env.store)},
					{Name: "unchained", Run: appender("unchained", unchained)},
				}})
			})
		}
	}
}
