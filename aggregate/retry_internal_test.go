package aggregate

import (
	"testing"
	"time"
)

type counter struct{ Base }

func (*counter) Apply(any) {}

// TestBackoff: the wait after the n-th failed attempt is drawn between half
// and all of RetryBackoff·2^(n-1), capped at MaxRetryBackoff, and never
// overflows however many retries are allowed.
func TestBackoff(t *testing.T) {
	t.Parallel()
	r := &Repository[*counter]{cfg: Config{RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 500 * time.Millisecond}.WithDefaults()}
	for _, tt := range []struct {
		retry   int
		ceiling time.Duration
	}{
		{1, 5 * time.Millisecond},
		{2, 10 * time.Millisecond},
		{7, 320 * time.Millisecond},
		{8, 500 * time.Millisecond},
		{63, 500 * time.Millisecond},
		{64, 500 * time.Millisecond},
		{1000, 500 * time.Millisecond},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := r.backoff(tt.retry)
			if d < tt.ceiling/2 || d >= tt.ceiling {
				t.Fatalf("backoff(%d) = %s, want in [%s, %s)", tt.retry, d, tt.ceiling/2, tt.ceiling)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("backoff(%d) drew %d distinct waits in 200 tries: no jitter", tt.retry, len(seen))
		}
	}
	// A one-nanosecond policy retries at once.
	r.cfg.RetryBackoff, r.cfg.MaxRetryBackoff = time.Nanosecond, time.Nanosecond
	if d := r.backoff(3); d != 0 {
		t.Fatalf("1ns policy: backoff = %s, want 0", d)
	}
}
