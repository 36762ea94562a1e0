package forwarder

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leader"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// childEnvSchema, when set, makes the test binary run a forwarder on that
// schema instead of the tests (see runChild).
const childEnvSchema = "ESOX_FORWARDER_TEST_CHILD_SCHEMA"

// runChild runs a forwarder on the schema named by childEnvSchema that
// "publishes" by printing "published <uuid> <stream_id> <version>" lines on
// stdout, 20 ms each and one at a time, until the process is killed. It returns the exit code.
func runChild() int {
	db, err := sqlx.Open("postgres", pgtest.DatabaseURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	store, err := postgres.New(db, testRegistry(), postgres.Config{Schema: os.Getenv(childEnvSchema)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	var mu sync.Mutex
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintf(os.Stdout, "published %s %s %s\n", msg.UUID, msg.Metadata.Get(MetadataStreamID), msg.Metadata.Get(MetadataStreamVersion))
		return err
	}}
	// One publish at a time: 200 events take 4 s, so the child is still
	// publishing when the test kills it (with concurrent publishes it would
	// finish in well under a second).
	f, err := New(store, pub, Config{PublishConcurrency: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if err := f.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// TestTakeoverAfterKill: a forwarder in another process leads; it is killed
// with SIGKILL in the middle of the backlog; a standby forwarder in this
// process takes over within 5 s, and every event arrives at least once, in
// version order per stream.
func TestTakeoverAfterKill(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := migrate(testCtx(t), b.store); err != nil {
		t.Fatal(err)
	}
	want := b.appendSpread(t, streamsOf("order", 5), 40) // 200 events, 4 s in the child

	var childGot collector
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnvSchema+"="+b.schema)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 4 && f[0] == "published" {
				var v int64
				fmt.Sscan(f[3], &v)
				childGot.add(delivery{UUID: f[1], StreamID: f[2], Version: v})
			}
		}
	}()
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", stderr.String())
		}
	})
	testwait.Until(t, "the child to lead and publish", func() bool { return childGot.len() >= 10 })

	pub := &recordingPublisher{}
	standby := newForwarder(t, b, pub, Config{})
	key := LeaderKey(b.store.Schema(), standby.cfg.ConsumerGroup)
	from := leader.Tries(key)
	runForwarder(t, standby)
	// The standby tries the lock twice (leader.Tries: the server answered
	// both); had it won either, it would publish the backlog.
	testwait.Until(t, "the standby to try the lock twice", func() bool {
		return leader.Tries(key) >= from+2 || pub.len() != 0
	})
	if pub.len() != 0 {
		t.Fatalf("the standby published %d events while the child led", pub.len())
	}

	if n := childGot.distinct(); n >= 200 {
		t.Fatalf("the child published all %d events before the kill: the takeover would not be tested", n)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	_ = cmd.Wait()
	killed = true
	<-scanned
	t.Logf("child published %d events before SIGKILL", childGot.len())

	testwait.UntilWithin(t, 5*time.Second, "the standby to take over", func() bool { return pub.len() > 0 })
	t.Logf("standby took over %s after the kill", time.Since(killedAt))
	testwait.Until(t, "every event", func() bool {
		seen := map[string]bool{}
		for _, d := range append(childGot.all(), pub.all()...) {
			seen[d.UUID] = true
		}
		return len(seen) == 200
	})
	checkDelivered(t, append(childGot.all(), pub.all()...), want)
}
