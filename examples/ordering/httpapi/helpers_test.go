package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseIfMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		v    int64
		has  bool
		fail bool
	}{
		{"", 0, false, false},
		{"3", 3, true, false},
		{`"3"`, 3, true, false},
		{` W/"12" `, 12, true, false},
		{"0", 0, false, true},
		{"-1", 0, false, true},
		{"abc", 0, false, true},
		{`"3`, 0, false, true},
		{"99999999999999999999", 0, false, true},
	} {
		v, has, err := parseIfMatch(tc.in)
		if (err != nil) != tc.fail || v != tc.v || has != tc.has {
			t.Errorf("parseIfMatch(%q) = %d, %v, %v; want %d, %v, fail %v", tc.in, v, has, err, tc.v, tc.has, tc.fail)
		}
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	type body struct {
		N *int64 `json:"n"`
	}
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"n":1}`, true},
		{` {"n":1} `, true},
		{`{}`, true},
		{``, false},
		{`null`, false},
		{`{"n":1}{}`, false},
		{`{"n":1} x`, false},
		{`{"m":1}`, false},
		{`{"n":1.5}`, false},
		{`{"n":"1"}`, false},
		{`[]`, false},
		{`{"n":1`, false},
	} {
		var b body
		err := decode([]byte(tc.in), &b)
		if (err == nil) != tc.ok {
			t.Errorf("decode(%q): %v, want ok %v", tc.in, err, tc.ok)
		}
		var bad *badRequestError
		if err != nil && !errors.As(err, &bad) {
			t.Errorf("decode(%q): %T is not a *badRequestError", tc.in, err)
		}
	}
	if err := decodeEmpty(nil); err != nil {
		t.Errorf("decodeEmpty(nil): %v", err)
	}
	if err := decodeEmpty([]byte(`{"x":1}`)); err == nil {
		t.Error(`decodeEmpty({"x":1}): no error`)
	}
}

func TestValidKeyAndHash(t *testing.T) {
	t.Parallel()
	for k, ok := range map[string]bool{"a": true, "order-42 retry": true, "": false, "é": false, "a\nb": false, strings.Repeat("k", MaxIdempotencyKeyLength): true, strings.Repeat("k", MaxIdempotencyKeyLength+1): false} {
		if validKey(k) != ok {
			t.Errorf("validKey(%q) = %v, want %v", k, !ok, ok)
		}
	}
	base := requestHash("POST", "/orders", "", []byte(`{}`))
	for _, other := range []string{
		requestHash("PUT", "/orders", "", []byte(`{}`)),
		requestHash("POST", "/orders/x", "", []byte(`{}`)),
		requestHash("POST", "/orders", "1", []byte(`{}`)),
		requestHash("POST", "/orders", "", []byte(`{ }`)),
	} {
		if other == base {
			t.Error("different requests hash alike")
		}
	}
}

func TestValidOrderID(t *testing.T) {
	t.Parallel()
	for id, ok := range map[string]bool{
		"01a21cd1-b030-7d47-bc00-d820529b478d":   true,
		"01A21CD1-B030-7D47-BC00-D820529B478D":   false,
		"{01a21cd1-b030-7d47-bc00-d820529b478d}": false,
		"01a21cd1b0307d47bc00d820529b478d":       false,
		"x":                                      false,
	} {
		if validOrderID(id) != ok {
			t.Errorf("validOrderID(%q) = %v, want %v", id, !ok, ok)
		}
	}
}

// TestMetricsExposition checks the hand-written Prometheus text format:
// HELP and TYPE per family, a cumulative histogram, escaped labels and a
// failing collector that does not stop the scrape.
func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	m.ObserveAppend("ok", 3*time.Millisecond)
	m.ObserveAppend("ok", 2*time.Second)
	m.ObserveAppend("conflict", time.Millisecond/2)
	m.observeRequest("POST /orders", 201)
	m.AddCollector(func(_ context.Context, w *MetricsWriter) error {
		w.Family("x_lag", "gauge", "A lag.\nSecond line.")
		w.Sample("x_lag", 1.5, "name", `a"b\c`)
		return nil
	})
	m.AddCollector(func(context.Context, *MetricsWriter) error { return errors.New("boom") })
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		"# TYPE esox_appends_total counter\n",
		`esox_appends_total{outcome="conflict"} 1` + "\n",
		`esox_appends_total{outcome="ok"} 2` + "\n",
		"# TYPE esox_append_duration_seconds histogram\n",
		`esox_append_duration_seconds_bucket{le="0.001"} 1` + "\n",
		`esox_append_duration_seconds_bucket{le="0.005"} 2` + "\n",
		`esox_append_duration_seconds_bucket{le="2.5"} 3` + "\n",
		`esox_append_duration_seconds_bucket{le="+Inf"} 3` + "\n",
		"esox_append_duration_seconds_count 3\n",
		`ordering_http_requests_total{route="POST /orders",code="201"} 1` + "\n",
		"# HELP x_lag A lag.\\nSecond line.\n",
		`x_lag{name="a\"b\\c"} 1.5` + "\n",
		"# collector error: boom\n",
		"esox_collector_errors 1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
}
