//go:build unix

package pgtest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// LockBrokerTimeout is how long LockBroker waits for the lock before it
// fails the test.
const LockBrokerTimeout = 3 * time.Minute

// LockBroker takes a cross-process lock on broker (e.g. "rabbitmq"), held
// until t's cleanup: shared (exclusive false) by tests that only use the
// broker, exclusive by tests that disturb it for everyone, such as stopping
// and starting RabbitMQ's app. Test binaries of different packages run in
// parallel processes, so the lock is a flock(2) on the file
// esox-broker-<broker>.lock in os.TempDir(); the kernel releases it when the
// process dies, so a killed test run leaves no stale lock.
//
// It waits up to LockBrokerTimeout, polling, and fails the test after that.
func LockBroker(t testing.TB, broker string, exclusive bool) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "esox-broker-"+broker+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("pgtest: open broker lock %s: %v", path, err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	deadline := time.Now().Add(LockBrokerTimeout)
	for {
		err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			t.Fatalf("pgtest: lock broker %s: %v", broker, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("pgtest: broker %s still locked by another test after %s", broker, LockBrokerTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}

// brokerBusyHook is called each time waitBrokerIdle finds the lock held
// exclusively; tests replace it to know that it waits.
var brokerBusyHook = func() {}

// waitBrokerIdle waits, up to LockBrokerTimeout, until no test holds
// broker's lock exclusively: it takes the lock shared and releases it at
// once.
func waitBrokerIdle(broker string) {
	path := filepath.Join(os.TempDir(), "esox-broker-"+broker+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return
	}
	defer f.Close()
	deadline := time.Now().Add(LockBrokerTimeout)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			return
		}
		if (err != syscall.EWOULDBLOCK && err != syscall.EINTR) || time.Now().After(deadline) {
			return
		}
		brokerBusyHook()
		time.Sleep(50 * time.Millisecond)
	}
}
