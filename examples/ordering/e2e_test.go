package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// binPath is the service binary and esoxPath the esox command, built once
// by TestMain.
var binPath, esoxPath string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ordering-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "ordering")
	args := []string{"build", "-o", binPath}
	if raceBuild {
		args = append(args, "-race")
	}
	// The go command of this toolchain (go test sets GOROOT), else PATH's.
	goCmd := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		if _, err := os.Stat(filepath.Join(root, "bin", "go")); err == nil {
			goCmd = filepath.Join(root, "bin", "go")
		}
	}
	cmd := exec.Command(goCmd, append(args, ".")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the service:", err)
		return 1
	}
	// The esox command, which operates the service's schema (the restore
	// test runs it).
	esoxPath = filepath.Join(dir, "esox")
	cmd = exec.Command(goCmd, "build", "-o", esoxPath, "../../cmd/esox")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the esox command:", err)
		return 1
	}
	// A green run must not leave goroutines behind (broker clients
	// closed, pools closed).
	return leaktest.Run(m)
}

// service is one running ordering process.
type service struct {
	t      *testing.T
	base   string
	schema string
	prefix string
	url    string // the database's, as the process gets it
	db     *sqlx.DB
	cmd    *exec.Cmd
	logs   *syncBuffer
	done   chan struct{}
	err    error // the process's exit error, set when done closes
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listening = regexp.MustCompile(`listening on (http://[0-9.:]+)`)

// startService runs the binary against a fresh schema with broker, and waits
// until /readyz answers 200. The process is stopped at cleanup.
func startService(t *testing.T, broker string) *service {
	t.Helper()
	db := pgtest.Open(t)
	prefix := "e2e_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "_"
	return launch(t, db, pgtest.DatabaseURL(), pgtest.Schema(t, db), prefix, broker)
}

// startAgain starts the binary again on s's schema and topic prefix: a
// restart when s has stopped, a second instance while it runs.
func startAgain(t *testing.T, s *service, broker string) *service {
	t.Helper()
	return launch(t, s.db, s.url, s.schema, s.prefix, broker)
}

// launch starts the service on schema and waits until /readyz answers 200
// (it answers 503 not_ready while the service migrates and starts).
// At cleanup a process still running gets SIGTERM (SIGKILL after 30 s).
func launch(t *testing.T, db *sqlx.DB, url, schema, prefix, broker string) *service {
	t.Helper()
	s := &service{t: t, db: db, url: url, schema: schema, prefix: prefix, logs: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(binPath, "-addr", "127.0.0.1:0", "-schema", s.schema, "-broker", broker,
		"-topic-prefix", s.prefix, "-log-format", "json", "-log-level", "info",
		// Generous: other tests on the same server may hold transaction ids
		// open for seconds, which holds back every feed reader (the
		// xid trap, docs/forwarding.md); read-your-writes must still hold, however long it takes.
		"-wait-timeout", "60s")
	s.cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	s.cmd.Stderr = s.logs
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start the service: %v", err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
				t.Errorf("the service did not stop within 30 s of SIGTERM")
			}
		}
		if t.Failed() {
			t.Logf("service logs (%s):\n%s", s.base, s.logs.String())
		}
	})
	select {
	case s.base = <-urls:
	case <-s.done:
		t.Fatalf("the service exited before listening: %v\nlogs:\n%s", s.err, s.logs.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("the service did not print its URL within 90 s\nlogs:\n%s", s.logs.String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer 200 within 30 s (last: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (s *service) kill() {
	s.t.Helper()
	_ = s.cmd.Process.Kill()
	<-s.done
}

// stop sends SIGTERM and requires a clean exit (status 0).
func (s *service) stop() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("the service did not exit within 30 s of SIGTERM")
	}
	if s.err != nil {
		s.t.Fatalf("the service exited with %v after SIGTERM, want status 0", s.err)
	}
	if !strings.Contains(s.logs.String(), `"msg":"stopped"`) {
		s.t.Errorf("the logs do not say the service stopped cleanly")
	}
}

// response is one HTTP exchange's outcome.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %d is not JSON: %v\n%s", r.status, err, r.body)
	}
}

