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

// waitInterval is how often the command re-reads a projection while it
// waits for its leader (a rebuild, retries).
const waitInterval = 200 * time.Millisecond

// lifecycle names a version's place: live, building or retired.
func lifecycle(s projector.ProjectionStatus) string {
	switch {
	case s.Live:
		return "live"
	case s.State == projector.StateRetired:
		return "retired"
	}
	return "building"
}

// statePriority orders states from the one that most needs an operator.
var statePriority = []projector.State{
	projector.StateRebuildRequested, projector.StateStoppedWithError, projector.StateNotRunning,
	projector.StateRebuilding, projector.StateCatchingUp, projector.StateRunning, projector.StateRetired,
}

// versionSummary is one projection version over its partitions.
type versionSummary struct {
	Name       string `json:"projection"`
	Version    int    `json:"version"`
	Status     string `json:"status"`
	State      string `json:"state"`
	Partitions int    `json:"partitions"`
	// Checkpoint is the smallest of its partitions'.
	Checkpoint  string  `json:"checkpoint"`
	Head        string  `json:"head"`
	LagEvents   int64   `json:"lag_events"`
	LagSeconds  float64 `json:"lag_seconds"`
	DeadLetters int64   `json:"dead_letters"`
	// Leaders counts the partitions a process leads.
	Leaders   int       `json:"leaders"`
	UpdatedAt time.Time `json:"updated_at"`
}

func summarize(st []projector.ProjectionStatus) []versionSummary {
	var out []versionSummary
	for i := 0; i < len(st); {
		j := i
		for j < len(st) && st[j].Name == st[i].Name && st[j].Version == st[i].Version {
			j++
		}
		parts := st[i:j]
		v := versionSummary{Name: st[i].Name, Version: st[i].Version, Status: lifecycle(st[i]), Partitions: st[i].Partitions, Head: st[i].Head.String()}
		cp := parts[0].Checkpoint
		state := len(statePriority)
		for _, p := range parts {
			if p.Checkpoint.Less(cp) {
				cp = p.Checkpoint
			}
			v.LagEvents = max(v.LagEvents, p.LagEvents)
			v.LagSeconds = max(v.LagSeconds, p.Lag.Seconds())
			v.DeadLetters += p.DeadLetters
			if p.LeaderRunning {
				v.Leaders++
			}
			if k := slices.Index(statePriority, p.State); k >= 0 && k < state {
				state = k
			}
			if p.UpdatedAt.After(v.UpdatedAt) {
				v.UpdatedAt = p.UpdatedAt.UTC()
			}
		}
		v.Checkpoint = cp.String()
		v.State = string(parts[0].State)
		if state < len(statePriority) {
			v.State = string(statePriority[state])
		}
		out = append(out, v)
		i = j
	}
	return out
}

