package leader

import "sync/atomic"

// WithPausedPings returns cfg whose leader skips its pings while paused is
// true, as a frozen process would.
func WithPausedPings(cfg Config, paused *atomic.Bool) Config {
	cfg.pausePings = paused
	return cfg
}
