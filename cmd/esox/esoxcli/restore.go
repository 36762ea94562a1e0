package esoxcli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/esox-go/esox"
)

func (e *env) restoreCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Make a schema usable after a logical restore into another cluster",
	}
	var dryRun bool
	reset := &cobra.Command{
		Use:   "reset",
		Short: "Renumber restored events and move every checkpoint and offset (destructive)",
		Long: `After pg_dump/pg_restore (or any logical copy) into another PostgreSQL
cluster, transaction ids restart: events appended afterwards would sort
before the restored ones and behind every checkpoint, and projections and
forwarders would silently stop. With every instance of the service
stopped, and before any starts, run this once:

  1. it refuses (exit 4) while a leader of any projection or consumer
     group of the schema runs;
  2. it finds out whether there was a restore (an event at or past the
     cluster's next transaction id); if not, it changes nothing;
  3. it moves every projection checkpoint (every version, live, building
     or retired, and partition), every consumer group's offset, pending
     skips and dead letters to the same place in the renumbered feed;
     where no exact equivalent exists, a projection version is rebuilt
     when the service starts and a consumer group publishes some events
     again (consumers de-duplicate on the event ID);
  4. it renumbers the restored events (a progress bar on a terminal).

It prints the plan first and asks for confirmation unless --yes; --dry-run
prints the plan only. It is one transaction: interrupted, it changes
nothing, and it can be run again. A physical backup (pg_basebackup,
point-in-time recovery) needs none of this.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			plan, err := esox.ResetAfterRestore(ctx, store, &esox.RestoreOpts{DryRun: true})
			if err != nil {
				return e.restoreError(err)
			}
			if !plan.Restored || dryRun {
				if e.json {
					return e.writeJSON(restoreJSON(plan, dryRun))
				}
				if !plan.Restored {
					_, err := fmt.Fprintf(e.io.Stdout, "no restored events in schema %s (none is at or past this cluster's next transaction id, %d): nothing to do\n",
						store.Schema(), plan.NextTransactionID)
					return err
				}
				return e.writeRestorePlan(plan, true)
			}
			if !e.json {
				if err := e.writeRestorePlan(plan, true); err != nil {
					return err
				}
			}
			if err := e.confirm(fmt.Sprintf("Renumber %d restored event(s) of schema %s and move the checkpoints and offsets above? Every instance of the service must be stopped until it is done.",
				plan.Events, store.Schema())); err != nil {
				return err
			}
			bar := e.progress(plan.Events, "renumbering")
			rep, err := esox.ResetAfterRestore(ctx, store, &esox.RestoreOpts{Progress: func(done, total int64) {
				bar.ChangeMax64(total)
				_ = bar.Set64(done)
			}})
			_ = bar.Finish()
			if err != nil {
				return e.restoreError(err)
			}
			if e.json {
				return e.writeJSON(restoreJSON(rep, false))
			}
			if !rep.Restored {
				_, err := fmt.Fprintln(e.io.Stdout, "nothing to do any more: another run reset the schema meanwhile")
				return err
			}
			_, err = fmt.Fprintf(e.io.Stdout, "schema %s reset: %d event(s) renumbered to transaction id %d, %d checkpoint(s) and %d offset(s) moved; start the service\n",
				store.Schema(), rep.Events, esox.RestoredTransactionID, len(rep.Checkpoints), len(rep.Offsets))
			return err
		},
	}
	reset.Flags().BoolVar(&dryRun, "dry-run", false, "print what it would do, change nothing")
	cmd.AddCommand(reset)
	return cmd
}

// restoreError says what to do when a leader runs.
func (e *env) restoreError(err error) error {
	var lr *esox.LeaderRunningError
	if errors.As(err, &lr) {
		return leaderRunningError{fmt.Sprintf("refused: a leader is running in this schema (%s); stop every instance of the service, then retry", strings.Join(lr.Jobs, ", ")), err}
	}
	return err
}

type restoreCheckpointJSON struct {
	Projection       string `json:"projection"`
	Version          int    `json:"version"`
	Partition        int    `json:"partition"`
	Status           string `json:"status"`
	From             string `json:"from"`
	To               string `json:"to"`
	Exact            bool   `json:"exact"`
	RebuildRequested bool   `json:"rebuild_requested"`
}

type restoreOffsetJSON struct {
	ConsumerGroup string `json:"consumer_group"`
	From          string `json:"from"`
	To            string `json:"to"`
	Exact         bool   `json:"exact"`
}

type restoreReportJSON struct {
	DryRun            bool                    `json:"dry_run"`
	Restored          bool                    `json:"restored"`
	NextTransactionID string                  `json:"next_transaction_id"`
	Events            int64                   `json:"events"`
	Checkpoints       []restoreCheckpointJSON `json:"checkpoints"`
	Offsets           []restoreOffsetJSON     `json:"offsets"`
	DeadLetters       int64                   `json:"dead_letters"`
	Skips             int64                   `json:"skips"`
}

func restoreJSON(r esox.RestoreReport, dryRun bool) restoreReportJSON {
	out := restoreReportJSON{DryRun: dryRun, Restored: r.Restored, NextTransactionID: strconv.FormatUint(r.NextTransactionID, 10),
		Events: r.Events, DeadLetters: r.DeadLetters, Skips: r.Skips, Checkpoints: []restoreCheckpointJSON{}, Offsets: []restoreOffsetJSON{}}
	for _, c := range r.Checkpoints {
		out.Checkpoints = append(out.Checkpoints, restoreCheckpointJSON{c.Projection, c.Version, c.Partition, c.Status, c.From.String(), c.To.String(), c.Exact, c.RebuildRequested})
	}
	for _, o := range r.Offsets {
		out.Offsets = append(out.Offsets, restoreOffsetJSON{o.ConsumerGroup, o.From.String(), o.To.String(), o.Exact})
	}
	return out
}

// writeRestorePlan prints what a reset does (plan) or did.
func (e *env) writeRestorePlan(r esox.RestoreReport, plan bool) error {
	verb := "renumbered"
	if plan {
		verb = "to renumber"
	}
	fmt.Fprintf(e.io.Stdout, "restored events %s: %d (this cluster's next transaction id: %d)\n", verb, r.Events, r.NextTransactionID)
	if len(r.Checkpoints) > 0 {
		t := newTable(e.io.Stdout, "PROJECTION", "VERSION", "PARTITION", "STATUS", "CHECKPOINT", "MOVES TO", "NOTE")
		for _, c := range r.Checkpoints {
			note := "exact"
			switch {
			case c.RebuildRequested:
				note = "no exact equivalent: rebuilt when the service starts"
			case !c.Exact:
				note = "no exact equivalent (retired: not applied any more)"
			}
			t.row(c.Projection, strconv.Itoa(c.Version), strconv.Itoa(c.Partition), c.Status, c.From.String(), c.To.String(), note)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.Offsets) > 0 {
		t := newTable(e.io.Stdout, "CONSUMER GROUP", "OFFSET", "MOVES TO", "NOTE")
		for _, o := range r.Offsets {
			note := "exact"
			if !o.Exact {
				note = "no exact equivalent: the events after it are published again"
			}
			t.row(o.ConsumerGroup, o.From.String(), o.To.String(), note)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if r.DeadLetters > 0 || r.Skips > 0 {
		fmt.Fprintf(e.io.Stdout, "dead letters: %d, pending skips: %d (their positions follow their events)\n", r.DeadLetters, r.Skips)
	}
	return nil
}
