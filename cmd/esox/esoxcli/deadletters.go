package esoxcli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/projector"
)

// deadLetterJSON is a dead letter as --json prints it.
type deadLetterJSON struct {
	Projection       string      `json:"projection"`
	Version          int         `json:"version"`
	Partition        int         `json:"partition"`
	EventID          string      `json:"event_id"`
	Position         string      `json:"position"`
	StreamID         string      `json:"stream_id"`
	EventType        string      `json:"event_type"`
	Error            string      `json:"error"`
	ParkedAt         time.Time   `json:"parked_at"`
	RetryRequestedAt *time.Time  `json:"retry_requested_at,omitempty"`
	Retries          int         `json:"retries"`
	RetriedAt        *time.Time  `json:"retried_at,omitempty"`
	Event            *recordJSON `json:"event,omitempty"`
}

func toDeadLetterJSON(d projector.DeadLetter) deadLetterJSON {
	j := deadLetterJSON{Projection: d.Projection, Version: d.Version, Partition: d.Partition, EventID: d.EventID.String(),
		Position: d.Position.String(), StreamID: d.StreamID, EventType: d.EventType, Error: d.Error, ParkedAt: d.ParkedAt.UTC(), Retries: d.Retries}
	if !d.RetryRequestedAt.IsZero() {
		at := d.RetryRequestedAt.UTC()
		j.RetryRequestedAt = &at
	}
	if !d.RetriedAt.IsZero() {
		at := d.RetriedAt.UTC()
		j.RetriedAt = &at
	}
	if d.Event != nil {
		r := toRecordJSON(*d.Event)
		j.Event = &r
	}
	return j
}

func (e *env) writeDeadLetters(dls []projector.DeadLetter) error {
	out := make([]deadLetterJSON, len(dls))
	for i, d := range dls {
		out[i] = toDeadLetterJSON(d)
	}
	return e.writeJSON(out)
}

// shorten cuts s to n runes, marking the cut.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// handlerError is d's error without the description of its event the
// projector puts first ("event <id> (<type>, stream …): "), which the
// table shows in its columns.
func handlerError(d projector.DeadLetter) string {
	if rest, ok := strings.CutPrefix(d.Error, "event "+d.EventID.String()+" ("); ok {
		if _, msg, ok := strings.Cut(rest, "): "); ok {
			return msg
		}
	}
	return d.Error
}

// parseEventIDs parses event ID arguments.
func parseEventIDs(args []string) ([]uuid.UUID, error) {
	ids := make([]uuid.UUID, len(args))
	for i, a := range args {
		id, err := uuid.Parse(a)
		if err != nil {
			return nil, usagef("event ID %q is not a UUID: %w", a, err)
		}
		ids[i] = id
	}
	return ids, nil
}

