package main_test

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/esox-go/esox/internal/testwait"
	"github.com/google/uuid"
)

type recordOut struct {
	Position      string          `json:"position"`
	EventID       string          `json:"event_id"`
	StreamID      string          `json:"stream_id"`
	StreamVersion int64           `json:"stream_version"`
	EventType     string          `json:"event_type"`
	SchemaVersion int             `json:"schema_version"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Metadata      json.RawMessage `json:"metadata"`
	Payload       json.RawMessage `json:"payload"`
}

// jsonEqual reports whether raw and want hold the same JSON value.
func jsonEqual(raw json.RawMessage, want string) bool {
	var a, b any
	return json.Unmarshal(raw, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && reflect.DeepEqual(a, b)
}

func eventIDs(rs []recordOut) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.EventID)
	}
	return ids
}

func idStrings(ids []uuid.UUID) []string {
	var out []string
	for _, id := range ids {
		out = append(out, id.String())
	}
	return out
}

// TestStreamsAndEvents: streams list (all, by category, paged), stream read
// and event show print events the command has no Go types for, payloads
// and metadata as stored; an unknown stream or event exits 3, a bad event
// ID or stream ID 2, a schema without esox's tables 3.
func TestStreamsAndEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.cli
	o1 := b.append(t, "order-1", orderPlaced{"alice", 3000}, orderPaid{3000})
	b.append(t, "order-2", orderPlaced{"bob", 1200})
	b.append(t, "cart-7", orderPaid{1})

	r := c.ok("streams", "list")
	if !strings.Contains(r.stdout, "STREAM") || !strings.Contains(r.stdout, "order-1  2") || strings.Index(r.stdout, "cart-7") > strings.Index(r.stdout, "order-1") {
		t.Fatalf("streams list:\n%s", r)
	}
	var streams []struct {
		StreamID       string    `json:"stream_id"`
		Category       string    `json:"category"`
		Version        int64     `json:"version"`
		LastRecordedAt time.Time `json:"last_recorded_at"`
	}
	c.jsonOut(&streams, "streams", "list", "--category", "order")
	if len(streams) != 2 || streams[0].StreamID != "order-1" || streams[0].Category != "order" || streams[0].Version != 2 || streams[0].LastRecordedAt.IsZero() || streams[1].StreamID != "order-2" {
		t.Fatalf("streams list --category order --json = %+v", streams)
	}
	r = c.ok("streams", "list", "--limit", "1")
	if !strings.Contains(r.stdout, "cart-7") || strings.Contains(r.stdout, "order-1") || !strings.Contains(r.stderr, `--after "cart-7"`) {
		t.Fatalf("streams list --limit 1:\n%s", r)
	}
	if r := c.ok("streams", "list", "--after", "cart-7", "--limit", "1"); !strings.Contains(r.stdout, "order-1") || strings.Contains(r.stdout, "order-2") {
		t.Fatalf("streams list --after cart-7 --limit 1:\n%s", r)
	}
	c.fails(2, []string{"Category"}, "streams", "list", "--category", "order-1")
	c.fails(2, []string{"--limit"}, "streams", "list", "--limit", "0")

	var recs []recordOut
	c.jsonOut(&recs, "stream", "read", "order-1")
	if len(recs) != 2 || recs[0].EventType != "order_placed" || recs[1].StreamVersion != 2 || recs[0].Position != o1.LastPosition.String() && recs[1].Position != o1.LastPosition.String() {
		t.Fatalf("stream read --json = %+v", recs)
	}
	var placed orderPlaced
	if err := json.Unmarshal(recs[0].Payload, &placed); err != nil || placed != (orderPlaced{"alice", 3000}) {
		t.Fatalf("payload %s: %v", recs[0].Payload, err)
	}
	if !strings.Contains(string(recs[0].Metadata), `"corr-order-1"`) || recs[0].EventID != o1.EventIDs[0].String() {
		t.Fatalf("record = %+v", recs[0])
	}
	r = c.ok("stream", "read", "order-1", "--from", "2", "--limit", "1")
	if !strings.Contains(r.stdout, "order_paid") || strings.Contains(r.stdout, "order_placed") || !strings.Contains(r.stdout, `{"amount":3000}`) || !strings.Contains(r.stderr, "--from 3") {
		t.Fatalf("stream read --from 2 --limit 1:\n%s", r)
	}
	if r := c.ok("stream", "read", "order-1", "--from", "3"); strings.Contains(r.stdout, "order_") {
		t.Fatalf("stream read past its end:\n%s", r)
	}
	c.fails(3, []string{`stream "order-404" not found`}, "stream", "read", "order-404")
	c.fails(2, []string{"stream id"}, "stream", "read", " order-1")

	id := o1.EventIDs[1].String()
	r = c.ok("event", "show", id)
	for _, w := range []string{"event_id     " + id, "stream       order-1 (version 2)", "position     " + o1.LastPosition.String(), "type         order_paid (schema version 1)", `"amount": 3000`, "corr-order-1"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("event show lacks %q:\n%s", w, r)
		}
	}
	var rec recordOut
	c.jsonOut(&rec, "event", "show", id)
	if rec.EventID != id || rec.StreamID != "order-1" || rec.Position != o1.LastPosition.String() || rec.SchemaVersion != 1 || !jsonEqual(rec.Payload, `{"amount":3000}`) {
		t.Fatalf("event show --json = %+v", rec)
	}
	missing := uuid.Must(uuid.NewV7()).String()
	c.fails(3, []string{"event " + missing + " not found"}, "event", "show", missing)
	c.fails(2, []string{`"not-a-uuid" is not a UUID`}, "event", "show", "not-a-uuid")

	other := cli{t: t, schema: c.schema + "_none"}
	other.fails(3, []string{"has no esox events table", "--schema"}, "streams", "list")
}

// TestFeed: feed read prints the feed in order from a position; a bad
// position is a usage error (exit 2) naming the syntax; feed follow prints
// events appended after it started, as JSON lines, and stops after --limit
// events, or at SIGINT with exit 0.
func TestFeed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.cli
	a := b.append(t, "order-1", orderPlaced{"alice", 1}, orderPaid{1})
	bb := b.append(t, "order-2", orderPlaced{"bob", 2})
	b.waitFeed(t, bb.LastPosition)
	want := append(idStrings(a.EventIDs), idStrings(bb.EventIDs)...)

	var recs []recordOut
	c.jsonOut(&recs, "feed", "read")
	if got := eventIDs(recs); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("feed read = %v, want %v", got, want)
	}
	c.jsonOut(&recs, "feed", "read", "--after", recs[0].Position, "--limit", "1")
	if len(recs) != 1 || recs[0].EventID != want[1] {
		t.Fatalf("feed read --after the first --limit 1 = %v", eventIDs(recs))
	}
	r := c.ok("feed", "read", "--after", "0/0", "--limit", "2")
	if !strings.Contains(r.stdout, "POSITION") || !strings.Contains(r.stdout, want[1]) || strings.Contains(r.stdout, want[2]) || !strings.Contains(r.stderr, "--after "+a.LastPosition.String()) {
		t.Fatalf("feed read --limit 2:\n%s", r)
	}
	for _, bad := range []string{"12", "1/x", "-1/2", "1/2/3"} {
		c.fails(2, []string{"--after", "transaction_id/position"}, "feed", "read", "--after", bad)
	}
	c.fails(2, []string{"--limit"}, "feed", "read", "--limit", "0")

	// follow --limit: the events appended after the head it starts from.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	follow := c.command(ctx, "--json", "feed", "follow", "--after", bb.LastPosition.String(), "--limit", "3", "--poll-interval", "20ms")
	var out, errOut syncBuffer
	follow.Stdout, follow.Stderr = &out, &errOut
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	later := b.append(t, "order-3", orderPlaced{"carol", 3}, orderPaid{3})
	later2 := b.append(t, "order-4", orderPlaced{"dave", 4})
	if err := follow.Wait(); err != nil {
		t.Fatalf("feed follow --limit 3: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var followed []string
	for _, l := range lines {
		var r recordOut
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("feed follow line %q: %v", l, err)
		}
		followed = append(followed, r.EventID)
	}
	if wantF := append(idStrings(later.EventIDs), idStrings(later2.EventIDs)...); strings.Join(followed, " ") != strings.Join(wantF, " ") {
		t.Fatalf("feed follow = %v, want %v", followed, wantF)
	}

	// follow until interrupted, human lines, from the current head.
	follow = c.command(ctx, "feed", "follow", "--poll-interval", "20ms")
	out, errOut = syncBuffer{}, syncBuffer{}
	follow.Stdout, follow.Stderr = &out, &errOut
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "feed follow to start", func() bool { return strings.Contains(errOut.String(), "following the feed of schema") })
	last := b.append(t, "order-5", orderPaid{5})
	testwait.Until(t, "feed follow to print the new event", func() bool { return strings.Contains(out.String(), last.EventIDs[0].String()) })
	if err := follow.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := follow.Wait(); err != nil {
		t.Fatalf("feed follow after SIGINT: %v, want exit 0\n%s", err, errOut.String())
	}
	if s := out.String(); strings.Contains(s, later2.EventIDs[0].String()) || !strings.Contains(s, "order-5  v1  order_paid") {
		t.Fatalf("feed follow from the head printed:\n%s", s)
	}
	c.fails(2, []string{"--after"}, "feed", "follow", "--after", "x")
}