// partitionJSON is one partition's status as --json prints it.
type partitionJSON struct {
	Name             string     `json:"projection"`
	Version          int        `json:"version"`
	Partition        int        `json:"partition"`
	Partitions       int        `json:"partitions"`
	Status           string     `json:"status"`
	State            string     `json:"state"`
	Checkpoint       string     `json:"checkpoint"`
	Head             string     `json:"head"`
	LagEvents        int64      `json:"lag_events"`
	LagSeconds       float64    `json:"lag_seconds"`
	DeadLetters      int64      `json:"dead_letters"`
	LeaderRunning    bool       `json:"leader_running"`
	Rebuilding       bool       `json:"rebuilding"`
	RebuildRequested bool       `json:"rebuild_requested"`
	RetryRequested   bool       `json:"retry_requested"`
	RequestError     string     `json:"request_error,omitempty"`
	LastError        string     `json:"last_error,omitempty"`
	ErrorAt          *time.Time `json:"error_at,omitempty"`
	ErrorEvent       string     `json:"error_event_id,omitempty"`
	SkipEvent        string     `json:"skip_event_id,omitempty"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

func toPartitionJSON(s projector.ProjectionStatus) partitionJSON {
	p := partitionJSON{
		Name: s.Name, Version: s.Version, Partition: s.Partition, Partitions: s.Partitions, Status: lifecycle(s), State: string(s.State),
		Checkpoint: s.Checkpoint.String(), Head: s.Head.String(), LagEvents: s.LagEvents, LagSeconds: s.Lag.Seconds(), DeadLetters: s.DeadLetters,
		LeaderRunning: s.LeaderRunning, Rebuilding: s.Rebuilding, RebuildRequested: s.RebuildRequested, RetryRequested: s.RetryRequested,
		RequestError: s.RequestError, LastError: s.LastError, UpdatedAt: s.UpdatedAt.UTC(),
	}
	if !s.ErrorAt.IsZero() {
		at := s.ErrorAt.UTC()
		p.ErrorAt = &at
	}
	if s.ErrorEvent != uuid.Nil {
		p.ErrorEvent = s.ErrorEvent.String()
	}
	if s.SkipEvent != uuid.Nil {
		p.SkipEvent = s.SkipEvent.String()
	}
	return p
}

func formatLag(events int64, lag time.Duration) string {
	if events == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", events, lag.Round(time.Millisecond))
}

func (e *env) projectionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "List projections and their status",
		Long: `A projection version's status comes from its checkpoint rows (one per
partition) and pg_locks: where it is in the feed, how far behind, its dead
letters, whether a process leads it, and what it is doing:

  running            live and close to the head of the feed
  catching_up        at least a batch behind
  rebuilding         replaying from the start (a rebuild, or a new version building)
  stopped_with_error its handler kept failing: see 'esox projections status <name>'
  not_running        no process leads it
  rebuild_requested  a rebuild waits for its leader
  retired            replaced by a newer live version`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List every projection version: state, checkpoint, lag, dead letters, leader",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			st, err := projector.ListProjections(cmd.Context(), store)
			if err != nil {
				return err
			}
			vs := summarize(st)
			if e.json {
				if vs == nil {
					vs = []versionSummary{}
				}
				return e.writeJSON(vs)
			}
			if len(vs) == 0 {
				_, err := fmt.Fprintf(e.io.Stdout, "no projections in schema %s: no runner has registered one\n", store.Schema())
				return err
			}
			fmt.Fprintf(e.io.Stdout, "feed head %s\n", vs[0].Head)
			t := newTable(e.io.Stdout, "PROJECTION", "VERSION", "STATUS", "STATE", "PARTITIONS", "CHECKPOINT", "LAG", "DEAD LETTERS", "LEADER")
			for _, v := range vs {
				leader := "-"
				switch {
				case v.Leaders == v.Partitions:
					leader = "running"
				case v.Leaders > 0:
					leader = fmt.Sprintf("%d of %d", v.Leaders, v.Partitions)
				}
				t.row(v.Name, strconv.Itoa(v.Version), v.Status, v.State, strconv.Itoa(v.Partitions), v.Checkpoint,
					formatLag(v.LagEvents, time.Duration(v.LagSeconds*float64(time.Second))), strconv.FormatInt(v.DeadLetters, 10), leader)
			}
			return t.flush()
		},
	}
	status := &cobra.Command{
		Use:   "status [projection]",
		Short: "Show every partition of a projection (or of all), with errors and pending requests",
		Args:  cobra.MaximumNArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return e.projectionNames(cmd), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			var st []projector.ProjectionStatus
			if len(args) == 1 {
				st, err = projector.ReadProjection(cmd.Context(), store, args[0])
			} else {
				st, err = projector.ListProjections(cmd.Context(), store)
			}
			if err != nil {
				return err
			}
			if e.json {
				out := make([]partitionJSON, len(st))
				for i, s := range st {
					out[i] = toPartitionJSON(s)
				}
				return e.writeJSON(out)
			}
			if len(st) == 0 {
				_, err := fmt.Fprintf(e.io.Stdout, "no projections in schema %s: no runner has registered one\n", store.Schema())
				return err
			}
			fmt.Fprintf(e.io.Stdout, "feed head %s\n", st[0].Head)
			t := newTable(e.io.Stdout, "PROJECTION", "VERSION", "PARTITION", "STATUS", "STATE", "CHECKPOINT", "LAG", "DEAD LETTERS", "LEADER", "UPDATED AT")
			var notes []string
			for _, s := range st {
				leader := "-"
				if s.LeaderRunning {
					leader = "running"
				}
				part := fmt.Sprintf("%d/%d", s.Partition, s.Partitions)
				t.row(s.Name, strconv.Itoa(s.Version), part, lifecycle(s), string(s.State), s.Checkpoint.String(),
					formatLag(s.LagEvents, s.Lag), strconv.FormatInt(s.DeadLetters, 10), leader, formatTime(s.UpdatedAt))
				who := fmt.Sprintf("%s v%d p%s", s.Name, s.Version, part)
				if s.LastError != "" {
					note := fmt.Sprintf("%s: stopped at %s: %s", who, formatTime(s.ErrorAt), s.LastError)
					if s.ErrorEvent != uuid.Nil {
						note += fmt.Sprintf("\n  (it stopped on event %s: 'esox projection skip %s' passes over it)", s.ErrorEvent, s.Name)
					}
					notes = append(notes, note)
				}
				if s.RequestError != "" {
					notes = append(notes, fmt.Sprintf("%s: the last request failed: %s", who, s.RequestError))
				}
				if s.SkipEvent != uuid.Nil {
					notes = append(notes, fmt.Sprintf("%s: skip of event %s pending", who, s.SkipEvent))
				}
				if s.RetryRequested {
					notes = append(notes, fmt.Sprintf("%s: dead-letter retries pending", who))
				}
			}
			if err := t.flush(); err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(e.io.Stdout, n)
			}
			return nil
		},
	}
	cmd.AddCommand(list, status)
	return cmd
}

// targetFlags are the --version and --partition flags of a command acting
// on a projection version.
type targetFlags struct {
	version    int
	partitions []int
}

func (f *targetFlags) add(cmd *cobra.Command, partitions bool) {
	cmd.Flags().IntVar(&f.version, "version", 0, "the projection version (default: the live one)")
	if partitions {
		cmd.Flags().IntSliceVar(&f.partitions, "partition", nil, "only these partitions (default: every one)")
	}
}

func (f *targetFlags) target(name string) (projector.Target, error) {
	if f.version < 0 {
		return projector.Target{}, usagef("--version must not be negative, got %d", f.version)
	}
	if err := postgres.ValidateIdentifier(name); err != nil {
		return projector.Target{}, usagef("projection name: %w", err)
	}
	return projector.Target{Projection: name, Version: f.version, Partitions: f.partitions}, nil
}

// selected returns the partitions of st (a projection's status) that
// target selects, and the version it names (the live one for 0).
func selected(st []projector.ProjectionStatus, target projector.Target) ([]projector.ProjectionStatus, int) {
	version := target.Version
	if version == 0 {
		for _, s := range st {
			if s.Live {
				version = s.Version
				break
			}
		}
	}
	var out []projector.ProjectionStatus
	for _, s := range st {
		if s.Version == version && (len(target.Partitions) == 0 || slices.Contains(target.Partitions, s.Partition)) {
			out = append(out, s)
		}
	}
	return out, version
}

// partitionsText describes sel's partitions for a message: "" when the
// version has one, " partitions 0, 2" otherwise.
func partitionsText(sel []projector.ProjectionStatus) string {
	if len(sel) == 0 || sel[0].Partitions == 1 {
		return ""
	}
	if len(sel) == sel[0].Partitions {
		return fmt.Sprintf(" (all %d partitions)", len(sel))
	}
	ps := make([]string, len(sel))
	for i, s := range sel {
		ps[i] = strconv.Itoa(s.Partition)
	}
	return " partition(s) " + strings.Join(ps, ", ")
}

func (e *env) projectionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projection",
		Short: "Rebuild, resume, move or skip a projection",
		Long: `Act on a projection version (the live one unless --version) while the
