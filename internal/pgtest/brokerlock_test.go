//go:build unix

package pgtest

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esox-go/esox/internal/leaktest"
)

func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }

// TestSkipOrFailBrokerWaitsForAnOutage: a broker probe that fails while
// another test holds the broker's lock exclusively (and has the broker
// down) waits for that test and dials again, instead of skipping or
// failing.
func TestSkipOrFailBrokerWaitsForAnOutage(t *testing.T) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	broker := "PgtestSelf" + hex.EncodeToString(b[:])
	path := filepath.Join(os.TempDir(), "esox-broker-"+strings.ToLower(broker)+".lock")
	t.Cleanup(func() { _ = os.Remove(path) })

	// The "broker": an address nothing listens on yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, dialErr := net.DialTimeout("tcp", addr, time.Second)
	if dialErr == nil {
		t.Skip("something listens on the freed port")
	}

	// Another "test" holds the lock exclusively during the outage.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	waiting := make(chan struct{})
	var once sync.Once
	brokerBusyHook = func() { once.Do(func() { close(waiting) }) }
	t.Cleanup(func() { brokerBusyHook = func() {} })
	probed := make(chan struct{})
	wentOn := false
	go func() {
		defer close(probed)
		t.Run("probe", func(t *testing.T) {
			SkipOrFailBroker(t, broker, dialErr)
			wentOn = true
		})
	}()
	select {
	case <-waiting:
	case <-probed:
		t.Fatal("SkipOrFailBroker did not wait for the test holding the broker's lock")
	}
	// The outage ends: the broker listens again, then the lock is released.
	ln, lnErr := net.Listen("tcp", addr)
	if lnErr == nil {
		defer ln.Close()
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	<-probed
	if lnErr != nil {
		t.Skipf("cannot listen on %s again: %v", addr, lnErr)
	}
	if !wentOn {
		t.Fatal("SkipOrFailBroker skipped or failed although the broker answered once the outage ended")
	}
}
