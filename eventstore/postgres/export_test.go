package postgres

// RunningWatchers returns how many feed watcher goroutines of s are started
// and have not returned.
func RunningWatchers(s *Store) int { return int(s.hub.running.Load()) }

// HeadSQL returns the query Head runs.
func HeadSQL(s *Store) string { return s.headSQL }

// DisableTelemetry switches s's instrumentation off entirely: no span, no
// metric, no trace context in the events: the code paths of a build without
// instrumentation, the baseline of BenchmarkAppendTelemetry. Call it before
// s is used.
func DisableTelemetry(s *Store) { s.tel = nil }

// DisableTraceContext keeps s's spans and metrics but records no trace
// context in the events it appends: what BenchmarkAppendTelemetry's
// sdk-nocontext variant measures against sdk. Call it before s is used.
func DisableTraceContext(s *Store) { s.noTraceContext = true }