func (e *env) deadLettersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "dead-letters",
		Aliases: []string{"dead-letter"},
		Short:   "List, show, retry and discard the events projections parked",
		Long: `A projection with dead letters on (projector.Projection.DeadLetter) parks
an event its handler keeps failing on, with the error, and goes on. Retry
re-applies parked events through the projection's handler: the leader of
the projection, in whichever process runs it, does it, and the command
waits for the outcome. Discard deletes them: their effect is never
applied.`,
	}
	complete := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return e.projectionNames(cmd), cobra.ShellCompDirectiveNoFileComp
	}
	filter := func(projection string, version int, partitions []int) (projector.DeadLetterFilter, error) {
		if version < 0 {
			return projector.DeadLetterFilter{}, usagef("--version must not be negative, got %d", version)
		}
		if projection != "" {
			if err := postgres.ValidateIdentifier(projection); err != nil {
				return projector.DeadLetterFilter{}, usagef("projection name: %w", err)
			}
		}
		return projector.DeadLetterFilter{Projection: projection, Version: version, Partitions: partitions}, nil
	}

	var listVersion, listLimit int
	var listPartitions []int
	list := &cobra.Command{
		Use:               "list [projection]",
		Short:             "List parked events, in feed order, with their error",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			f, err := filter(name, listVersion, listPartitions)
			if err != nil {
				return err
			}
			if err := checkLimit(listLimit); err != nil {
				return err
			}
			f.Limit = listLimit
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			dls, err := projector.ListDeadLetters(cmd.Context(), store, f)
			if err != nil {
				return err
			}
			if e.json {
				return e.writeDeadLetters(dls)
			}
			if len(dls) == 0 {
				_, err := fmt.Fprintln(e.io.Stdout, "no dead letters")
				return err
			}
			t := newTable(e.io.Stdout, "PROJECTION", "VERSION", "PARTITION", "EVENT ID", "POSITION", "STREAM", "TYPE", "PARKED AT", "RETRIES", "ERROR")
			for _, d := range dls {
				retries := strconv.Itoa(d.Retries)
				if !d.RetryRequestedAt.IsZero() {
					retries += " (retry pending)"
				}
				t.row(d.Projection, strconv.Itoa(d.Version), strconv.Itoa(d.Partition), d.EventID.String(), d.Position.String(), d.StreamID, d.EventType,
					formatTime(d.ParkedAt), retries, shorten(handlerError(d), 80))
			}
			if err := t.flush(); err != nil {
				return err
			}
			if len(dls) == listLimit {
				fmt.Fprintf(e.io.Stderr, "more dead letters may follow: raise --limit\n")
			}
			return nil
		},
	}
	list.Flags().IntVar(&listVersion, "version", 0, "only this projection version (default: every version)")
	list.Flags().IntSliceVar(&listPartitions, "partition", nil, "only these partitions")
	list.Flags().IntVar(&listLimit, "limit", projector.DeadLettersLimitDefault, "the most dead letters to list")

	var showVersion int
	show := &cobra.Command{
		Use:               "show <projection> <event-id>",
		Short:             "Show a parked event: its error and the event as stored",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := filter(args[0], showVersion, nil)
			if err != nil {
				return err
			}
			if f.EventIDs, err = parseEventIDs(args[1:]); err != nil {
				return err
			}
			f.WithEvents = true
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			dls, err := projector.ListDeadLetters(cmd.Context(), store, f)
			if err != nil {
				return err
			}
			if len(dls) == 0 {
				return &projector.DeadLetterNotFoundError{Projection: f.Projection, Version: f.Version, EventIDs: f.EventIDs}
			}
			if e.json {
				return e.writeDeadLetters(dls)
			}
			for i, d := range dls {
				if i > 0 {
					fmt.Fprintln(e.io.Stdout)
				}
				fmt.Fprintf(e.io.Stdout, "projection   %s version %d partition %d\nparked_at    %s\nretries      %d", d.Projection, d.Version, d.Partition, formatTime(d.ParkedAt), d.Retries)
				if !d.RetriedAt.IsZero() {
					fmt.Fprintf(e.io.Stdout, " (last at %s)", formatTime(d.RetriedAt))
				}
				if !d.RetryRequestedAt.IsZero() {
					fmt.Fprintf(e.io.Stdout, ", a retry requested at %s is pending", formatTime(d.RetryRequestedAt))
				}
				fmt.Fprintf(e.io.Stdout, "\nerror        %s\n", d.Error)
				if d.Event == nil {
					fmt.Fprintf(e.io.Stdout, "event        %s at %s (%s, stream %s): not in the events table\n", d.EventID, d.Position, d.EventType, d.StreamID)
					continue
				}
				r := d.Event
				fmt.Fprintf(e.io.Stdout, "event_id     %s\nstream       %s (version %d)\nposition     %s\ntype         %s (schema version %d)\nrecorded_at  %s\nmetadata     %s\npayload\n%s\n",
					r.ID, r.StreamID, r.StreamVersion, r.Position, r.Type, max(r.SchemaVersion, 1), formatTime(r.RecordedAt), compactJSON(r.Metadata), indentJSON(r.Payload))
			}
			return nil
		},
	}
	show.Flags().IntVar(&showVersion, "version", 0, "only this projection version (default: every version)")

	var retryVersion int
	var retryAll, noWait bool
	retry := &cobra.Command{
		Use:   "retry <projection> [event-id...]",
		Short: "Re-apply parked events through the projection's handler",
		Long: `Ask the projection's leader to re-apply the named parked events (or every
one of the projection, with --all) through its handler, in feed order:
each one that applies leaves the dead letters, with its effect committed
in the same transaction; one that fails again stays parked with its new
error. The command waits for the outcome (unless --no-wait) and exits 1
when a retry failed.

A retried event is applied after the events that followed it in the feed:
a read model that depends on the order of a stream's events may need a
rebuild instead.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := filter(args[0], retryVersion, nil)
			if err != nil {
				return err
			}
			if f.EventIDs, err = parseEventIDs(args[1:]); err != nil {
				return err
			}
			if len(f.EventIDs) == 0 && !retryAll {
				return usagef("name the events to retry, or pass --all")
			}
			ctx := cmd.Context()
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			marked, err := projector.RetryDeadLetters(ctx, store, f)
			if err != nil {
				return err
			}
			return e.waitRetries(ctx, store, f.Projection, marked, noWait)
		},
	}
	retry.Flags().IntVar(&retryVersion, "version", 0, "only this projection version (default: every version)")
	retry.Flags().BoolVar(&retryAll, "all", false, "retry every dead letter of the projection (version)")
	retry.Flags().BoolVar(&noWait, "no-wait", false, "return once the retries are requested")

	var discardVersion int
	var discardAll bool
	discard := &cobra.Command{
		Use:   "discard <projection> [event-id...]",
		Short: "Delete parked events: their effect is never applied (destructive)",
		Long: `Delete the named dead letters of the projection (or every one, with
--all): their events are never applied by it. It asks for confirmation
unless --yes.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := filter(args[0], discardVersion, nil)
			if err != nil {
				return err
			}
			if f.EventIDs, err = parseEventIDs(args[1:]); err != nil {
				return err
			}
			if len(f.EventIDs) == 0 && !discardAll {
				return usagef("name the events to discard, or pass --all")
			}
			ctx := cmd.Context()
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			lf := f
			lf.Limit = eventstore.MaxReadAllLimit
			found, err := projector.ListDeadLetters(ctx, store, lf)
			if err != nil {
				return err
			}
			if len(found) > 0 {
				n := strconv.Itoa(len(found))
				if len(found) == lf.Limit {
					n = "at least " + n
				}
				if err := e.confirm(fmt.Sprintf("Discard %s dead letter(s) of projection %s? Their events are never applied by it.", n, f.Projection)); err != nil {
					return err
				}
			}
			gone, err := projector.DiscardDeadLetters(ctx, store, f)
			if err != nil {
				return err
			}
			if e.json {
				return e.writeDeadLetters(gone)
			}
			for _, d := range gone {
				fmt.Fprintf(e.io.Stdout, "discarded %s v%d: event %s (%s, stream %s, position %s)\n", d.Projection, d.Version, d.EventID, d.EventType, d.StreamID, d.Position)
			}
			_, err = fmt.Fprintf(e.io.Stdout, "%d dead letter(s) discarded\n", len(gone))
			return err
		},
	}
	discard.Flags().IntVar(&discardVersion, "version", 0, "only this projection version (default: every version)")
	discard.Flags().BoolVar(&discardAll, "all", false, "discard every dead letter of the projection (version)")

	cmd.AddCommand(list, show, retry, discard)
	return cmd
}

