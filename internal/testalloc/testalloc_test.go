package testalloc

import "testing"

var sink []byte

// TestLeastCountsWhatFAllocates: a function that allocates once per call
// measures 1, one that does not allocate measures 0.
func TestLeastCountsWhatFAllocates(t *testing.T) {
	if got := Least(100, func() { sink = make([]byte, 64) }); got != 1 {
		t.Errorf("one allocation per call: Least = %v, want 1", got)
	}
	if got := Least(100, func() {}); got != 0 {
		t.Errorf("no allocation: Least = %v, want 0", got)
	}
}
