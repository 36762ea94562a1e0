package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

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

// BenchmarkVerify measures Store.Verify over a table of 100,000 events
// (1,000 streams of 100; ESOX_BENCH_EVENTS changes the count), target at
// least 100,000 events/s, against its read alone:
//
//   - verify: Store.Verify of every stream, which reads the events in
//     stream order in batches of 5,000 and recomputes every digest;
//   - raw: the same keyset query, same columns and batch size, prepared,
//     its rows scanned and nothing computed.
//
// It reports events/s per variant and the ratio verify/raw.
func BenchmarkVerify(b *testing.B) {
	n := benchEvents(b, 100_000)
	env := newBenchEnv(b, 1)
	ctx := context.Background()
	for s := 0; s < n/100; s++ {
		fillStream(b, env, fmt.Sprintf("verify-%d", s), 100)
	}
	raw, err := env.db.PreparexContext(ctx, `SELECT stream_id, stream_version, event_id, event_type, schema_version, payload::text, metadata::text, digest,
	transaction_id::text AS transaction_id_text, position FROM `+env.store.QualifiedEventsTable()+`
WHERE (stream_id, stream_version) > ($1, $2) ORDER BY stream_id, stream_version LIMIT $3`)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "raw", Variants: []benchkit.Variant{
		{Name: "verify", Run: func(r *benchkit.Round) error {
			for !r.Done() {
				res, err := env.store.Verify(ctx, nil)
				if err != nil {
					return err
				}
				if !res.OK() || res.Events != int64(n) {
					return fmt.Errorf("verify: %+v", res)
				}
				r.Add(res.Events)
			}
			return nil
		}},
		{Name: "raw", Run: func(r *benchkit.Round) error {
			for !r.Done() {
				stream, version, got := "", int64(0), 0
				for {
					rows, err := raw.QueryContext(ctx, stream, version, eventstore.VerifyBatchSizeDefault)
					if err != nil {
						return err
					}
					k := 0
					for rows.Next() {
						var (
							id, typ, txid      string
							sv, schemaVer, pos int64
							payload, meta, dig []byte
						)
						if err := rows.Scan(&stream, &sv, &id, &typ, &schemaVer, &payload, &meta, &dig, &txid, &pos); err != nil {
							rows.Close()
							return err
						}
						version = sv
						k++
					}
					if err := rows.Err(); err != nil {
						return err
					}
					got += k
					if k < eventstore.VerifyBatchSizeDefault {
						break
					}
				}
				if got != n {
					return fmt.Errorf("read %d events, want %d", got, n)
				}
				r.Add(int64(got))
			}
			return nil
		}},
	}})
}

// benchEvents returns ESOX_BENCH_EVENTS when set, else def.
func benchEvents(b *testing.B, def int) int {
	if v := os.Getenv("ESOX_BENCH_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			b.Fatalf("ESOX_BENCH_EVENTS=%q: want a number of at least 100", v)
		}
		return n / 100 * 100
	}
	return def
}

// ItemSold is ItemAdded with one personal field: the buyer's name,
// encrypted with the buyer's data key.
type ItemSold struct {
	SKU   string `json:"sku"`
	N     int    `json:"n"`
	Buyer string `json:"buyer" esox:"subject"`
	Name  string `json:"name" esox:"personal"`
}

// ItemSoldPlain is ItemSold without the personal tag: the same JSON,
// stored in the clear.
type ItemSoldPlain struct {
	SKU   string `json:"sku"`
	N     int    `json:"n"`
	Buyer string `json:"buyer"`
	Name  string `json:"name"`
}

