// Package leaktest fails a green test run that leaves goroutines behind, the
// check STYLE.md asks of every package's TestMain.
package leaktest

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// Grace is how long Run waits for goroutines started by the tests to end
// (pools closing, runners returning) before it calls them leaked.
const Grace = 10 * time.Second

// Run runs m's tests and returns the exit code for os.Exit. When the tests
// passed but more goroutines are alive than before them once Grace has
// passed, it prints every goroutine's stack and returns 1. Fuzzing runs are
// not checked: the fuzzing engine keeps goroutines of its own.
//
//	func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }
func Run(m *testing.M) int {
	base := runtime.NumGoroutine()
	code := m.Run()
	if f := flag.Lookup("test.fuzz"); code != 0 || (f != nil && f.Value.String() != "") {
		return code
	}
	if err := wait(base, Grace); err != nil {
		fmt.Fprintf(os.Stderr, "leaktest: %v\n", err)
		return 1
	}
	return code
}

// wait waits up to grace for the number of goroutines to fall back to base,
// and returns an error with every goroutine's stack if it does not.
func wait(base int, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		return fmt.Errorf("%d goroutines alive after the tests, %d before\n%s", n, base, buf)
	}
	return nil
}
