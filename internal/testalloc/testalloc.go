// Package testalloc is esox's one way for its tests to count allocations.
//
// testing.AllocsPerRun counts every allocation of the process while it
// runs, so a goroutine another test left behind, or a codec refilling its
// buffer pool after a garbage collection, adds to the count of whatever is
// measured at that moment. That noise only ever adds: the least of a few
// measures is the measure, and a test compares the least counts of its
// variants, never single AllocsPerRun results.
package testalloc

import "testing"

// Tries is how many times Least measures.
const Tries = 5

// Least returns the least of Tries results of testing.AllocsPerRun(runs, f):
// the allocations f makes itself, with little of what other goroutines
// allocated meanwhile.
func Least(runs int, f func()) float64 {
	least := testing.AllocsPerRun(runs, f)
	for range Tries - 1 {
		least = min(least, testing.AllocsPerRun(runs, f))
	}
	return least
}