// errorCode returns the error code of an error response, failing the test
// unless the body has the documented error shape.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	r.json(t, &e)
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error response without code or message: %s", r.body)
	}
	return e.Error.Code
}

func (s *service) do(method, path string, body string, headers ...string) response {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// want fails the test unless r has status (and, for errors, the code).
func want(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body: %s", what, r.status, status, r.body)
	}
	if code != "" {
		if got := r.errorCode(t); got != code {
			t.Fatalf("%s: error code %q, want %q; body: %s", what, got, code, r.body)
		}
	}
}

func (s *service) events() int {
	s.t.Helper()
	var n int
	if err := s.db.Get(&n, `SELECT count(*) FROM "`+s.schema+`".events`); err != nil {
		s.t.Fatal(err)
	}
	return n
}

type cmdResult struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
}

type orderView struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
	Currency   string `json:"currency"`
	Lines      []struct {
		SKU            string `json:"sku"`
		Quantity       int64  `json:"quantity"`
		UnitPriceCents int64  `json:"unit_price_cents"`
	} `json:"lines"`
	TotalCents int64 `json:"total_cents"`
	Version    int64 `json:"version"`
}

func (s *service) place(customer string) cmdResult {
	s.t.Helper()
	r := s.do("POST", "/orders", `{"customer_id":"`+customer+`","currency":"EUR","lines":[{"sku":"book","quantity":2,"unit_price_cents":1500}]}`)
	want(s.t, "place", r, http.StatusCreated, "")
	var c cmdResult
	r.json(s.t, &c)
	return c
}

func (s *service) getOrder(id string) orderView {
	s.t.Helper()
	r := s.do("GET", "/orders/"+id, "")
	want(s.t, "GET /orders/"+id, r, http.StatusOK, "")
	var o orderView
	r.json(s.t, &o)
	return o
}

// lifecycle drives one order from placement to shipment, checking each
// response, the read models right after each write (read-your-writes: no
// polling), and returns the order ID.
func lifecycle(t *testing.T, s *service, customer string) string {
	r := s.do("POST", "/orders", `{"customer_id":"`+customer+`","currency":"EUR","lines":[{"sku":"book","quantity":2,"unit_price_cents":1500}]}`)
	want(t, "place", r, http.StatusCreated, "")
	var c cmdResult
	r.json(t, &c)
	if c.Version != 1 || c.ID == "" || r.header.Get("Location") != "/orders/"+c.ID {
		t.Fatalf("place: %+v, Location %q", c, r.header.Get("Location"))
	}
	id := c.ID
	o := s.getOrder(id)
	if o.Status != "placed" || o.TotalCents != 3000 || o.Version != 1 || o.CustomerID != customer || o.Currency != "EUR" || len(o.Lines) != 1 {
		t.Fatalf("after place: %+v", o)
	}

	steps := []struct {
		method, path, body string
		status             int
		check              func(orderView) bool
	}{
		{"POST", "/lines", `{"sku":"pen","quantity":3,"unit_price_cents":200}`, 200, func(o orderView) bool { return o.TotalCents == 3600 && len(o.Lines) == 2 }},
		{"DELETE", "/lines/pen", ``, 200, func(o orderView) bool { return o.TotalCents == 3000 && len(o.Lines) == 1 }},
		{"POST", "/discount", `{"percent":10}`, 200, func(o orderView) bool { return o.TotalCents == 2700 }},
		{"POST", "/pay", `{"amount_cents":2700}`, 200, func(o orderView) bool { return o.Status == "paid" }},
		{"POST", "/ship", ``, 200, func(o orderView) bool { return o.Status == "shipped" }},
	}
	for i, st := range steps {
		r := s.do(st.method, "/orders/"+id+st.path, st.body)
		want(t, st.method+" "+st.path, r, st.status, "")
		if h := r.header.Get("X-Read-Models"); h != "" {
			t.Fatalf("%s %s: X-Read-Models: %s (the projections did not catch up within -wait-timeout)", st.method, st.path, h)
		}
		var c cmdResult
		r.json(t, &c)
		if c.ID != id || c.Version != int64(i+2) {
			t.Fatalf("%s %s: %+v, want id %s version %d", st.method, st.path, c, id, i+2)
		}
		o := s.getOrder(id)
		if o.Version != c.Version || !st.check(o) {
			t.Fatalf("after %s %s the read model shows %+v", st.method, st.path, o)
		}
	}

	var list []orderView
	s.do("GET", "/orders?customer_id="+customer+"&status=shipped", "").json(t, &list)
	if len(list) != 1 || list[0].ID != id {
		t.Fatalf("GET /orders?customer_id=%s&status=shipped: %+v", customer, list)
	}
	list = nil
	s.do("GET", "/orders?customer_id="+customer+"&status=placed", "").json(t, &list)
	if len(list) != 0 {
		t.Fatalf("GET /orders?customer_id=%s&status=placed: %+v, want none", customer, list)
	}
	var stats struct {
		Orders          int64 `json:"orders"`
		PaidOrders      int64 `json:"paid_orders"`
		TotalSpentCents int64 `json:"total_spent_cents"`
	}
	s.do("GET", "/customers/"+customer+"/stats", "").json(t, &stats)
	if stats.Orders != 1 || stats.PaidOrders != 1 || stats.TotalSpentCents != 2700 {
		t.Fatalf("stats of %s: %+v", customer, stats)
	}
	return id
}

