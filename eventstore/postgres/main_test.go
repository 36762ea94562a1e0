package postgres_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails a green run that leaves goroutines behind.
func TestMain(m *testing.M) {
	base := len(goroutines())
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		for len(goroutines()) > base && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if g := goroutines(); len(g) > base {
			fmt.Fprintf(os.Stderr, "leaked goroutines: %d > %d\n%s\n", len(g), base, strings.Join(g, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// goroutines returns the stacks of the running goroutines, without the
// signal handler that the fuzzing engine starts.
func goroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "os/signal.loop") {
			out = append(out, g)
		}
	}
	return out
}
