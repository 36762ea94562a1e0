package esoxcli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/esox-go/esox/forwarder"
)

func (e *env) forwarderCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "forwarder",
		Short: "Inspect and move forwarder consumer groups",
		Long: `A forwarder consumer group is the position up to which a forwarder has
published the feed to its broker (forwarder.Config.ConsumerGroup).`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List consumer groups with their offset, lag and whether a leader runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			gs, err := forwarder.ListGroups(cmd.Context(), store)
			if err != nil {
				return err
			}
			if e.json {
				type groupJSON struct {
					ConsumerGroup string    `json:"consumer_group"`
					Offset        string    `json:"offset"`
					Head          string    `json:"head"`
					Lag           int64     `json:"lag"`
					LeaderRunning bool      `json:"leader_running"`
					UpdatedAt     time.Time `json:"updated_at"`
				}
				out := make([]groupJSON, len(gs))
				for i, g := range gs {
					out[i] = groupJSON{g.ConsumerGroup, g.Offset.String(), g.Head.String(), g.Lag, g.LeaderRunning, g.UpdatedAt.UTC()}
				}
				return e.writeJSON(out)
			}
			if len(gs) == 0 {
				_, err := fmt.Fprintf(e.io.Stdout, "no consumer groups in schema %s: no forwarder has run there\n", store.Schema())
				return err
			}
			fmt.Fprintf(e.io.Stdout, "feed head %s\n", gs[0].Head)
			t := newTable(e.io.Stdout, "GROUP", "OFFSET", "LAG", "LEADER", "UPDATED AT")
			for _, g := range gs {
				leader := "-"
				if g.LeaderRunning {
					leader = "running"
				}
				t.row(g.ConsumerGroup, g.Offset.String(), fmt.Sprint(g.Lag), leader, formatTime(g.UpdatedAt))
			}
			return t.flush()
		},
	}

	setOffset := &cobra.Command{
		Use:   "set-offset <group> <position>",
		Short: "Move a consumer group's offset, to replay or skip events (destructive)",
		Long: `Store <position> (transaction_id/position, e.g. 845/12; 0/0 replays
everything) as the group's offset: its next leader publishes the events
after it. An earlier position publishes events again (consumers
de-duplicate on the message UUID, the event ID); a later one skips events,
which their consumers never get.

Stop every instance of the group first: it refuses, with exit code 4, while
a leader runs. It also refuses an unknown group (exit 3) and a position
after the feed's head (exit 2). It asks for confirmation unless --yes.`,
		Args: cobra.ExactArgs(2),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return e.groupNames(cmd), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			group := args[0]
			pos, err := parsePosition("position", args[1])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			g, err := forwarder.ReadGroup(ctx, store, group)
			if err != nil {
				return err
			}
			if g.LeaderRunning {
				return leaderRunning(group)
			}
			effect := "publishes the events after it again"
			if g.Offset.Less(pos) {
				effect = "skips the events up to it: their consumers never get them"
			}
			if err := e.confirm(fmt.Sprintf("Move consumer group %q from %s to %s? Its next leader %s.", group, g.Offset, pos, effect)); err != nil {
				return err
			}
			prev, err := forwarder.SetGroupOffset(ctx, store, group, pos)
			if errors.Is(err, forwarder.ErrForwarderRunning) {
				return leaderRunning(group) // a leader started since ReadGroup
			}
			if err != nil {
				return err
			}
			if e.json {
				return e.writeJSON(struct {
					ConsumerGroup  string `json:"consumer_group"`
					PreviousOffset string `json:"previous_offset"`
					Offset         string `json:"offset"`
				}{group, prev.String(), pos.String()})
			}
			_, err = fmt.Fprintf(e.io.Stdout, "consumer group %s: offset moved from %s to %s\n", group, prev, pos)
			return err
		},
	}
	cmd.AddCommand(list, setOffset)
	return cmd
}

// leaderRunningError refuses to act while a leader runs. It matches the
// library's sentinel (e.g. forwarder.ErrForwarderRunning) and says what to
// do in the command's words.
type leaderRunningError struct {
	msg string
	err error
}

func (e leaderRunningError) Error() string { return e.msg }
func (e leaderRunningError) Unwrap() error { return e.err }

func leaderRunning(group string) error {
	return leaderRunningError{fmt.Sprintf("refused: a forwarder of consumer group %q is running (its leader holds the group); stop every instance of the service that runs it, then retry", group), forwarder.ErrForwarderRunning}
}

// groupNames lists the consumer groups for shell completion; none when the
// database cannot be reached.
func (e *env) groupNames(cmd *cobra.Command) []string {
	store, err := e.openEvents(cmd.Context())
	if err != nil {
		return nil
	}
	gs, err := forwarder.ListGroups(cmd.Context(), store)
	if err != nil {
		return nil
	}
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.ConsumerGroup
	}
	return names
}
