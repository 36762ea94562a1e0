package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	nc "github.com/nats-io/nats.go"

	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/internal/pgtest"
)

const natsURL = "nats://127.0.0.1:4222"

// TestService runs the service on real PostgreSQL and NATS JetStream and
// goes through a card's life over HTTP: issue, redeem (twice with one order
// reference: once), a refused redemption, reload, freeze, expire. The read
// models answer right after each command; the loyalty consumer, fed through
// NATS, counts the redemption once; SIGTERM (ctx) stops it cleanly.
func TestService(t *testing.T) {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:4222", 2*time.Second)
	if err != nil {
		pgtest.SkipOrFailBroker(t, "NATS", err)
		return
	}
	_ = conn.Close()
	db := pgtest.Open(t)
	prefix := "giftcard_test_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "_"
	t.Cleanup(func() {
		if c, err := nc.Connect(natsURL); err == nil {
			defer c.Close()
			if js, err := c.JetStream(); err == nil {
				_ = js.DeleteStream(prefix + card.Category)
			}
		}
	})
	// The clock of the commands: the test moves it past the expiry date.
	var skew atomic.Int64
	cfg := config{
		DatabaseURL: pgtest.DatabaseURL(), NATSURL: natsURL, Schema: pgtest.Schema(t, db), TopicPrefix: prefix,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, ln) }()
	base := "http://" + ln.Addr().String()

	deadline := time.Now().Add(time.Minute)
	for status, _ := get(t, base+"/readyz"); status != http.StatusOK; status, _ = get(t, base+"/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz answers %d after a minute", status)
		}
		time.Sleep(20 * time.Millisecond)
	}

	expires := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	status, out := post(t, base+"/cards", `{"holder":"ada","currency":"EUR","amount_cents":5000,"expires_at":"`+expires+`"}`)
	if status != http.StatusCreated {
		t.Fatalf("issue: %d %s", status, out)
	}
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		t.Fatalf("issue: %s", out)
	}
	cardURL := base + "/cards/" + created.ID
	for _, step := range []struct {
		path, body string
		status     int
		balance    string
	}{
		{"/redeem", `{"order_ref":"order-1","amount_cents":1250}`, 200, `"balance_cents":3750,"status":"active","version":2`},
		{"/redeem", `{"order_ref":"order-1","amount_cents":1250}`, 200, `"balance_cents":3750,"status":"active","version":2`},
		{"/redeem", `{"order_ref":"order-1","amount_cents":99}`, 409, `"version":2`},
		{"/redeem", `{"order_ref":"order-2","amount_cents":9999}`, 409, `"version":2`},
		{"/redeem", `{"order_ref":"order-2","amount_cents":-1}`, 400, `"version":2`},
		{"/reload", `{"amount_cents":250}`, 200, `"balance_cents":4000,"status":"active","version":3`},
		{"/expire", ``, 409, `"version":3`},
		{"/freeze", `{"reason":"reported stolen"}`, 200, `"balance_cents":4000,"status":"frozen","version":4`},
		{"/redeem", `{"order_ref":"order-3","amount_cents":1}`, 409, `"version":4`},
		{"/expire", ``, 200, `"balance_cents":0,"status":"expired","version":5`},
	} {
		if step.path == "/expire" && step.status == 200 {
			skew.Store(int64(48 * time.Hour))
		}
		if status, out := post(t, cardURL+step.path, step.body); status != step.status {
			t.Fatalf("POST %s %s: %d %s, want %d", step.path, step.body, status, out, step.status)
		}
		// Read-your-writes: the balance read model has the change at once.
		if status, out := get(t, cardURL); status != 200 || !strings.Contains(out, step.balance) {
			t.Fatalf("after POST %s %s: GET %d %s, want %s", step.path, step.body, status, out, step.balance)
		}
	}
	if status, out := get(t, base+"/ledger/"+time.Now().UTC().Format(time.DateOnly)); status != 200 || !strings.Contains(out, `"redemptions":1,"amount_cents":1250`) {
		t.Fatalf("ledger: %d %s", status, out)
	}
	if status, _ := post(t, base+"/cards/"+uuid.NewString()+"/redeem", `{"order_ref":"x","amount_cents":1}`); status != 404 {
		t.Fatalf("redeem an unknown card: %d, want 404", status)
	}

	// The loyalty consumer learns of the redemption through NATS, once.
	for {
		status, out := get(t, base+"/loyalty/ada")
		if status == 200 {
			if !strings.Contains(out, `"points":12,"redemptions":1`) {
				t.Fatalf("loyalty: %s, want 12 points from 1 redemption", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("loyalty: %d %s after a minute", status, out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func read(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
