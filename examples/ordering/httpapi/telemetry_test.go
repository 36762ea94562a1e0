package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
	"github.com/esox-go/esox/internal/oteltest"
)

// TestTelemetry: a command's request is a server span named after its
// route, a child of the caller's span when the request carries a W3C
// traceparent; the command runs under it, so the events it appends record
// its trace; the request is measured by route and status; /healthz and
// /metrics are neither traced nor measured.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	reg := order.NewRegistry()
	store := memory.New(reg)
	orders, err := aggregate.NewRepository(store, order.Category, order.New, aggregate.Config{Logger: slog.New(slog.DiscardHandler), TracerProvider: rec.TracerProvider})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlx.Open("postgres", "postgres://unused.invalid/none") // never used
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	idem, err := NewIdempotency(db, "ordering")
	if err != nil {
		t.Fatal(err)
	}
	tables, _ := readmodel.TablesIn("ordering")
	api, err := New(Config{Orders: orders, DB: db, Tables: tables, Idempotency: idem, Logger: slog.New(slog.DiscardHandler),
		Metrics:        http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("# metrics\n")) }),
		TracerProvider: rec.TracerProvider, MeterProvider: rec.MeterProvider})
	if err != nil {
		t.Fatal(err)
	}

	caller := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	})
	req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"customer_id":"c1","currency":"EUR","lines":[{"sku":"book","quantity":1,"unit_price_cents":100}]}`))
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), caller), propagation.HeaderCarrier(req.Header))
	resp := httptest.NewRecorder()
	api.ServeHTTP(resp, req)
	if resp.Code != http.StatusCreated {
		t.Fatalf("POST /orders: %d %s", resp.Code, resp.Body)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		r := httptest.NewRecorder()
		api.ServeHTTP(r, httptest.NewRequest(http.MethodGet, path, nil))
		if path == "/metrics" && r.Code != http.StatusOK { // /healthz: 503, its database is fake
			t.Fatalf("GET %s: %d", path, r.Code)
		}
	}

	server := rec.One(t, "POST /orders")
	if server.SpanKind != trace.SpanKindServer || !oteltest.ChildOf(server, caller) {
		t.Errorf("server span kind %v parent %v, want a server span, child of the caller's", server.SpanKind, server.Parent)
	}
	if v, _ := oteltest.Attr(server, "http.route"); v.AsString() != "/orders" {
		t.Errorf("server span http.route %q", v.AsString())
	}
	create := rec.One(t, "create order")
	if !oteltest.ChildOf(create, server.SpanContext) {
		t.Errorf("the command's span is not a child of the request's")
	}
	recs, err := store.ReadAll(context.Background(), eventstore.Position{}, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("ReadAll: %d records, %v", len(recs), err)
	}
	if got := recs[0].Metadata.SpanContext(); got.TraceID() != caller.TraceID() || got.SpanID() != create.SpanContext.SpanID() {
		t.Errorf("the event records span %v, want the command's %v in the caller's trace", got, create.SpanContext)
	}
	if len(rec.Ended()) != 2 {
		t.Errorf("spans %s, want only the command's and the request's", oteltest.Names(rec.Ended()))
	}
	n, ok := rec.Sum(t, "http.server.request.duration", attribute.String("http.route", "/orders"), attribute.Int("http.response.status_code", 201))
	if !ok || n != 1 {
		t.Errorf("http.server.request.duration for POST /orders 201: count %v (found %v), want 1", n, ok)
	}
	if n, _ := rec.Sum(t, "http.server.request.duration"); n != 1 {
		t.Errorf("http.server.request.duration counts %v requests, want 1 (not /healthz or /metrics)", n)
	}
}
