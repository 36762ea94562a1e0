package postgres

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/benchkit"
)

// BenchmarkAppendTelemetryCPU measures the client's CPU that observing an
// append costs, without the database: what Append does besides its round
// trip — encoding the event (with the trace context when there is a span),
// starting and ending the append span, recording the metrics — in a loop
// on one goroutine, for the same variants as BenchmarkAppendTelemetry (off,
// noop, sdk). The rates give the CPU time per append (1/rate).
func BenchmarkAppendTelemetryCPU(b *testing.B) {
	reg := eventstore.NewRegistry()
	type itemAdded struct {
		SKU string `json:"sku"`
		N   int    `json:"n"`
	}
	eventstore.MustRegister[itemAdded](reg, "item_added")
	events := []eventstore.Event{{Data: itemAdded{SKU: "sku", N: 1}}}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	cfg := Config{}.withDefaults()
	variant := func(name string, tel *storeTelemetry) benchkit.Variant {
		s := &Store{reg: reg, tel: tel, cfg: cfg}
		res := eventstore.AppendResult{StreamID: "order-1", LastVersion: 4, LastPosition: eventstore.Position{TransactionID: 99, Position: 1234}}
		return benchkit.Variant{Name: name, Run: func(r *benchkit.Round) error {
			for !r.Done() {
				for range 100 {
					ctx, op := s.startAppend(context.Background(), "order-1", eventstore.Exact(3), events)
					if _, err := eventstore.EncodeAppend(ctx, reg, "order-1", eventstore.Exact(3), events, s.encodeOpts()); err != nil {
						return err
					}
					_, _ = op.end(ctx, reg, res, nil)
				}
				r.Add(100)
			}
			return nil
		}}
	}
	sdkCfg := cfg
	sdkCfg.TracerProvider, sdkCfg.MeterProvider = tp, mp
	benchkit.Run(b, benchkit.Measure{Unit: "appends/s", Baseline: "off", Variants: []benchkit.Variant{
		variant("noop", newStoreTelemetry(cfg)), variant("off", nil), variant("sdk", newStoreTelemetry(sdkCfg)),
	}})
}
