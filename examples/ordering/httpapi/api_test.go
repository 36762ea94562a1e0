package httpapi

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/esox-go/esox/eventstore"
)

// TestCommandWaitsForReadModels: a command answers only after WaitFor
// returns (read-your-writes), with the position of the events it appended.
func TestCommandWaitsForReadModels(t *testing.T) {
	t.Parallel()
	entered := make(chan eventstore.Position, 1)
	release := make(chan struct{})
	api, _, id := commandAPI(t, func(c *Config) {
		c.WaitTimeout = time.Minute
		c.WaitFor = func(ctx context.Context, pos eventstore.Position) error {
			entered <- pos
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/orders/"+id+"/discount", strings.NewReader(`{"percent":10}`)))
	}()
	var pos eventstore.Position
	select {
	case pos = <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the command never called WaitFor")
	}
	if pos.IsZero() {
		t.Error("WaitFor got the zero position")
	}
	select {
	case <-done:
		t.Fatalf("the command answered %d before WaitFor returned", rec.Code)
	case <-time.After(50 * time.Millisecond):
		// Not a timing assertion: the response must not come at all
		// until release; this only gives a wrong one a chance to show.
	}
	close(release)
	<-done
	if rec.Code != http.StatusOK || rec.Header().Get("X-Read-Models") != "" {
		t.Fatalf("after release: %d, X-Read-Models %q, body %s", rec.Code, rec.Header().Get("X-Read-Models"), rec.Body)
	}
}

// TestCommandStaleReadModels: when WaitFor fails (or times out) the command
// still succeeds, with X-Read-Models: stale.
func TestCommandStaleReadModels(t *testing.T) {
	t.Parallel()
	for name, waitFor := range map[string]func(context.Context, eventstore.Position) error{
		"error": func(context.Context, eventstore.Position) error { return errors.New("projection stopped") },
		"timeout": func(ctx context.Context, _ eventstore.Position) error {
			<-ctx.Done()
			return ctx.Err()
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api, _, id := commandAPI(t, func(c *Config) {
				c.WaitFor = waitFor
				c.WaitTimeout = 10 * time.Millisecond
			})
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/orders/"+id+"/discount", strings.NewReader(`{"percent":10}`)))
			if rec.Code != http.StatusOK || rec.Header().Get("X-Read-Models") != "stale" {
				t.Fatalf("%d, X-Read-Models %q, body %s", rec.Code, rec.Header().Get("X-Read-Models"), rec.Body)
			}
			if rec.Header().Get("ETag") != `"2"` {
				t.Errorf("ETag %q, want \"2\"", rec.Header().Get("ETag"))
			}
		})
	}
}

func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{driver.ErrBadConn, true},
		{fmt.Errorf("readmodel: list orders: %w", driver.ErrBadConn), true},
		{sql.ErrConnDone, true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{fmt.Errorf("append: %w", &pq.Error{Code: "08006"}), true},
		{&pq.Error{Code: "08001"}, true},
		{&pq.Error{Code: "57P01"}, true},
		{&pq.Error{Code: "57P03"}, true},
		{&pq.Error{Code: "57014"}, false}, // query_canceled
		{&pq.Error{Code: "22003"}, false}, // numeric out of range: a bug
		{&pq.Error{Code: "42P01"}, false},
		{errors.New("boom"), false},
		{sql.ErrNoRows, false},
	} {
		if got := isUnavailable(tc.err); got != tc.want {
			t.Errorf("isUnavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestDatabaseDownIs503: queries against a database that refuses
// connections answer 503 unavailable, as API.md says, not 500.
func TestDatabaseDownIs503(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: nothing listens, the connection is refused.
	down, err := sqlx.Open("postgres", "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { down.Close() })
	api, _, _ := commandAPI(t, func(c *Config) { c.DB = down })
	for _, path := range []string{"/orders", "/orders/01a21cd1-b030-7d47-bc00-d820529b478d", "/customers/c1/stats"} {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"unavailable"`) {
			t.Errorf("GET %s: %d %s, want 503 unavailable", path, rec.Code, rec.Body)
		}
	}
}

// TestListOrdersEmptyFilter: a filter given empty is refused, not read as
// "everything" (customer_id= used to list every customer's orders).
func TestListOrdersEmptyFilter(t *testing.T) {
	t.Parallel()
	api, _, _ := commandAPI(t)
	for _, q := range []string{"customer_id=", "status=", "limit=", "customer_id=&status=paid"} {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/orders?"+q, nil))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"invalid_query"`) {
			t.Errorf("GET /orders?%s: %d %s, want 400 invalid_query", q, rec.Code, rec.Body)
		}
	}
}

// TestReadiness: until Config.Ready is closed, /readyz and the commands
// answer 503 not_ready and write nothing, while /healthz is not gated;
// once it is closed they work.
func TestReadiness(t *testing.T) {
	t.Parallel()
	ready := make(chan struct{})
	api, store, id := commandAPI(t, func(c *Config) {
		c.Ready = func() <-chan struct{} { return ready }
	})
	do := func(method, path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec
	}
	before := countEvents(t, store)
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/readyz", ""},
		{"POST", "/orders/" + id + "/discount", `{"percent":10}`},
	} {
		rec := do(r.method, r.path, r.body)
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"not_ready"`) {
			t.Errorf("%s %s before ready: %d %s, want 503 not_ready", r.method, r.path, rec.Code, rec.Body)
		}
	}
	if n := countEvents(t, store); n != before {
		t.Fatalf("a command refused as not ready wrote %d events", n-before)
	}
	// /healthz is not gated: it pings the (unreachable) database.
	if rec := do("GET", "/healthz", ""); strings.Contains(rec.Body.String(), "not_ready") {
		t.Errorf("/healthz before ready: %d %s, want it not gated", rec.Code, rec.Body)
	}
	close(ready)
	if rec := do("GET", "/readyz", ""); rec.Code != http.StatusOK {
		t.Errorf("/readyz once ready: %d %s", rec.Code, rec.Body)
	}
	if rec := do("POST", "/orders/"+id+"/discount", `{"percent":10}`); rec.Code != http.StatusOK {
		t.Errorf("command once ready: %d %s", rec.Code, rec.Body)
	}
}
