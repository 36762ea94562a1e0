package esoxcli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether v is an *os.File open on a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// confirm asks the operator to confirm a destructive action, on Stderr,
// reading the answer from Stdin. --yes confirms without asking. Without a
// terminal on Stdin it refuses rather than read an answer from a pipe or
// a script that did not mean to give one. Only "y" or "yes" confirm.
func (e *env) confirm(question string) error {
	if e.yes {
		return nil
	}
	if !isTerminal(e.io.Stdin) {
		return notConfirmedError{"not confirmed: " + question + " Pass --yes to confirm without a terminal."}
	}
	fmt.Fprintf(e.io.Stderr, "%s\nContinue? [y/N] ", question)
	answer, err := bufio.NewReader(e.io.Stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("read the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return notConfirmedError{"not confirmed: nothing changed"}
}

// progress returns a progress bar of total steps (-1: unknown) described
// by what, drawn on Stderr when Stderr is a terminal and the output is not
// JSON; otherwise a bar that draws nothing, so scripts and logs get no
// control characters. Long work (a rebuild, renumbering after a restore)
// reports through it with Add and ends it with Finish.
func (e *env) progress(total int64, what string) *progressbar.ProgressBar {
	return newProgress(e.io.Stderr, total, what, !e.json && isTerminal(e.io.Stderr))
}

func newProgress(w io.Writer, total int64, what string, draw bool) *progressbar.ProgressBar {
	if !draw {
		return progressbar.DefaultSilent(total, what)
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		progressbar.OptionFullWidth(),
	)
}
