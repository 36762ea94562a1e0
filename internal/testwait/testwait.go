// Package testwait is esox's one way for its tests to wait for a condition:
// poll it until it holds, or fail the test naming what it waited for.
//
// Tests wait for a signal, not for time: a test that needs something to
// have happened polls for the evidence that it happened (a counter, a
// position, a row) with Until, and never sleeps and hopes.
package testwait

import (
	"testing"
	"time"
)

// DefaultTimeout is how long Until waits before it fails the test. It is
// generous on purpose: it only bounds a test that is failing anyway, and a
// machine busy with other test binaries must not fail a correct test.
const DefaultTimeout = time.Minute

// PollInterval is how often Until and UntilWithin check the condition.
const PollInterval = 10 * time.Millisecond

// Until polls cond every PollInterval until it returns true, and fails t
// with t.Fatalf, naming what, when DefaultTimeout passes first. It must be
// called from the goroutine running the test, as t.Fatalf must.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	UntilWithin(t, DefaultTimeout, what, cond)
}

// UntilWithin is Until with a timeout of its own. Use it only where the
// default is too short, not to assert how fast something happens.
func UntilWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(PollInterval)
	}
}
