package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	nc "github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
	"github.com/esox-go/esox/examples/ordering/shipping"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/pgtest"
)

// TestTraceChainRabbitMQ runs the service in this process over RabbitMQ
// with an in-memory span exporter, pays an order, and follows the payment
// as one trace: the HTTP request's server span → the command (update
// order) → the append → the forwarder's publish → RabbitMQ → the shipping
// consumer's span → its inbox's span → the shipment's INSERT, each the
// child of the one before; the read model's batch links to the append; and
// the logs of the request and of the shipment carry the trace's ID.
func TestTraceChainRabbitMQ(t *testing.T) {
	requireBroker(t, "RabbitMQ", "127.0.0.1:5672")
	pgtest.LockBroker(t, "rabbitmq", false)
	traceChain(t, amqpURL, func(topic string) { deleteRabbitTopology(t, topic) })
}

// TestTraceChainNATS is TestTraceChainRabbitMQ over NATS JetStream, which
// carries the trace context in message headers.
func TestTraceChainNATS(t *testing.T) {
	requireBroker(t, "NATS", "127.0.0.1:4222")
	traceChain(t, natsURL, func(topic string) {
		conn, err := nc.Connect(natsURL)
		if err != nil {
			return
		}
		defer conn.Close()
		if js, err := conn.JetStream(); err == nil {
			_ = js.DeleteStream(topic)
		}
	})
}

// traceChain runs the trace-chain scenario on broker; cleanup deletes the
// broker's topology for topic at the end.
func traceChain(t *testing.T, broker string, cleanup func(topic string)) {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	spanExporterForTest = keepSpans{spans}
	t.Cleanup(func() { spanExporterForTest = nil })

	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	prefix := "e2e_trace_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "_"
	topic := prefix + order.Category
	t.Cleanup(func() { cleanup(topic) })
	cfg := config{Addr: "127.0.0.1:0", DatabaseURL: pgtest.DatabaseURL(), Schema: schema, Broker: broker, TopicPrefix: prefix,
		LogLevel: slog.LevelInfo, LogFormat: "json", WaitTimeout: time.Minute}
	stdout, logs := &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, stdout, logs) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the service did not stop within 60 s")
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("service logs:\n%s", logs.String())
		}
	})
	var base string
	deadline := time.Now().Add(90 * time.Second)
	for base == "" {
		if m := listening.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the service stopped before listening: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the service did not listen within 90 s")
		}
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	// The server listens before the App has migrated: wait for /readyz.
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the service stopped before it was ready: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the service was not ready within 90 s")
		}
	}
	post := func(path, body string, status int) []byte {
		t.Helper()
		resp, err := client.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != status {
			t.Fatalf("POST %s: %d %s, want %d", path, resp.StatusCode, b, status)
		}
		return b
	}
	var placed cmdResult
	if err := json.Unmarshal(post("/orders", `{"customer_id":"trace","currency":"EUR","lines":[{"sku":"book","quantity":2,"unit_price_cents":1500}]}`, http.StatusCreated), &placed); err != nil {
		t.Fatal(err)
	}
	post("/orders/"+placed.ID+"/pay", `{"amount_cents":3000}`, http.StatusOK)
	for {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM "`+schema+`".shipments WHERE order_id = $1`, placed.ID); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline.Add(60 * time.Second)) {
			t.Fatal("no shipment after the payment")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop() // every span has ended once run returns

	rec := &oteltest.Recorder{Spans: spans}
	ended := rec.Ended()
	// childOf returns the span named name whose parent is parent.
	childOf := func(name string, parent tracetest.SpanStub) tracetest.SpanStub {
		t.Helper()
		for _, s := range rec.Named(name) {
			if oteltest.ChildOf(s, parent.SpanContext) {
				return s
			}
		}
		t.Fatalf("no span %q is a child of %q; spans: %s", name, parent.Name, oteltest.Names(ended))
		return tracetest.SpanStub{}
	}
	request := rec.One(t, "POST /orders/{id}/pay")
	if request.SpanKind != trace.SpanKindServer || request.Parent.IsValid() {
		t.Errorf("request span: kind %v parent %v, want a server root span", request.SpanKind, request.Parent)
	}
	command := childOf("update order", request)
	appended := childOf("append "+schema+".events", command)
	publish := childOf("publish "+topic, appended)
	consumed := childOf("process "+topic, publish)
	inbox := childOf("process "+shipping.ConsumerName, consumed)
	write := childOf("INSERT "+schema+"."+shipping.ShipmentsTable, inbox)
	for _, s := range []tracetest.SpanStub{command, appended, publish, consumed, inbox, write} {
		if s.SpanContext.TraceID() != request.SpanContext.TraceID() {
			t.Errorf("span %q is in trace %s, not the request's %s", s.Name, s.SpanContext.TraceID(), request.SpanContext.TraceID())
		}
	}
	if v, _ := oteltest.Attr(publish, "messaging.destination.name"); v.AsString() != topic {
		t.Errorf("publish span destination %q, want %q", v.AsString(), topic)
	}
	if publish.SpanKind != trace.SpanKindProducer || consumed.SpanKind != trace.SpanKindConsumer {
		t.Errorf("publish span kind %v, consumer span kind %v", publish.SpanKind, consumed.SpanKind)
	}
	var linked bool
	for _, s := range rec.Named("project " + readmodel.OrdersName) {
		linked = linked || oteltest.LinksTo(s, appended.SpanContext)
	}
	if !linked {
		t.Errorf("no batch span of %s links to the payment's append span", readmodel.OrdersName)
	}

	// The logs of the request and of the shipment name the trace.
	traceID := request.SpanContext.TraceID().String()
	found := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch {
		case line["msg"] == "request" && line["route"] == "POST /orders/{id}/pay",
			line["msg"] == "shipment recorded" && line["order_id"] == placed.ID:
			found[fmt.Sprint(line["msg"])] = line["trace_id"] == traceID && line["span_id"] != nil
		}
	}
	for _, msg := range []string{"request", "shipment recorded"} {
		if !found[msg] {
			t.Errorf("no %q log line with trace_id %s and a span_id", msg, traceID)
		}
	}
}

// keepSpans is an in-memory exporter that keeps its spans when the service
// shuts its tracer provider down (InMemoryExporter.Shutdown forgets them).
type keepSpans struct{ *tracetest.InMemoryExporter }

func (keepSpans) Shutdown(context.Context) error { return nil }
