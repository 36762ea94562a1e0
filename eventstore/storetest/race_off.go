//go:build !race

package storetest

// raceEnabled reports whether the race detector is on, under which
// LargeRefusals would take tens of seconds (encoding/json compacting 256 MiB,
// instrumented).
const raceEnabled = false