service runs. What needs the projection's code is a request its leader
performs: a rebuild runs its Reset and replays the feed. The rest is
fenced by the leader's compare-and-set on its checkpoint: a leader
applying a batch while the checkpoint moves re-reads it and goes on from
the new position.`,
	}
	complete := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return e.projectionNames(cmd), cobra.ShellCompDirectiveNoFileComp
	}

	var rebuildFlags targetFlags
	var noWait bool
	rebuild := &cobra.Command{
		Use:   "rebuild <projection>",
		Short: "Empty a projection version and replay the feed into it (destructive)",
		Long: `Ask the leader of the projection version to rebuild it: in one transaction
it runs the projection's Reset (emptying its tables), sets every partition
back to the start of the feed and clears its dead letters; then it
replays the feed. Readers see the model empty, then filling: to rebuild
without that, deploy a new Version (blue/green).

The command waits, with a progress bar on a terminal, until the version
has caught up with the feed, unless --no-wait. When no process runs the
projection, the rebuild is recorded and performed when one starts. It asks
for confirmation unless --yes.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := rebuildFlags.target(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			st, err := projector.ReadProjection(ctx, store, target.Projection)
			if err != nil {
				return err
			}
			sel, version := selected(st, target)
			if len(sel) > 0 {
				if err := e.confirm(fmt.Sprintf("Rebuild projection %s version %d (%s)? Its Reset empties its tables and it replays the feed from the start; readers see it empty, then filling.",
					target.Projection, version, lifecycle(sel[0]))); err != nil {
					return err
				}
			}
			if version, err = projector.RequestRebuild(ctx, store, target); err != nil {
				return err
			}
			return e.waitRebuild(ctx, store, target.Projection, version, noWait)
		},
	}
	rebuildFlags.add(rebuild, false)
	rebuild.Flags().BoolVar(&noWait, "no-wait", false, "return once the rebuild is requested")

	var resumeFlags targetFlags
	resume := &cobra.Command{
		Use:   "resume <projection>",
		Short: "Restart the stopped partitions of a projection after a fix",
		Long: `Clear the stopped flag of the projection's partitions that stopped with an
error (every version's, or --version's): their leaders retry the failed
batch within a second or so. Fix the cause first (deploy the fixed
handler, repair the data), or skip the event ('esox projection skip').`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := resumeFlags.target(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			st, err := projector.ReadProjection(ctx, store, target.Projection)
			if err != nil {
				return err
			}
			// Without --version: every version with a stopped partition.
			versions := []int{target.Version}
			if target.Version == 0 {
				versions = nil
				for _, s := range st {
					if s.State == projector.StateStoppedWithError && !slices.Contains(versions, s.Version) {
						versions = append(versions, s.Version)
					}
				}
			}
			type resumedJSON struct {
				Projection string `json:"projection"`
				Version    int    `json:"version"`
				Partitions []int  `json:"partitions"`
			}
			out := []resumedJSON{}
			for _, v := range versions {
				t := target
				t.Version = v
				parts, err := projector.Resume(ctx, store, t)
				if err != nil {
					return err
				}
				if len(parts) > 0 {
					out = append(out, resumedJSON{target.Projection, v, parts})
				}
			}
			if e.json {
				return e.writeJSON(out)
			}
			if len(out) == 0 {
				_, err := fmt.Fprintf(e.io.Stdout, "nothing to resume: no partition of projection %s is stopped\n", target.Projection)
				return err
			}
			for _, r := range out {
				fmt.Fprintf(e.io.Stdout, "projection %s version %d: resumed partition(s) %s; its leader retries the failed batch\n",
					r.Projection, r.Version, strings.Trim(strings.Join(strings.Fields(fmt.Sprint(r.Partitions)), ", "), "[]"))
			}
			return nil
		},
	}
	resumeFlags.add(resume, true)

	var setFlags targetFlags
	setCheckpoint := &cobra.Command{
		Use:   "set-checkpoint <projection> <position>",
		Short: "Move a projection's checkpoint, to apply events again or skip them (destructive)",
		Long: `Store <position> (transaction_id/position, e.g. 845/12; 0/0 is the start)
as the checkpoint of the projection version (every partition, or
--partition's), without touching its tables: its leader goes on from the
event after it. An earlier position applies events again (their effect
doubles unless the handler is idempotent: prefer 'rebuild'); a later one
skips events, whose effect is lost.

It refuses an unknown projection, version or partition (exit 3), a bad
position or one after the feed's head (exit 2). It asks for confirmation
unless --yes.`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := setFlags.target(args[0])
			if err != nil {
				return err
			}
			pos, err := parsePosition("position", args[1])
			if err != nil {
				return err
			}
			return e.moveCheckpoint(cmd.Context(), target, pos, false)
		},
	}
	setFlags.add(setCheckpoint, true)

	var skipFlags targetFlags
	var skipEvent, skipTo string
	skip := &cobra.Command{
		Use:   "skip <projection>",
		Short: "Pass over one event (by default the one it stopped on), or skip to a position (destructive)",
		Long: `Without flags, ask the leader to pass over the event the projection
stopped on (its handler's error named it): it applies the events before
and after it, never that one, and the projection resumes. --event <id>
names another event. --to <position> instead moves the checkpoint forward
to the position, skipping every event up to it.

A skipped event's effect is never applied. It refuses a projection not
stopped on a named event (without --event or --to), an event already
passed, an unknown projection, version or event (exit 3) and a position
before the checkpoint or after the head (exit 2). It asks for
confirmation unless --yes.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := skipFlags.target(args[0])
			if err != nil {
				return err
			}
			if skipEvent != "" && skipTo != "" {
				return usagef("give --event or --to, not both")
			}
			ctx := cmd.Context()
			if skipTo != "" {
				pos, err := parsePosition("--to", skipTo)
				if err != nil {
					return err
				}
				return e.moveCheckpoint(ctx, target, pos, true)
			}
			var id uuid.UUID
			if skipEvent != "" {
				if id, err = uuid.Parse(skipEvent); err != nil {
					return usagef("--event %q is not a UUID: %w", skipEvent, err)
				}
			}
			return e.skipEvent(ctx, target, id)
		},
	}
	skipFlags.add(skip, true)
	skip.Flags().StringVar(&skipEvent, "event", "", "the ID of the event to pass over (default: the one it stopped on)")
	skip.Flags().StringVar(&skipTo, "to", "", "move the checkpoint forward to this position instead")

	cmd.AddCommand(rebuild, resume, setCheckpoint, skip)
	return cmd
}

// waitRebuild reports a requested rebuild and, unless noWait, waits until
// the version has caught up (a progress bar of its checkpoint against the
// head), while a leader runs.
func (e *env) waitRebuild(ctx context.Context, store *postgres.Store, name string, version int, noWait bool) error {
	type rebuildJSON struct {
		Projection string `json:"projection"`
		Version    int    `json:"version"`
		Requested  bool   `json:"requested"`
		Completed  bool   `json:"completed"`
		Leader     bool   `json:"leader_running"`
		Checkpoint string `json:"checkpoint,omitempty"`
	}
	res := rebuildJSON{Projection: name, Version: version, Requested: true}
	read := func() ([]projector.ProjectionStatus, error) {
		st, err := projector.ReadProjection(ctx, store, name)
		if err != nil {
			return nil, err
		}
		sel, _ := selected(st, projector.Target{Projection: name, Version: version})
		return sel, nil
	}
	sel, err := read()
	if err != nil {
		return err
	}
	for _, s := range sel {
		res.Leader = res.Leader || s.LeaderRunning
	}
	done := func() error {
		if e.json {
			return e.writeJSON(res)
		}
		return nil
	}
	if !res.Leader || noWait {
		if !e.json {
			msg := fmt.Sprintf("rebuild of projection %s version %d requested", name, version)
			if !res.Leader {
				msg += "; no process runs it now: its leader performs it when the service starts"
			} else {
				msg += "; its leader performs it within a second or so ('esox projections status " + name + "' shows it)"
			}
			fmt.Fprintln(e.io.Stdout, msg)
		}
		return done()
	}
	if !e.json {
		fmt.Fprintf(e.io.Stderr, "rebuild of projection %s version %d requested; waiting for its leader (Ctrl-C stops waiting, not the rebuild)\n", name, version)
	}
	bar := e.progress(-1, "rebuilding "+name)
	finished := false
	defer func() {
		if !finished {
			_ = bar.Exit() // ends the bar's line when waiting stops early
		}
	}()
	performed := false
	t := time.NewTicker(waitInterval)
	defer t.Stop()
	for {
		led := false
		caughtUp := true
		var cp, head eventstore.Position
		for i, s := range sel {
			led = led || s.LeaderRunning
			if s.RebuildRequested {
				caughtUp = false
			} else if s.RequestError != "" {
				return fmt.Errorf("the leader did not rebuild projection %s version %d: %s", name, version, s.RequestError)
			}
			if s.Rebuilding {
				caughtUp = false
			}
			if i == 0 || s.Checkpoint.Less(cp) {
				cp = s.Checkpoint
			}
			head = s.Head
		}
		if !sel[0].RebuildRequested {
			performed = true
		}
		if performed {
			bar.ChangeMax64(max(head.Position, cp.Position, 1))
			_ = bar.Set64(cp.Position)
		}
		if caughtUp && performed {
			_ = bar.Finish()
			finished = true
			res.Completed, res.Checkpoint = true, cp.String()
			if !e.json {
				fmt.Fprintf(e.io.Stdout, "projection %s version %d rebuilt: caught up at %s\n", name, version, cp)
			}
			return done()
		}
		if !led {
			return fmt.Errorf("projection %s version %d lost its leader before the rebuild completed: it goes on when a process runs it again", name, version)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if sel, err = read(); err != nil {
			return err
		}
	}
}

// moveCheckpoint is set-checkpoint, and skip --to (onlyForward).
func (e *env) moveCheckpoint(ctx context.Context, target projector.Target, pos eventstore.Position, onlyForward bool) error {
	store, err := e.openEvents(ctx)
	if err != nil {
		return err
	}
	st, err := projector.ReadProjection(ctx, store, target.Projection)
	if err != nil {
		return err
	}
	sel, version := selected(st, target)
	if len(sel) > 0 {
		from := sel[0].Checkpoint
		effect := "the events after it are applied again (their effect doubles unless the handler is idempotent)"
		if from.Less(pos) {
			effect = "the events up to it are skipped: their effect is never applied"
		}
		if err := e.confirm(fmt.Sprintf("Move the checkpoint of projection %s version %d%s from %s to %s? %s.",
			target.Projection, version, partitionsText(sel), from, pos, strings.ToUpper(effect[:1])+effect[1:])); err != nil {
			return err
		}
	}
	ch, err := projector.SetCheckpoint(ctx, store, target, pos, &projector.SetCheckpointOpts{OnlyForward: onlyForward})
	if err != nil {
		return err
	}
	if e.json {
		type changeJSON struct {
			Projection string `json:"projection"`
			Version    int    `json:"version"`
			Partition  int    `json:"partition"`
			From       string `json:"previous_checkpoint"`
			To         string `json:"checkpoint"`
		}
		out := make([]changeJSON, len(ch))
		for i, c := range ch {
			out[i] = changeJSON{c.Projection, c.Version, c.Partition, c.From.String(), c.To.String()}
		}
		return e.writeJSON(out)
	}
	for _, c := range ch {
		part := ""
		if len(sel) > 0 && sel[0].Partitions > 1 {
			part = fmt.Sprintf(" partition %d", c.Partition)
		}
		fmt.Fprintf(e.io.Stdout, "projection %s version %d%s: checkpoint moved from %s to %s\n", c.Projection, c.Version, part, c.From, c.To)
	}
	return nil
}

// skipEvent is skip without --to: it confirms the events to pass over,
// naming them, and requests the skips.
func (e *env) skipEvent(ctx context.Context, target projector.Target, id uuid.UUID) error {
	store, err := e.openEvents(ctx)
	if err != nil {
		return err
	}
	st, err := projector.ReadProjection(ctx, store, target.Projection)
	if err != nil {
		return err
	}
	sel, version := selected(st, target)
	ids := []uuid.UUID{id}
	if id == uuid.Nil {
		ids = nil
		for _, s := range sel {
			if s.State == projector.StateStoppedWithError && s.ErrorEvent != uuid.Nil {
				ids = append(ids, s.ErrorEvent)
			}
		}
		if len(ids) == 0 && len(sel) > 0 {
			return usagef("projection %s version %d is not stopped on an event its handler named: pass --event <id> (or --to <position>)", target.Projection, version)
		}
	}
	raws, err := store.LookupRawEvents(ctx, ids)
	if err != nil {
		return err
	}
	if len(raws) < len(ids) {
		return notFoundError{fmt.Sprintf("event %s not found in schema %s", ids[len(raws)], store.Schema())}
	}
	var desc []string
	for _, r := range raws {
		desc = append(desc, fmt.Sprintf("event %s (%s, stream %s version %d, position %s)", r.ID, r.Type, r.StreamID, r.StreamVersion, r.Position))
	}
	if err := e.confirm(fmt.Sprintf("Skip %s in projection %s version %d? Its effect is never applied; the projection resumes.",
		strings.Join(desc, ", "), target.Projection, version)); err != nil {
		return err
	}
	sk, err := projector.Skip(ctx, store, target, id)
	if err != nil {
		return err
	}
	if e.json {
		type skipJSON struct {
			Projection string     `json:"projection"`
			Version    int        `json:"version"`
			Partition  int        `json:"partition"`
			Event      recordJSON `json:"event"`
		}
		out := make([]skipJSON, len(sk))
		for i, s := range sk {
			out[i] = skipJSON{s.Projection, s.Version, s.Partition, toRecordJSON(s.Event)}
		}
		return e.writeJSON(out)
	}
	for _, s := range sk {
		fmt.Fprintf(e.io.Stdout, "projection %s version %d partition %d: event %s at %s will be passed over; its leader applies what comes before and after it\n",
			s.Projection, s.Version, s.Partition, s.Event.ID, s.Event.Position)
	}
	return nil
}

// projectionNames lists the schema's projections for shell completion;
// none when the database cannot be reached.
func (e *env) projectionNames(cmd *cobra.Command) []string {
	store, err := e.openEvents(cmd.Context())
	if err != nil {
		return nil
	}
	st, err := projector.ListProjections(cmd.Context(), store)
	if err != nil {
		return nil
	}
	var names []string
	for _, s := range st {
		if !slices.Contains(names, s.Name) {
			names = append(names, s.Name)
		}
	}
	return names
}