// waitShipment waits for the shipping consumer's record of id and checks
// there is exactly one.
func waitShipment(t *testing.T, s *service, id string) {
	t.Helper()
	waitShipmentOf(t, s, id, 2700)
}

// waitShipmentOf is waitShipment for an order of amount cents.
func waitShipmentOf(t *testing.T, s *service, id string, amount int64) {
	t.Helper()
	testwait.Until(t, "the shipment of order "+id, func() bool {
		var n int
		if err := s.db.Get(&n, `SELECT count(*) FROM "`+s.schema+`".shipments WHERE order_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	var got int64
	if err := s.db.Get(&got, `SELECT amount_cents FROM "`+s.schema+`".shipments WHERE order_id = $1`, id); err != nil || got != amount {
		t.Fatalf("shipment amount %d (%v), want %d", got, err, amount)
	}
}

// metric returns the sum of the samples of the Prometheus metric name on
// /metrics whose labels include labels (name, value pairs), failing the test
// when there is none.
func metric(t *testing.T, s *service, name string, labels ...string) float64 {
	t.Helper()
	r := s.do("GET", "/metrics", "")
	want(t, "GET /metrics", r, http.StatusOK, "")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics Content-Type %q", ct)
	}
	v, ok := sumSamples(string(r.body), name, labels...)
	if !ok {
		t.Fatalf("/metrics has no sample %s%v:\n%s", name, labels, r.body)
	}
	return v
}

// sumSamples sums the samples of metric name in a Prometheus text
// exposition whose labels include labels (name, value pairs).
func sumSamples(exposition, name string, labels ...string) (sum float64, found bool) {
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || strings.HasPrefix(line, "#") || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		set, value := "", rest
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			set, value = rest[1:end], rest[end+1:]
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(","+set+",", ","+labels[i]+"="+strconv.Quote(labels[i+1])+",") {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		sum, found = sum+v, true
	}
	return sum, found
}

func TestEndToEndGoChannel(t *testing.T) {
	s := startService(t, "gochannel")
	id := lifecycle(t, s, "alice-"+uuid.NewString()[:8])
	waitShipment(t, s, id)

	// /metrics is the OpenTelemetry Prometheus exporter's exposition of
	// esox's metrics, the HTTP server's and the consumer's.
	if v := metric(t, s, "esox_append_events_total", "esox_stream_category", "order"); v != 6 {
		t.Errorf("esox_append_events_total{order} = %v, want 6", v)
	}
	if v := metric(t, s, "esox_append_duration_seconds_count", "esox_outcome", "ok"); v != 6 {
		t.Errorf("esox_append_duration_seconds_count{ok} = %v, want 6", v)
	}
	// The consumer counts each shipment it records; the forwarder every
	// event it published (6 here, more only after a restart).
	if v := metric(t, s, "ordering_shipping_shipments_total"); v != 1 {
		t.Errorf("ordering_shipping_shipments_total = %v, want 1", v)
	}
	if v := metric(t, s, "esox_forwarder_published_total", "esox_forwarder_consumer_group", "ordering"); v < 6 {
		t.Errorf("esox_forwarder_published_total = %v, want at least 6", v)
	}
	if v := metric(t, s, "http_server_request_duration_seconds_count", "http_route", "/orders/{id}/pay", "http_response_status_code", "200"); v != 1 {
		t.Errorf("http_server_request_duration_seconds_count of the payment = %v, want 1", v)
	}
	metric(t, s, "esox_projection_lag_seconds", "esox_projection_name", "ordering_orders", "esox_projection_version", "1")
	metric(t, s, "esox_projection_backlog", "esox_projection_name", "ordering_orders")
	metric(t, s, "esox_forwarder_lag_seconds", "esox_forwarder_consumer_group", "ordering")
	metric(t, s, "go_goroutines")

	t.Run("errors", func(t *testing.T) { errorCases(t, s) })
	t.Run("idempotency", func(t *testing.T) { idempotencyCases(t, s) })
	t.Run("bad input", func(t *testing.T) { badInput(t, s) })

	s.stop()

	// A restart resumes where it stopped: no second shipment, the read
	// models are intact.
	t.Run("restart", func(t *testing.T) {
		s2 := startAgain(t, s, "gochannel")
		o := s2.getOrder(id)
		if o.Status != "shipped" || o.Version != 6 {
			t.Fatalf("after restart: %+v", o)
		}
		id2 := lifecycle(t, s2, "bob-"+uuid.NewString()[:8])
		waitShipment(t, s2, id2)
		var n int
		if err := s2.db.Get(&n, `SELECT count(*) FROM "`+s2.schema+`".shipments WHERE order_id = $1`, id); err != nil || n != 1 {
			t.Fatalf("shipments of the first order after restart: %d (%v), want 1", n, err)
		}
		s2.stop()
	})
}

func errorCases(t *testing.T, s *service) {
	unknown := uuid.NewString()
	c := s.place("carol-" + uuid.NewString()[:8])
	id := c.ID
	before := s.events()
	for _, tc := range []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code                     string
	}{
		{"unknown order GET", "GET", "/orders/" + unknown, "", nil, 404, "order_not_found"},
		{"unknown order pay", "POST", "/orders/" + unknown + "/pay", `{"amount_cents":1}`, nil, 404, "order_not_found"},
		{"unknown order ship", "POST", "/orders/" + unknown + "/ship", "", nil, 404, "order_not_found"},
		{"unknown order line", "POST", "/orders/" + unknown + "/lines", `{"sku":"a","quantity":1,"unit_price_cents":1}`, nil, 404, "order_not_found"},
		{"non-UUID order id", "GET", "/orders/not-an-id", "", nil, 404, "order_not_found"},
		{"upper-case order id", "POST", "/orders/" + strings.ToUpper(id) + "/ship", "", nil, 404, "order_not_found"},
		{"unknown line", "DELETE", "/orders/" + id + "/lines/nope", "", nil, 404, "line_not_found"},
		{"payment not equal to total", "POST", "/orders/" + id + "/pay", `{"amount_cents":2999}`, nil, 409, "payment_mismatch"},
		{"ship before paying", "POST", "/orders/" + id + "/ship", "", nil, 409, "order_not_paid"},
		{"line in another currency", "POST", "/orders/" + id + "/lines", `{"sku":"pen","quantity":1,"unit_price_cents":1,"currency":"USD"}`, nil, 409, "currency_mismatch"},
		{"payment in another currency", "POST", "/orders/" + id + "/pay", `{"amount_cents":3000,"currency":"USD"}`, nil, 409, "currency_mismatch"},
		{"duplicate line", "POST", "/orders/" + id + "/lines", `{"sku":"book","quantity":1,"unit_price_cents":1}`, nil, 409, "duplicate_line"},
		{"stale If-Match", "POST", "/orders/" + id + "/discount", `{"percent":5}`, []string{"If-Match", "7"}, 412, "version_mismatch"},
		{"stale quoted If-Match", "POST", "/orders/" + id + "/discount", `{"percent":5}`, []string{"If-Match", `"2"`}, 412, "version_mismatch"},
		{"malformed If-Match", "POST", "/orders/" + id + "/discount", `{"percent":5}`, []string{"If-Match", "abc"}, 400, "invalid_if_match"},
		{"bad status filter", "GET", "/orders?status=lost", "", nil, 400, "invalid_query"},
		{"bad limit", "GET", "/orders?limit=0", "", nil, 400, "invalid_query"},
		{"empty customer filter", "GET", "/orders?customer_id=", "", nil, 400, "invalid_query"},
		{"unknown query parameter", "GET", "/orders?customer=x", "", nil, 400, "invalid_query"},
		{"bad customer id", "GET", "/customers/%20x/stats", "", nil, 400, "invalid_customer_id"},
		{"unknown endpoint", "GET", "/nope", "", nil, 404, "not_found"},
		{"wrong method", "PUT", "/orders/" + id, "", nil, 405, "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, tc.body, tc.headers...)
			want(t, tc.name, r, tc.status, tc.code)
			if n := s.events(); n != before {
				t.Fatalf("a refused request wrote %d events", n-before)
			}
		})
	}

	t.Run("If-Match current version", func(t *testing.T) {
		r := s.do("POST", "/orders/"+id+"/discount", `{"percent":5}`, "If-Match", `"1"`)
		want(t, "discount with If-Match 1", r, 200, "")
		var c cmdResult
		r.json(t, &c)
		if c.Version != 2 || r.header.Get("ETag") != `"2"` {
			t.Fatalf("discount: %+v, ETag %q", c, r.header.Get("ETag"))
		}
		// The same If-Match again is now stale: 412, nothing written.
		n := s.events()
		want(t, "discount with stale If-Match 1", s.do("POST", "/orders/"+id+"/pay", `{"amount_cents":2850}`, "If-Match", "1"), 412, "version_mismatch")
		if s.events() != n {
			t.Fatal("a 412 wrote events")
		}
		if got := s.do("GET", "/orders/"+id, "").header.Get("ETag"); got != `"2"` {
			t.Fatalf("GET ETag %q, want \"2\"", got)
		}
	})

	t.Run("closed orders refuse changes", func(t *testing.T) {
		c := s.place("dave-" + uuid.NewString()[:8])
		want(t, "cancel", s.do("POST", "/orders/"+c.ID+"/cancel", `{"reason":"changed my mind"}`), 200, "")
		if o := s.getOrder(c.ID); o.Status != "cancelled" {
			t.Fatalf("after cancel: %+v", o)
		}
		want(t, "pay a cancelled order", s.do("POST", "/orders/"+c.ID+"/pay", `{"amount_cents":3000}`), 409, "order_cancelled")
		want(t, "cancel twice", s.do("POST", "/orders/"+c.ID+"/cancel", `{"reason":"again"}`), 409, "order_cancelled")
		want(t, "add a line to a cancelled order", s.do("POST", "/orders/"+c.ID+"/lines", `{"sku":"x","quantity":1,"unit_price_cents":1}`), 409, "order_cancelled")

		e := s.place("erin-" + uuid.NewString()[:8])
		want(t, "remove the only line", s.do("DELETE", "/orders/"+e.ID+"/lines/book", ""), 200, "")
		want(t, "pay an empty order", s.do("POST", "/orders/"+e.ID+"/pay", `{"amount_cents":0}`), 409, "order_empty")

		f := s.place("fay-" + uuid.NewString()[:8])
		want(t, "pay", s.do("POST", "/orders/"+f.ID+"/pay", `{"amount_cents":3000}`), 200, "")
		want(t, "ship", s.do("POST", "/orders/"+f.ID+"/ship", ""), 200, "")
		m := s.events()
		want(t, "cancel a shipped order", s.do("POST", "/orders/"+f.ID+"/cancel", `{"reason":"late"}`), 409, "order_shipped")
		want(t, "discount a shipped order", s.do("POST", "/orders/"+f.ID+"/discount", `{"percent":5}`), 409, "order_shipped")
		want(t, "ship twice", s.do("POST", "/orders/"+f.ID+"/ship", ""), 409, "order_shipped")
		if s.events() != m {
			t.Fatal("refused commands wrote events")
		}
	})
}

func idempotencyCases(t *testing.T, s *service) {
	t.Run("same key, same request", func(t *testing.T) {
		key := uuid.NewString()
		body := `{"customer_id":"gus","currency":"EUR","lines":[{"sku":"book","quantity":1,"unit_price_cents":100}]}`
		before := s.events()
		r1 := s.do("POST", "/orders", body, "Idempotency-Key", key)
		want(t, "first", r1, 201, "")
		r2 := s.do("POST", "/orders", body, "Idempotency-Key", key)
		if r2.status != r1.status || !bytes.Equal(r2.body, r1.body) {
			t.Fatalf("replay: %d %s, want %d %s", r2.status, r2.body, r1.status, r1.body)
		}
		if r2.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("replay without Idempotent-Replayed: true")
		}
		// A replay has the first response's headers too.
		for _, h := range []string{"Location", "ETag"} {
			if r1.header.Get(h) == "" || r2.header.Get(h) != r1.header.Get(h) {
				t.Errorf("replay %s %q, first response %q", h, r2.header.Get(h), r1.header.Get(h))
			}
		}
		if n := s.events(); n != before+1 {
			t.Fatalf("two requests with one key wrote %d events, want 1", n-before)
		}
		var c cmdResult
		r1.json(t, &c)
		// Commands on an existing order too.
		pkey := uuid.NewString()
		p1 := s.do("POST", "/orders/"+c.ID+"/pay", `{"amount_cents":100}`, "Idempotency-Key", pkey)
		want(t, "pay", p1, 200, "")
		p2 := s.do("POST", "/orders/"+c.ID+"/pay", `{"amount_cents":100}`, "Idempotency-Key", pkey)
		if p2.status != 200 || !bytes.Equal(p1.body, p2.body) {
			t.Fatalf("pay replay: %d %s, want 200 %s (a second pay without the key would be 409)", p2.status, p2.body, p1.body)
		}
		if p1.header.Get("ETag") != `"2"` || p2.header.Get("ETag") != p1.header.Get("ETag") || p2.header.Get("Location") != "" {
			t.Errorf("pay replay: ETag %q Location %q, first ETag %q", p2.header.Get("ETag"), p2.header.Get("Location"), p1.header.Get("ETag"))
		}
		if n := s.events(); n != before+2 {
			t.Fatalf("wrote %d events, want 2", n-before)
		}
	})
	t.Run("same key, other request", func(t *testing.T) {
		key := uuid.NewString()
		want(t, "first", s.do("POST", "/orders", `{"customer_id":"hal","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1}]}`, "Idempotency-Key", key), 201, "")
		n := s.events()
		want(t, "reused key", s.do("POST", "/orders", `{"customer_id":"hal","currency":"EUR","lines":[{"sku":"a","quantity":2,"unit_price_cents":1}]}`, "Idempotency-Key", key), 422, "idempotency_key_reused")
		if s.events() != n {
			t.Fatal("a reused key wrote events")
		}
	})
	t.Run("refused command records nothing", func(t *testing.T) {
		key := uuid.NewString()
		c := s.place("ivy-" + uuid.NewString()[:8])
		want(t, "wrong amount", s.do("POST", "/orders/"+c.ID+"/pay", `{"amount_cents":1}`, "Idempotency-Key", key), 409, "payment_mismatch")
		// The key was not consumed by the refusal: the corrected request
		// under a new key works, and the old key still refuses the same way.
		want(t, "wrong amount again", s.do("POST", "/orders/"+c.ID+"/pay", `{"amount_cents":1}`, "Idempotency-Key", key), 409, "payment_mismatch")
	})
	// concurrently sends n identical requests with one Idempotency-Key
	// (plus headers) and checks that all get status and one body, and
	// that one event was written.
	concurrently := func(t *testing.T, path, body string, status int, headers ...string) {
		t.Helper()
		key := uuid.NewString()
		before := s.events()
		const n = 8
		results := make([]response, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("POST", s.base+path, strings.NewReader(body))
				req.Header.Set("Idempotency-Key", key)
				for j := 0; j+1 < len(headers); j += 2 {
					req.Header.Set(headers[j], headers[j+1])
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					results[i] = response{body: []byte(err.Error())}
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				results[i] = response{status: resp.StatusCode, header: resp.Header, body: b}
			}()
		}
		wg.Wait()
		for i, r := range results {
			if r.status != status || !bytes.Equal(r.body, results[0].body) {
				t.Fatalf("request %d: %d %s, want %d %s", i, r.status, r.body, status, results[0].body)
			}
			if r.header.Get("ETag") != results[0].header.Get("ETag") || r.header.Get("ETag") == "" {
				t.Fatalf("request %d: ETag %q, request 0 %q", i, r.header.Get("ETag"), results[0].header.Get("ETag"))
			}
		}
		if got := s.events(); got != before+1 {
			t.Fatalf("%d concurrent requests with one key wrote %d events, want 1", n, got-before)
		}
	}
	t.Run("concurrent duplicates", func(t *testing.T) {
		concurrently(t, "/orders", `{"customer_id":"jo","currency":"EUR","lines":[{"sku":"book","quantity":1,"unit_price_cents":100}]}`, 201)
	})
	// On an existing order the losers used to fail on the version or on
	// the rule the winner's event now breaks (409 order_paid, 412) before
	// the key was checked; they must replay the winner's result.
	t.Run("concurrent duplicates on an existing order", func(t *testing.T) {
		c := s.place("lou-" + uuid.NewString()[:8])
		concurrently(t, "/orders/"+c.ID+"/pay", `{"amount_cents":3000}`, 200)
		d := s.place("max-" + uuid.NewString()[:8])
		concurrently(t, "/orders/"+d.ID+"/pay", `{"amount_cents":3000}`, 200, "If-Match", "1")
		e := s.place("ned-" + uuid.NewString()[:8])
		concurrently(t, "/orders/"+e.ID+"/discount", `{"percent":10}`, 200)
	})
	// Keyed commands run in the key's transaction, where a conflict cannot
	// be retried: the API reruns the whole transaction (Repository.Retry),
	// so concurrent keyed commands on one order all land, each once.
	t.Run("concurrent keyed commands on one order", func(t *testing.T) {
		c := s.place("ora-" + uuid.NewString()[:8])
		before := s.events()
		const n = 8
		keys := make([]string, n)
		results := make([]response, n)
		var wg sync.WaitGroup
		for i := range n {
			keys[i] = uuid.NewString()
			wg.Go(func() {
				body := fmt.Sprintf(`{"sku":"sku-%d","quantity":1,"unit_price_cents":100}`, i)
				results[i] = s.do("POST", "/orders/"+c.ID+"/lines", body, "Idempotency-Key", keys[i])
			})
		}
		wg.Wait()
		versions := map[string]bool{}
		for i, r := range results {
			want(t, fmt.Sprintf("line %d", i), r, 200, "")
			versions[r.header.Get("ETag")] = true
		}
		if len(versions) != n || s.events() != before+n {
			t.Fatalf("%d distinct versions and %d events for %d commands, want %d of each", len(versions), s.events()-before, n, n)
		}
		for i := range n {
			body := fmt.Sprintf(`{"sku":"sku-%d","quantity":1,"unit_price_cents":100}`, i)
			r := s.do("POST", "/orders/"+c.ID+"/lines", body, "Idempotency-Key", keys[i])
			if r.status != 200 || !bytes.Equal(r.body, results[i].body) || r.header.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("replay of line %d: %d %s, want the first response %s", i, r.status, r.body, results[i].body)
			}
		}
		if s.events() != before+n {
			t.Fatal("replays appended events")
		}
	})
	t.Run("bad key", func(t *testing.T) {
		want(t, "long key", s.do("POST", "/orders", `{}`, "Idempotency-Key", strings.Repeat("k", 201)), 400, "invalid_idempotency_key")
	})
}

// badInput sends malformed and invalid bodies to every command: each must be
// a 400 with the error shape, and none may write an event.
func badInput(t *testing.T, s *service) {
	c := s.place("kim-" + uuid.NewString()[:8])
	id := c.ID
	big := `{"customer_id":"` + strings.Repeat("x", 70<<10) + `"}`
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf(`{"sku":"s%d","quantity":1,"unit_price_cents":1}`, i)
	}
	common := []string{``, `{`, `[]`, `null`, `123`, `"x"`, `{}x`, `{} {}`, `{"unknown":1}`, "\xff\xfe", big}
	cases := map[string][]string{
		"/orders": append(common,
			`{"customer_id":"a","currency":"EUR"}`,
			`{"customer_id":"a","currency":"EUR","lines":[]}`,
			`{"customer_id":"a","currency":"EUR","lines":null}`,
			`{"currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":"","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":"a\u0000b","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":1,"currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"eur","lines":[{"sku":"a","quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":0,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":-1,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":1.5,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":"2","unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":1e30,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":99999999999999999999,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":-1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a/b","quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1},{"sku":"a","quantity":1,"unit_price_cents":1}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1,"currency":"EUR"}]}`,
			`{"customer_id":"a","currency":"EUR","lines":[`+strings.Join(many, ",")+`]}`,
			`{"customer_id":"a","currency":"EUR","lines":{"sku":"a"}}`,
		),
		"/orders/" + id + "/lines": append(common,
			`{"sku":"pen","quantity":0,"unit_price_cents":1}`,
			`{"sku":"pen","unit_price_cents":1}`,
			`{"sku":"pen","quantity":1,"unit_price_cents":-5}`,
			`{"sku":"","quantity":1,"unit_price_cents":1}`,
			`{"sku":"pen","quantity":1,"unit_price_cents":1,"currency":"usd"}`,
			`{"sku":"pen","quantity":1,"unit_price_cents":1e3}`,
		),
		"/orders/" + id + "/discount": append(common, `{"percent":0}`, `{"percent":101}`, `{"percent":-1}`, `{"percent":"10"}`, `{"percent":10.5}`, `{}`),
		"/orders/" + id + "/pay":      append(common, `{"amount_cents":-1}`, `{}`, `{"amount_cents":"3000"}`, `{"amount_cents":3000,"currency":"E"}`),
		"/orders/" + id + "/cancel":   append(common, `{}`, `{"reason":""}`, `{"reason":"   "}`, `{"reason":"a\u0000b"}`, `{"reason":`+strconv.Quote(strings.Repeat("r", 501))+`}`),
		"/orders/" + id + "/ship":     {`{`, `[]`, `{"x":1}`, `null`, `{}x`},
	}
	before := s.events()
	for path, bodies := range cases {
		for _, body := range bodies {
			name := body
			if len(name) > 60 {
				name = name[:60] + "…"
			}
			r := s.do("POST", path, body)
			if r.status != http.StatusBadRequest {
				t.Errorf("POST %s %q: status %d, want 400; body %s", path, name, r.status, r.body)
				continue
			}
			r.errorCode(t)
		}
	}
	for _, sku := range []string{"a%2Fb", "%00", strings.Repeat("s", 65)} {
		r := s.do("DELETE", "/orders/"+id+"/lines/"+sku, "")
		if r.status != http.StatusBadRequest {
			t.Errorf("DELETE line %q: status %d, want 400; body %s", sku, r.status, r.body)
		}
	}
	if n := s.events(); n != before {
		t.Fatalf("bad input wrote %d events", n-before)
	}
	if o := s.getOrder(id); o.Version != 1 {
		t.Fatalf("bad input changed the order: %+v", o)
	}
}