// BenchmarkReadPersonal measures what decrypting one personal field per
// event costs a read (docs/compliance.md; target: at least 0.7× of the
// same events in the clear), in two sub-benchmarks:
//
//   - ReadStream: two streams of 1,000 events of the same shape, one of
//     ItemSold (its name encrypted; 10 buyers, so 10 data keys, cached after
//     the first read), one of ItemSoldPlain (the same JSON in the clear),
//     each read again and again;
//   - ReadAll: two stores, each on a table of 10,000 events in 100 streams,
//     of ItemSold with 1,000 buyers (1,000 data keys, cached) or of
//     ItemSoldPlain, read through the global feed in pages of 1,000.
//
// Each reports events/s for the variants encrypted and plaintext and the
// ratio encrypted/plaintext.
func BenchmarkReadPersonal(b *testing.B) {
	const n = 1000
	env := newBenchEnv(b, 1)
	ctx := context.Background()
	reg := env.store.Registry()
	eventstore.MustRegister[ItemSold](reg, "item_sold")
	eventstore.MustRegister[ItemSoldPlain](reg, "item_sold_plain")
	keys, err := postgres.NewKeyStore(env.db, postgres.KeyStoreConfig{Schema: env.schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := keys.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		b.Fatal(err)
	}
	sh, err := eventstore.NewShredder(keys, kek, eventstore.ShredderConfig{})
	if err != nil {
		b.Fatal(err)
	}
	reg.SetShredder(sh)
	for v := 0; v < n; v += 100 {
		enc, plain := make([]eventstore.Event, 100), make([]eventstore.Event, 100)
		for i := range enc {
			buyer := fmt.Sprintf("buyer-%d", (v+i)%10)
			enc[i] = eventstore.Event{Data: ItemSold{SKU: "sku", N: v + i, Buyer: buyer, Name: "Ada Lovelace"}}
			plain[i] = eventstore.Event{Data: ItemSoldPlain{SKU: "sku", N: v + i, Buyer: buyer, Name: "Ada Lovelace"}}
		}
		if _, err := env.store.Append(ctx, "sold-enc", eventstore.Exact(int64(v)), enc); err != nil {
			b.Fatal(err)
		}
		if _, err := env.store.Append(ctx, "sold-plain", eventstore.Exact(int64(v)), plain); err != nil {
			b.Fatal(err)
		}
	}
	read := func(stream string) func(r *benchkit.Round) error {
		return func(r *benchkit.Round) error {
			for !r.Done() {
				got := 0
				for rec, err := range env.store.ReadStream(ctx, stream, 1) {
					if err != nil {
						return err
					}
					switch d := rec.Data.(type) {
					case ItemSold:
						if d.Name != "Ada Lovelace" {
							return errors.New("not decrypted")
						}
					case ItemSoldPlain:
					default:
						return fmt.Errorf("unexpected %T", d)
					}
					got++
				}
				if got != n {
					return fmt.Errorf("read %d events, want %d", got, n)
				}
				r.Add(n)
			}
			return nil
		}
	}
	b.Run("ReadStream", func(b *testing.B) {
		benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "plaintext", Variants: []benchkit.Variant{
			{Name: "encrypted", Run: read("sold-enc")},
			{Name: "plaintext", Run: read("sold-plain")},
		}})
	})
	b.Run("ReadAll", func(b *testing.B) {
		// A store per variant, each table holding one kind of event only.
		feed := func(personal bool) func(r *benchkit.Round) error {
			fenv := newBenchEnv(b, 1)
			freg := fenv.store.Registry()
			eventstore.MustRegister[ItemSold](freg, "item_sold")
			eventstore.MustRegister[ItemSoldPlain](freg, "item_sold_plain")
			freg.SetShredder(sh)
			for s := 0; s < 100; s++ {
				evs := make([]eventstore.Event, 100)
				for i := range evs {
					buyer := fmt.Sprintf("buyer-%d", (s*100+i)%1000)
					if personal {
						evs[i] = eventstore.Event{Data: ItemSold{SKU: "sku", N: i, Buyer: buyer, Name: "Ada Lovelace"}}
					} else {
						evs[i] = eventstore.Event{Data: ItemSoldPlain{SKU: "sku", N: i, Buyer: buyer, Name: "Ada Lovelace"}}
					}
				}
				if _, err := fenv.store.Append(ctx, fmt.Sprintf("sold-%d", s), eventstore.NoStream, evs); err != nil {
					b.Fatal(err)
				}
			}
			var after eventstore.Position
			return func(r *benchkit.Round) error {
				for !r.Done() {
					recs, err := fenv.store.ReadAll(ctx, after, 1000)
					if err != nil {
						return err
					}
					if len(recs) == 0 {
						after = eventstore.Position{} // wrap around
						continue
					}
					if d, ok := recs[0].Data.(ItemSold); ok && d.Name != "Ada Lovelace" {
						return errors.New("not decrypted")
					}
					after = recs[len(recs)-1].Position
					r.Add(int64(len(recs)))
				}
				return nil
			}
		}
		benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "plaintext", Variants: []benchkit.Variant{
			{Name: "encrypted", Run: feed(true)},
			{Name: "plaintext", Run: feed(false)},
		}})
	})
}

// BenchmarkAppendChainAlternating is BenchmarkAppendChain interleaved op by
// op instead of round by round: each writer appends to a chained stream,
// then to an unchained one, then again, for ESOX_BENCH_SECONDS (20 s by
// default), so that a loaded, shared machine weighs on both alike at the
// scale of milliseconds (and each goes first half of the time). It reports
// the mean time of an append of each
// kind (chained-ms, unchained-ms) and their ratio as throughput
// (chained/unchained, the mean unchained time over the mean chained one).
func BenchmarkAppendChainAlternating(b *testing.B) {
	seconds := 20
	if v := os.Getenv("ESOX_BENCH_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("ESOX_BENCH_SECONDS=%q: want a positive number", v)
		}
		seconds = n
	}
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
				var (
					mu         sync.Mutex
					sum        [2]time.Duration
					count      [2]int
					firstError error
				)
				deadline := time.Now().Add(time.Duration(seconds) * time.Second)
				var wg sync.WaitGroup
				for w := range nw {
					wg.Go(func() {
						for i := 0; time.Now().Before(deadline); i++ {
							for j := range 2 {
								k := (i + j) % 2 // chained first on even i, second on odd
								s := []*postgres.Store{env.store, unchained}[k]
								stream, version := streamAt([]string{"chained", "unchained"}[k], w, i, events)
								t0 := time.Now()
								_, err := s.Append(ctx, stream, eventstore.Exact(version), evs)
								d := time.Since(t0)
								mu.Lock()
								if err != nil && firstError == nil {
									firstError = err
								}
								sum[k] += d
								count[k]++
								mu.Unlock()
								if err != nil {
									return
								}
							}
						}
					})
				}
				wg.Wait()
				if firstError != nil {
					b.Fatal(firstError)
				}
				mean := func(k int) float64 { return float64(sum[k]) / float64(count[k]) / float64(time.Millisecond) }
				b.ReportMetric(mean(0), "chained-ms")
				b.ReportMetric(mean(1), "unchained-ms")
				b.ReportMetric(mean(1)/mean(0), "chained/unchained")
				b.ReportMetric(float64(count[0]), "appends-each")
			})
		}
	}
}
