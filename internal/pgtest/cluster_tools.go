package pgtest

import (
	"path/filepath"
	"strconv"
	"testing"
)

// SetXIDEpoch stops the cluster, sets the epoch of its transaction ids
// with pg_resetwal -e (every 64-bit transaction id, xid8, is then
// epoch<<32 plus the 32-bit id, as in a cluster that wrapped around that
// many times) and starts it again. It fails t on error.
func (c *Cluster) SetXIDEpoch(t testing.TB, epoch uint32) {
	t.Helper()
	c.Stop(t)
	if out, err := c.run("pg_resetwal", "-e", strconv.FormatUint(uint64(epoch), 10), "-D", c.data); err != nil {
		t.Fatalf("pgtest: pg_resetwal: %v\n%s", err, out)
	}
	c.Start(t)
}

// Bin returns the path of the PostgreSQL program name (pg_dump,
// pg_restore, psql, …) of the installation the cluster runs, for a client
// of the same version as the server.
func (c *Cluster) Bin(name string) string { return filepath.Join(c.bin, name) }
