package main_test

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/internal/testwait"
)

// countingPublisher accepts every message.
type countingPublisher struct {
	mu sync.Mutex
	n  int
}

func (p *countingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += len(msgs)
	return nil
}

func (p *countingPublisher) Close() error { return nil }

type groupOut struct {
	ConsumerGroup string    `json:"consumer_group"`
	Offset        string    `json:"offset"`
	Head          string    `json:"head"`
	Lag           int64     `json:"lag"`
	LeaderRunning bool      `json:"leader_running"`
	UpdatedAt     time.Time `json:"updated_at"`
}

func (b *bundle) groups(t *testing.T) map[string]groupOut {
	t.Helper()
	var gs []groupOut
	b.cli.jsonOut(&gs, "forwarder", "list")
	out := map[string]groupOut{}
	for _, g := range gs {
		out[g.ConsumerGroup] = g
	}
	return out
}

// TestForwarder: forwarder list shows each group's offset, lag and leader;
// set-offset refuses, changing nothing, while a leader runs (exit 4), for
// an unknown group (3), a bad position or one after the head (2), and
// without --yes when stdin is not a terminal (5); with --yes, or a "y" at
// the prompt on a terminal, it moves the offset; "n" leaves it. Shell
// completion offers the groups.
func TestForwarder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.cli
	if r := c.ok("forwarder", "list"); !strings.Contains(r.stdout, "no consumer groups") {
		t.Fatalf("forwarder list without groups:\n%s", r)
	}
	first := b.append(t, "order-1", orderPlaced{"alice", 1}, orderPaid{1})
	last := b.append(t, "order-2", orderPlaced{"bob", 2})
	b.waitFeed(t, last.LastPosition)

	// A leading forwarder, in this process.
	live, err := forwarder.New(b.store, &countingPublisher{}, forwarder.Config{ConsumerGroup: "live", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- live.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("forwarder Run: %v", err)
			}
		}
	}
	defer stop()
	testwait.Until(t, "the live group to publish everything", func() bool {
		off, err := live.Offset(testCtx(t))
		return err == nil && off == last.LastPosition
	})
	// A group with an offset and no forwarder running.
	if err := mustForwarder(t, b, "idle").SetOffset(testCtx(t), eventstore.Position{}); err != nil {
		t.Fatal(err)
	}

	r := c.ok("forwarder", "list")
	for _, w := range []string{"feed head " + last.LastPosition.String(), "idle   0/0", "live   " + last.LastPosition.String(), "running"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("forwarder list lacks %q:\n%s", w, r)
		}
	}
	gs := b.groups(t)
	if g := gs["idle"]; g.Offset != "0/0" || g.Lag != 3 || g.LeaderRunning || g.Head != last.LastPosition.String() || g.UpdatedAt.IsZero() {
		t.Fatalf("idle = %+v", g)
	}
	if g := gs["live"]; g.Offset != last.LastPosition.String() || g.Lag != 0 || !g.LeaderRunning {
		t.Fatalf("live = %+v", g)
	}

	to := first.LastPosition.String()
	c.fails(4, []string{"refused: a forwarder of consumer group \"live\" is running", "stop every instance"}, "forwarder", "set-offset", "live", "0/0", "--yes")
	c.fails(3, []string{`consumer group "liev" not found`, "known groups: idle, live"}, "forwarder", "set-offset", "liev", to, "--yes")
	c.fails(2, []string{"position", "transaction_id/position"}, "forwarder", "set-offset", "idle", "later", "--yes")
	ahead := eventstore.Position{TransactionID: last.LastPosition.TransactionID + 1_000_000, Position: 1}.String()
	c.fails(2, []string{"after the feed's head"}, "forwarder", "set-offset", "idle", ahead, "--yes")
	c.fails(5, []string{"not confirmed", "--yes"}, "forwarder", "set-offset", "idle", to)
	c.fails(2, nil, "forwarder", "set-offset", "idle")
	if g := b.groups(t); g["idle"].Offset != "0/0" || g["live"].Offset != last.LastPosition.String() {
		t.Fatalf("groups after refusals = %+v, want them unchanged", g)
	}

	var moved struct {
		ConsumerGroup  string `json:"consumer_group"`
		PreviousOffset string `json:"previous_offset"`
		Offset         string `json:"offset"`
	}
	c.jsonOut(&moved, "forwarder", "set-offset", "idle", to, "--yes")
	if moved.ConsumerGroup != "idle" || moved.PreviousOffset != "0/0" || moved.Offset != to {
		t.Fatalf("set-offset --json = %+v", moved)
	}
	if g := b.groups(t)["idle"]; g.Offset != to || g.Lag != 1 {
		t.Fatalf("idle after set-offset = %+v", g)
	}

	// Completion offers the groups.
	r = c.ok("__complete", "forwarder", "set-offset", "")
	if !strings.Contains(r.stdout, "idle\nlive\n") {
		t.Fatalf("completion of a group:\n%s", r)
	}

	// The live group moves once its forwarder is stopped; at the prompt on
	// a terminal, "n" keeps it and "y" moves it.
	stop()
	testwait.Until(t, "the live group's leader to stop", func() bool { return !b.groups(t)["live"].LeaderRunning })
	if runtime.GOOS != "linux" {
		t.Skip("the prompt needs a pseudo-terminal, opened on Linux only")
	}
	if r := b.answer(t, "n\n", "forwarder", "set-offset", "live", "0/0"); r.code != 5 || !strings.Contains(r.stderr, "Continue? [y/N]") || !strings.Contains(r.stderr, "publishes the events after it again") {
		t.Fatalf("set-offset answered n: %s", r)
	}
	if g := b.groups(t)["live"]; g.Offset != last.LastPosition.String() {
		t.Fatalf("live after n = %+v", g)
	}
	if r := b.answer(t, "y\n", "forwarder", "set-offset", "live", "0/0"); r.code != 0 || !strings.Contains(r.stdout, "offset moved from "+last.LastPosition.String()+" to 0/0") {
		t.Fatalf("set-offset answered y: %s", r)
	}
	if g := b.groups(t)["live"]; g.Offset != "0/0" || g.Lag != 3 {
		t.Fatalf("live after y = %+v", g)
	}
}

func mustForwarder(t *testing.T, b *bundle, group string) *forwarder.Forwarder {
	t.Helper()
	f, err := forwarder.New(b.store, &countingPublisher{}, forwarder.Config{ConsumerGroup: group, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// answer runs the command with a terminal as stdin and types input into it.
func (b *bundle) answer(t *testing.T, input string, args ...string) result {
	t.Helper()
	control, terminal, err := openPTY()
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	defer control.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := b.cli.command(ctx, args...)
	cmd.Stdin = terminal
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	terminal.Close()
	testwait.Until(t, "the prompt", func() bool { return strings.Contains(stderr.String(), "[y/N]") })
	if _, err := control.WriteString(input); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}
