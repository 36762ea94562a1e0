package leaktest

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func TestWaitReportsALeakAndForgivesAnEndedGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-release
	}()
	err := wait(base, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "leaktest.TestWaitReportsALeakAndForgivesAnEndedGoroutine") {
		t.Fatalf("wait with a blocked goroutine = %v, want an error with its stack", err)
	}
	close(release)
	<-done
	if err := wait(base, time.Second); err != nil {
		t.Fatalf("wait after the goroutine ended: %v", err)
	}
}
