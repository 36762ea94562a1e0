package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// Cluster is a private, throwaway PostgreSQL cluster for tests that must
// restart or stop the server (which the shared test server must never be).
// Create it with StartCluster; it is stopped and deleted at cleanup.
type Cluster struct {
	// URL connects to the cluster's "postgres" database as the superuser
	// postgres, over TCP on loopback.
	URL string

	dir, data, logFile, bin, opts string
	runAs                         []string // prefix that runs a command as the postgres user
}

// findPGBin returns the directory holding initdb and pg_ctl: the newest
// /usr/lib/postgresql/*/bin, else the one in PATH.
func findPGBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
				return d, nil
			}
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", fmt.Errorf("initdb not found in /usr/lib/postgresql/*/bin or PATH")
	}
	if _, err := exec.LookPath("pg_ctl"); err != nil {
		return "", fmt.Errorf("pg_ctl not found in PATH")
	}
	return filepath.Dir(p), nil
}

// StartCluster creates a cluster in a new temporary directory (initdb, trust
// auth, fsync off), starts it on a free loopback port and returns it. As
// root it runs the server as the postgres user (runuser). It skips t with a
// clear message when the PostgreSQL server binaries are not installed, and
// fails it on any other error.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin, err := findPGBin()
	if err != nil {
		t.Skipf("pgtest: cannot start a private PostgreSQL cluster (install the PostgreSQL server binaries): %v", err)
	}
	c := &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			t.Skipf("pgtest: running as root without a postgres user to run the server as: %v", err)
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			t.Skipf("pgtest: running as root without runuser: %v", err)
		}
		c.runAs = []string{runuser, "-u", "postgres", "--"}
	}
	// Not t.TempDir: its parent is private to root, and the server runs as
	// postgres.
	c.dir, err = os.MkdirTemp("", "esox-pgcluster-")
	if err != nil {
		t.Fatalf("pgtest: cluster dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(c.dir) })
	if err := os.Chmod(c.dir, 0o755); err != nil {
		t.Fatalf("pgtest: chmod cluster dir: %v", err)
	}
	if len(c.runAs) > 0 {
		u, _ := user.Lookup("postgres")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			t.Fatalf("pgtest: chown cluster dir: %v", err)
		}
	}
	c.data = filepath.Join(c.dir, "data")
	c.logFile = filepath.Join(c.dir, "server.log")
	if out, err := c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("pgtest: free port: %v", err)
	}
	c.opts = fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=50", port, c.dir)
	if out, err := c.run("pg_ctl", "-D", c.data, "-l", c.logFile, "-o", c.opts, "-w", "-t", "60", "start"); err != nil {
		t.Fatalf("pgtest: start cluster: %v\n%s\n%s", err, out, c.serverLog())
	}
	t.Cleanup(func() {
		if out, err := c.run("pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop"); err != nil {
			t.Logf("pgtest: stop cluster (may already be stopped): %v\n%s", err, out)
		}
	})
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return c
}

// Open returns a pool to the cluster, closed at cleanup.
func (c *Cluster) Open(t testing.TB) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("postgres", c.URL)
	if err != nil {
		t.Fatalf("pgtest: open cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		t.Fatalf("pgtest: cluster does not answer: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Restart restarts the server (pg_ctl restart -m fast): every connection is
// terminated and new ones are refused until it is back. It fails t on error.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if out, err := c.run("pg_ctl", "-D", c.data, "-l", c.logFile, "-m", "fast", "-w", "-t", "60", "restart"); err != nil {
		t.Fatalf("pgtest: restart cluster: %v\n%s\n%s", err, out, c.serverLog())
	}
}

// Crash stops the server the way a crash would (pg_ctl stop -m immediate):
// every server process is killed at once, without a checkpoint and without
// a word to clients, so a transaction may have committed without its client
// hearing of it. Start starts it again, running crash recovery. It fails t
// on error.
func (c *Cluster) Crash(t testing.TB) {
	t.Helper()
	if out, err := c.run("pg_ctl", "-D", c.data, "-m", "immediate", "-w", "-t", "60", "stop"); err != nil {
		t.Fatalf("pgtest: crash cluster: %v\n%s", err, out)
	}
}

// Stop stops the server (pg_ctl stop -m fast); Start starts it again.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if out, err := c.run("pg_ctl", "-D", c.data, "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		t.Fatalf("pgtest: stop cluster: %v\n%s", err, out)
	}
}

// Start starts a stopped server with the options it last ran with.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if out, err := c.run("pg_ctl", "-D", c.data, "-l", c.logFile, "-o", c.opts, "-w", "-t", "60", "start"); err != nil {
		t.Fatalf("pgtest: start cluster: %v\n%s\n%s", err, out, c.serverLog())
	}
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, c.runAs...), filepath.Join(c.bin, name)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

func (c *Cluster) serverLog() string {
	b, _ := os.ReadFile(c.logFile)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
