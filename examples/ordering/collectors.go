package main

import (
	"context"
	"strconv"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/httpapi"
	"github.com/esox-go/esox/examples/ordering/shipping"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// projectionCollector reports each projection's lag from Runner.Status.
func projectionCollector(r *projector.Runner) httpapi.Collector {
	return func(ctx context.Context, w *httpapi.MetricsWriter) error {
		st, err := r.Status(ctx)
		if err != nil {
			return err
		}
		w.Family("esox_projection_lag_events", "gauge", "Events of the feed not yet applied by the projection (approximate).")
		for _, s := range st {
			w.Sample("esox_projection_lag_events", float64(s.LagEvents), "projection", s.Name, "version", itoa(s.Version))
		}
		w.Family("esox_projection_lag_seconds", "gauge", "Age of the oldest event not yet applied by the projection.")
		for _, s := range st {
			w.Sample("esox_projection_lag_seconds", s.Lag.Seconds(), "projection", s.Name, "version", itoa(s.Version))
		}
		w.Family("esox_projection_checkpoint_position", "gauge", "Position of the last event the projection applied.")
		for _, s := range st {
			w.Sample("esox_projection_checkpoint_position", float64(s.Checkpoint.Position), "projection", s.Name, "version", itoa(s.Version))
		}
		w.Family("esox_projection_up", "gauge", "1 when the projection is running or catching up, 0 when stopped with an error or not running.")
		for _, s := range st {
			up := 0.0
			if s.State == projector.StateRunning || s.State == projector.StateCatchingUp || s.State == projector.StateRebuilding {
				up = 1
			}
			w.Sample("esox_projection_up", up, "projection", s.Name, "version", itoa(s.Version), "state", string(s.State))
		}
		w.Family("esox_projection_dead_letters", "gauge", "Events parked by the projection's dead-letter policy.")
		for _, s := range st {
			w.Sample("esox_projection_dead_letters", float64(s.DeadLetters), "projection", s.Name, "version", itoa(s.Version))
		}
		return nil
	}
}

// forwarderCollector reports the forwarder's counters and lag: the feed's
// head position less the consumer group's offset.
func forwarderCollector(store *postgres.Store, f *forwarder.Forwarder) httpapi.Collector {
	return func(ctx context.Context, w *httpapi.MetricsWriter) error {
		st := f.Stats()
		w.Family("esox_forwarder_published_total", "counter", "Events published to the broker by this process.")
		w.Sample("esox_forwarder_published_total", float64(st.Published))
		w.Family("esox_forwarder_poisoned_total", "counter", "Events the forwarder could not route.")
		w.Sample("esox_forwarder_poisoned_total", float64(st.Poisoned))
		head, err := store.Head(ctx)
		if err != nil {
			return err
		}
		off, err := f.Offset(ctx)
		if err != nil {
			return err
		}
		w.Family("esox_forwarder_offset_position", "gauge", "Position of the last event the forwarder's consumer group published.")
		w.Sample("esox_forwarder_offset_position", float64(off.Position))
		w.Family("esox_forwarder_lag_events", "gauge", "Events of the feed not yet published (approximate: head position less offset position).")
		w.Sample("esox_forwarder_lag_events", float64(max(0, head.Position-off.Position)))
		return nil
	}
}

// shippingCollector reports the shipping consumer's counters.
func shippingCollector(c *shipping.Consumer) httpapi.Collector {
	return func(_ context.Context, w *httpapi.MetricsWriter) error {
		st := c.Stats()
		w.Family("ordering_shipping_messages_total", "counter", "Broker messages the shipping consumer received, redeliveries included.")
		w.Sample("ordering_shipping_messages_total", float64(st.Messages))
		w.Family("ordering_shipping_shipments_total", "counter", "Shipments the shipping consumer recorded.")
		w.Sample("ordering_shipping_shipments_total", float64(st.Shipments))
		w.Family("ordering_shipping_failures_total", "counter", "Broker messages the shipping consumer failed on (redelivered).")
		w.Sample("ordering_shipping_failures_total", float64(st.Failures))
		return nil
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
