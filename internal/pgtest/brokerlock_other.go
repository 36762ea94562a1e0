//go:build !unix

package pgtest

import "testing"

// LockBroker is a no-op where flock(2) is unavailable: broker tests that
// disturb the broker may then interfere with others running in parallel.
func LockBroker(t testing.TB, broker string, exclusive bool) {
	t.Helper()
	t.Logf("pgtest: no cross-process broker lock on this platform (%s)", broker)
}

// waitBrokerIdle returns at once where flock(2) is unavailable.
func waitBrokerIdle(string) {}
