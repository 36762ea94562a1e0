package postgres

// DisableTelemetry switches s's instrumentation off entirely: no span, no
// metric, no trace context in the events: the code paths of a build without
// instrumentation, the baseline of BenchmarkAppendTelemetry. Call it before
// s is used.
func DisableTelemetry(s *Store) { s.tel = nil }
