package main_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// TestVerifyAndSeal: esox seal exports a seal (stdout or --out, never
// overwriting); esox verify checks the chains and, with --seal, the events
// against it: exit 0 when intact, 6 for a changed payload (the chain) and
// for a truncated tail (the seal), 2 for a malformed seal file.
func TestVerifyAndSeal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.cli
	b.append(t, "order-1", orderPlaced{"alice", 3000}, orderPaid{3000})
	last := b.append(t, "order-2", orderPlaced{"bob", 1200}, orderPaid{1200}, orderPaid{1})
	b.waitFeed(t, last.LastPosition)

	r := c.ok("verify")
	if !strings.Contains(r.stdout, "verified 5 event(s) in 2 stream(s)") || !strings.Contains(r.stdout, "chains: ok") {
		t.Fatalf("verify:\n%s", r)
	}
	var v struct {
		OK        bool  `json:"ok"`
		Streams   int64 `json:"streams"`
		Events    int64 `json:"events"`
		Unchained int64 `json:"unchained"`
		Breaks    []struct {
			StreamID      string `json:"stream_id"`
			StreamVersion int64  `json:"stream_version"`
			Kind          string `json:"kind"`
		} `json:"breaks"`
		Seal *struct {
			Match bool `json:"match"`
		} `json:"seal"`
	}
	c.jsonOut(&v, "verify", "--stream", "order-2", "--batch-size", "2")
	if !v.OK || v.Streams != 1 || v.Events != 3 || v.Seal != nil {
		t.Fatalf("verify --stream order-2 --json = %+v", v)
	}

	// A seal, to stdout and to a file.
	r = c.ok("seal")
	seal, err := eventstore.ParseSeal([]byte(r.stdout))
	if err != nil || seal.Events != 5 || seal.Streams != 2 {
		t.Fatalf("seal: %+v, %v\n%s", seal, err, r)
	}
	file := filepath.Join(t.TempDir(), "seal.json")
	if r := c.ok("seal", "--out", file); !strings.Contains(r.stdout, "written to "+file) {
		t.Fatalf("seal --out:\n%s", r)
	}
	c.fails(2, []string{"exists"}, "seal", "--out", file)
	if r := c.ok("verify", "--seal", file); !strings.Contains(r.stdout, "chains: ok") || !strings.Contains(r.stdout, ": ok") {
		t.Fatalf("verify --seal:\n%s", r)
	}
	exported, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.command(testCtx(t), "verify", "--seal", "-")
	cmd.Stdin = strings.NewReader(string(exported))
	if r := runCmd(t, cmd); r.code != 0 {
		t.Fatalf("verify --seal - (stdin):\n%s", r)
	}

	// Malformed or missing seal files are refused before anything runs.
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"format":"esox-seal-v1","digest":"zz"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c.fails(2, []string{"--seal", "digest"}, "verify", "--seal", bad)
	c.fails(2, []string{"--seal"}, "verify", "--seal", filepath.Join(t.TempDir(), "missing.json"))
	c.fails(2, []string{"--batch-size"}, "verify", "--batch-size", "0")
	c.fails(2, []string{"--stream"}, "verify", "--stream", " order-1")

	// A changed payload breaks order-1's chain.
	events := b.store.QualifiedEventsTable()
	if _, err := b.db.ExecContext(testCtx(t), `UPDATE `+events+` SET payload = '{"amount": 1}' WHERE stream_id = 'order-1' AND stream_version = 2`); err != nil {
		t.Fatal(err)
	}
	r = c.fails(6, []string{"broken stream"}, "verify")
	if !strings.Contains(r.stdout, "order-1") || !strings.Contains(r.stdout, "changed") {
		t.Fatalf("verify after a change:\n%s", r)
	}
	c.jsonOut(&v, "verify", "--stream", "order-2")
	if !v.OK {
		t.Fatalf("the untouched stream: %+v", v)
	}
	// --json still exits 6, with the break in the output.
	jr := c.fails(6, nil, "--json", "verify")
	if !strings.Contains(jr.stdout, `"kind": "changed"`) || !strings.Contains(jr.stdout, `"ok": false`) {
		t.Fatalf("verify --json after a change:\n%s", jr)
	}

	// A truncated tail leaves the chains valid: only the seal shows it.
	if _, err := b.db.ExecContext(testCtx(t), `UPDATE `+events+` SET payload = '{"amount": 3000}' WHERE stream_id = 'order-1' AND stream_version = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.ExecContext(testCtx(t), `DELETE FROM `+events+` WHERE stream_id = 'order-2' AND stream_version = 3`); err != nil {
		t.Fatal(err)
	}
	c.ok("verify")
	r = c.fails(6, []string{"do not match the seal"}, "verify", "--seal", file)
	if !strings.Contains(r.stdout, "MISMATCH") || !strings.Contains(r.stdout, "removed") {
		t.Fatalf("verify --seal after truncation:\n%s", r)
	}

	// Seals are recorded in the schema.
	store, err := postgres.New(b.db, eventstore.NewRegistry(), postgres.Config{Schema: c.schema, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if seals, err := store.Seals(ctx, 10); err != nil || len(seals) != 2 {
		t.Fatalf("recorded seals = %+v, %v; want the 2 taken", seals, err)
	}
}
