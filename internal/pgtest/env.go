package pgtest

import (
	"os"
	"strconv"
	"testing"
)

// EnvInt returns the positive integer in the environment variable name, or
// def when it is unset; any other value fails tb. Benchmarks size themselves
// with it (ESOX_BENCH_EVENTS, ESOX_BENCH_SECONDS, ESOX_BENCH_BACKLOG).
func EnvInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
