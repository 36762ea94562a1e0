package esoxcli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/esox-go/esox/internal/leaktest"
)

func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }

// TestProgressDrawsOnlyOnATerminal: the progress bar draws its description
// and count when told stderr is a terminal, and nothing otherwise (nor
// with --json, nor when stderr is not a terminal).
func TestProgressDrawsOnlyOnATerminal(t *testing.T) {
	t.Parallel()
	var drawn bytes.Buffer
	bar := newProgress(&drawn, 10, "renumbering", true)
	_ = bar.Add(10)
	_ = bar.Finish()
	if s := drawn.String(); !strings.Contains(s, "renumbering") || !strings.Contains(s, "10/10") {
		t.Fatalf("drawn bar = %q", s)
	}

	var silent bytes.Buffer
	bar = newProgress(&silent, 10, "renumbering", false)
	_ = bar.Add(10)
	_ = bar.Finish()
	e := &env{io: IO{Stderr: &silent}}
	bar = e.progress(5, "rebuilding") // a bytes.Buffer is not a terminal
	_ = bar.Add(5)
	_ = bar.Finish()
	e = &env{io: IO{Stderr: os.Stderr}, json: true}
	bar = e.progress(5, "rebuilding")
	_ = bar.Add(5)
	if silent.Len() != 0 {
		t.Fatalf("a bar without a terminal drew %q", silent.String())
	}
}

// TestConfirm: --yes confirms; without it, a stdin that is not a terminal
// is refused without reading it (an answer piped in does not count).
func TestConfirm(t *testing.T) {
	t.Parallel()
	e := &env{io: IO{Stdin: strings.NewReader("y\n"), Stderr: &bytes.Buffer{}}, yes: true}
	if err := e.confirm("Drop it?"); err != nil {
		t.Fatalf("confirm with --yes: %v", err)
	}
	var stderr bytes.Buffer
	e = &env{io: IO{Stdin: strings.NewReader("y\n"), Stderr: &stderr}, started: true}
	err := e.confirm("Drop it?")
	var nc notConfirmedError
	if !errors.As(err, &nc) || !strings.Contains(err.Error(), "--yes") || e.exitCode(context.Background(), err) != ExitNotConfirmed {
		t.Fatalf("confirm without a terminal = %v", err)
	}
	if stderr.Len() != 0 {
		t.Fatalf("confirm without a terminal prompted: %q", stderr.String())
	}
}

// TestRedact: a password of the URL or key=value DSN is masked.
func TestRedact(t *testing.T) {
	t.Parallel()
	for dsn, msg := range map[string]string{
		"postgres://u:hunter22@h/db":            "failed for hunter22 at h",
		"host=h user=u password=hunter22 db=x":  "failed for hunter22 at h",
		"host=h user=u password='hunter22' d=x": "failed for hunter22 at h",
	} {
		if got := redact(msg, dsn); strings.Contains(got, "hunter22") || !strings.Contains(got, "xxxxx") {
			t.Errorf("redact(%q, %q) = %q", msg, dsn, got)
		}
	}
	if got := redact("no password here", "postgres://u@h/db"); got != "no password here" {
		t.Errorf("redact without a password = %q", got)
	}
}
