package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestTracesExporter: the standard OTEL_* variables choose the trace
// exporter: none by default, OTLP when an endpoint is set or asked for,
// console when asked for; an unknown exporter or protocol is refused.
func TestTracesExporter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
		fail bool
	}{
		{env: nil, want: "none"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, want: "otlp"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, want: "otlp"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: "otlp"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, want: "console"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, want: "none"},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, want: "none"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, want: "otlp"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, fail: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, fail: true},
	} {
		got, err := tracesExporter(func(k string) string { return tc.env[k] })
		if (err != nil) != tc.fail || got != tc.want {
			t.Errorf("%v: %q, %v; want %q (fail %v)", tc.env, got, err, tc.want, tc.fail)
		}
	}
}

// TestLogsCarryTraceIDs: a record logged with a context that has a span
// gets its trace_id and span_id; one without a span gets neither.
func TestLogsCarryTraceIDs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(withTraceIDs(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, SpanID: trace.SpanID{0xcd, 1, 2, 3, 4, 5, 6, 7}, TraceFlags: trace.FlagsSampled,
	})
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "traced")
	log.InfoContext(context.Background(), "plain")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %q", buf.String())
	}
	if !strings.Contains(lines[0], `"trace_id":"ab0102030405060708090a0b0c0d0e0f","span_id":"cd01020304050607"`) {
		t.Errorf("record under a span: %s", lines[0])
	}
	if strings.Contains(lines[1], "trace_id") || strings.Contains(lines[1], "span_id") {
		t.Errorf("record without a span: %s", lines[1])
	}
}
