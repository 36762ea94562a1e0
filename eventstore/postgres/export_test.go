package postgres

// RunningWatchers returns how many feed watcher goroutines of s are started
// and have not returned.
func RunningWatchers(s *Store) int { return int(s.hub.running.Load()) }

// HeadSQL returns the query Head runs.
func HeadSQL(s *Store) string { return s.headSQL }