// retryFailedError reports retries that failed again: the events stay
// parked.
type retryFailedError struct{ failed, total int }

func (e retryFailedError) Error() string {
	return fmt.Sprintf("%d of %d retried event(s) failed again and stay parked (see 'esox dead-letters list')", e.failed, e.total)
}

// waitRetries reports the requested retries and, unless noWait, waits for
// the leaders' outcome while they run.
func (e *env) waitRetries(ctx context.Context, store *postgres.Store, projection string, marked []projector.DeadLetter, noWait bool) error {
	type outcomeJSON struct {
		deadLetterJSON
		Outcome string `json:"outcome"`
	}
	out := make([]outcomeJSON, len(marked))
	for i, d := range marked {
		out[i] = outcomeJSON{toDeadLetterJSON(d), "requested"}
	}
	if len(marked) == 0 {
		if e.json {
			return e.writeJSON(out)
		}
		_, err := fmt.Fprintf(e.io.Stdout, "no dead letters of projection %s to retry\n", projection)
		return err
	}
	// Who leads the partitions the dead letters are in.
	led := func() (bool, error) {
		st, err := projector.ReadProjection(ctx, store, projection)
		if err != nil {
			return false, err
		}
		for _, d := range marked {
			i := slices.IndexFunc(st, func(s projector.ProjectionStatus) bool { return s.Version == d.Version && s.Partition == d.Partition })
			if i < 0 || !st[i].LeaderRunning {
				return false, nil
			}
		}
		return true, nil
	}
	running, err := led()
	if err != nil {
		return err
	}
	if noWait || !running {
		if e.json {
			return e.writeJSON(out)
		}
		msg := fmt.Sprintf("retry of %d dead letter(s) of projection %s requested", len(marked), projection)
		if !running {
			msg += "; no process leads it now: its leader retries them when the service starts"
		}
		_, err := fmt.Fprintln(e.io.Stdout, msg)
		return err
	}
	ids := make([]uuid.UUID, len(marked))
	for i, d := range marked {
		ids[i] = d.EventID
	}
	t := time.NewTicker(waitInterval)
	defer t.Stop()
	failed := 0
	for {
		left, err := projector.ListDeadLetters(ctx, store, projector.DeadLetterFilter{Projection: projection, EventIDs: ids, Limit: eventstore.MaxReadAllLimit})
		if err != nil {
			return err
		}
		pending := 0
		failed = 0
		for i := range out {
			j := slices.IndexFunc(left, func(d projector.DeadLetter) bool {
				return d.EventID == marked[i].EventID && d.Version == marked[i].Version
			})
			switch {
			case j < 0:
				out[i].Outcome = "applied"
			case !left[j].RetryRequestedAt.IsZero():
				pending++
			default:
				out[i].deadLetterJSON = toDeadLetterJSON(left[j])
				out[i].Outcome = "failed"
				failed++
			}
		}
		if pending == 0 {
			break
		}
		if ok, err := led(); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("projection %s lost its leader before the retries were done: they are performed when a process runs it again", projection)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if e.json {
		if err := e.writeJSON(out); err != nil {
			return err
		}
	} else {
		for _, o := range out {
			line := fmt.Sprintf("%s v%d: event %s (%s, position %s): %s", projection, o.Version, o.EventID, o.EventType, o.Position, o.Outcome)
			if o.Outcome == "failed" {
				line += " again, still parked: " + strings.ReplaceAll(o.Error, "\n", " ")
			}
			fmt.Fprintln(e.io.Stdout, line)
		}
	}
	if failed > 0 {
		return retryFailedError{failed, len(out)}
	}
	return nil
}
