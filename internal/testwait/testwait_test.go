package testwait

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int64
	Until(t, "the third call", func() bool { return calls.Add(1) >= 3 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3 (Until must stop polling once it holds)", n)
	}
}

// recorder is a testing.TB that records Fatalf instead of ending the test.
type recorder struct {
	testing.TB
	fatal string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = format
	for _, a := range args {
		if s, ok := a.(string); ok {
			r.fatal += " " + s
		}
	}
	panic(r)
}

func TestUntilWithinFailsNamingWhat(t *testing.T) {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if p := recover(); p != r {
				t.Fatalf("UntilWithin did not call Fatalf (recovered %v)", p)
			}
		}()
		UntilWithin(r, 20*time.Millisecond, "a condition that never holds", func() bool { return false })
	}()
	if !strings.Contains(r.fatal, "a condition that never holds") {
		t.Fatalf("the failure %q does not name what it waited for", r.fatal)
	}
}
