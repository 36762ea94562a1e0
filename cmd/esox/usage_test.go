package main_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// bare runs the command with env as its only esox settings (no
// DATABASE_URL, no --schema).
func bare(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, esoxBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	return runCmd(t, cmd)
}

// TestUsageErrors: unknown commands and flags, missing or extra arguments,
// a bad --timeout or --schema and no database URL exit 2 with a message;
// no command prints the help and exits 0.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	db := []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/none?sslmode=disable"}
	if r := bare(t, db); r.code != 0 || !strings.Contains(r.stdout, "Exit codes") || !strings.Contains(r.stdout, "migrate") {
		t.Fatalf("esox without a command: %s", r)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"migrate", "nosuch"}, `unknown command "nosuch" for "esox migrate"`},
		{[]string{"feed", "read", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"stream", "read"}, "accepts 1 arg(s), received 0"},
		{[]string{"event", "show", "a", "b"}, "accepts 1 arg(s), received 2"},
		{[]string{"streams", "list", "--limit", "many"}, "invalid argument"},
		{[]string{"--timeout", "-1s", "streams", "list"}, "--timeout must not be negative"},
		{[]string{"--schema", "pg_catalog", "streams", "list"}, "reserved by PostgreSQL"},
		{[]string{"--schema", "bad-name", "migrate", "plan"}, "--schema"},
	} {
		if r := bare(t, db, tc.args...); r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("esox %s: want exit 2 and %q: %s", strings.Join(tc.args, " "), tc.want, r)
		}
	}
	if r := bare(t, nil, "streams", "list"); r.code != 2 || !strings.Contains(r.stderr, "no database: set $DATABASE_URL or pass --database-url") {
		t.Fatalf("without a database URL: %s", r)
	}
}

// TestPasswordNeverPrinted: a database that cannot be reached fails with
// exit 1, and neither the error nor anything else shows the URL's
// password, whether given as a flag, in $DATABASE_URL or as key=value.
func TestPasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	const pw = "s3cret-Pa55word"
	for name, run := range map[string]func() result{
		"flag": func() result {
			return bare(t, nil, "--database-url", "postgres://esox:"+pw+"@127.0.0.1:1/none?sslmode=disable&connect_timeout=5", "streams", "list")
		},
		"env": func() result {
			return bare(t, []string{"DATABASE_URL=postgres://esox:" + pw + "@127.0.0.1:1/none?sslmode=disable&connect_timeout=5"}, "migrate", "status")
		},
		"key=value": func() result {
			return bare(t, []string{"DATABASE_URL=host=127.0.0.1 port=1 user=esox password=" + pw + " dbname=none sslmode=disable connect_timeout=5"}, "forwarder", "list")
		},
		"unparsable": func() result {
			return bare(t, []string{"DATABASE_URL=postgres://esox:" + pw + "@127.0.0.1:notaport/none"}, "forwarder", "list")
		},
	} {
		r := run()
		if r.code == 0 || strings.Contains(r.stdout+r.stderr, pw) || !strings.Contains(r.stderr, "esox:") {
			t.Errorf("%s: want a failure without the password: %s", name, r)
		}
	}
}

// TestCompletionAndVersion: completion scripts for bash, zsh and fish, and
// the version.
func TestCompletionAndVersion(t *testing.T) {
	t.Parallel()
	for shell, want := range map[string]string{"bash": "__start_esox", "zsh": "#compdef esox", "fish": "complete -c esox"} {
		if r := bare(t, nil, "completion", shell); r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: want %q: exit %d, stderr %s", shell, want, r.code, r.stderr)
		}
	}
	if r := bare(t, nil, "completion", "tcsh"); r.code != 2 {
		t.Errorf("completion tcsh: %s", r)
	}
	// Flags complete too, with their values where they are known.
	if r := bare(t, nil, "__complete", "migrate", "plan", "--component", ""); r.code != 0 || !strings.Contains(r.stdout, "eventstore\nprojector\nforwarder\n") {
		t.Errorf("completion of --component: %s", r)
	}
	r := bare(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "esox ") || !strings.Contains(r.stdout, runtime.Version()) {
		t.Fatalf("version: %s", r)
	}
	r = bare(t, nil, "--json", "version")
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Version == "" || v.GoVersion != runtime.Version() {
		t.Fatalf("version --json = %+v, %v: %s", v, err, r)
	}
}
