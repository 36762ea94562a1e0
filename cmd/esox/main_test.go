package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// esoxBin is the esox command built once by TestMain.
var esoxBin string

// TestMain builds the command into a temporary directory, runs the tests
// (which run it as a process) and fails a green run that leaves goroutines
// behind.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "esoxcli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	esoxBin = filepath.Join(dir, "esox")
	if runtime.GOOS == "windows" {
		esoxBin += ".exe"
	}
	build := exec.Command("go", "build", "-o", esoxBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build esox:", err)
		os.Exit(1)
	}
	code := leaktest.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the command.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs the command against one schema of the test database.
type cli struct {
	t      *testing.T
	schema string
	env    []string // extra environment, after DATABASE_URL
}

// command returns the command for args, with DATABASE_URL set to the test
// database (and ESOX_SCHEMA unset) and --schema given.
func (c cli) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, esoxBin, append([]string{"--schema", c.schema}, args...)...)
	cmd.Env = append(cleanEnv(), "DATABASE_URL="+pgtest.DatabaseURL())
	cmd.Env = append(cmd.Env, c.env...)
	return cmd
}

// cleanEnv is the test's environment without the variables the command
// reads.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "ESOX_SCHEMA=")
	})
}

// run runs the command with args to its end, stdin empty (not a terminal).
func (c cli) run(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runCmd(c.t, c.command(ctx, args...))
}

func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return r
}

// ok runs the command and fails the test unless it exits 0.
func (c cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("esox %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// fails runs the command and fails the test unless it exits with code and
// its stderr contains each of want.
func (c cli) fails(code int, want []string, args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != code {
		c.t.Fatalf("esox %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			c.t.Fatalf("esox %s: stderr lacks %q\n%s", strings.Join(args, " "), w, r)
		}
	}
	return r
}

// jsonOut runs the command with --json, expects exit 0 and decodes stdout
// into v.
func (c cli) jsonOut(v any, args ...string) {
	c.t.Helper()
	r := c.ok(append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		c.t.Fatalf("esox --json %s: %v\n%s", strings.Join(args, " "), err, r)
	}
}

// Test event types, appended by the tests through a typed store; the
// command reads them without knowing them.
type orderPlaced struct {
	Customer string `json:"customer"`
	Total    int    `json:"total"`
}

type orderPaid struct {
	Amount int `json:"amount"`
}

// bundle is a test's database, schema, typed store and command.
type bundle struct {
	db    *sqlx.DB
	store *postgres.Store
	cli   cli
}

// setup returns a fresh schema with esox's tables, migrated by the
// command itself.
func setup(t *testing.T) *bundle {
	t.Helper()
	db := pgtest.Open(t)
	db.SetMaxOpenConns(20)
	schema := pgtest.Schema(t, db)
	c := cli{t: t, schema: schema}
	c.ok("migrate", "apply")
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[orderPlaced](reg, "order_placed")
	eventstore.MustRegister[orderPaid](reg, "order_paid")
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return &bundle{db: db, store: store, cli: c}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (b *bundle) append(t *testing.T, stream string, evs ...any) eventstore.AppendResult {
	t.Helper()
	events := make([]eventstore.Event, len(evs))
	for i, e := range evs {
		events[i] = eventstore.Event{Data: e}
	}
	res, err := b.store.Append(eventstore.WithMetadata(testCtx(t), eventstore.Metadata{CorrelationID: "corr-" + stream}), stream, eventstore.Any, events)
	if err != nil {
		t.Fatalf("append %s: %v", stream, err)
	}
	return res
}

// waitFeed waits until the feed's head is at least p (an append becomes
// readable once no older transaction on the server is open).
func (b *bundle) waitFeed(t *testing.T, p eventstore.Position) {
	t.Helper()
	testwait.Until(t, "the feed to reach "+p.String(), func() bool {
		head, err := b.store.Head(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		return !head.Less(p)
	})
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
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

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
