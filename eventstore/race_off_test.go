//go:build !race

package eventstore_test

// raceEnabled: the race detector is on (it slows scans of 256 MiB tenfold).
const raceEnabled = false
