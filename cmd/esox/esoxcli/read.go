package esoxcli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// maxLimit is the largest --limit of the reads.
const maxLimit = eventstore.MaxReadAllLimit

func checkLimit(limit int) error {
	if limit < 1 || limit > maxLimit {
		return usagef("--limit must be between 1 and %d, got %d", maxLimit, limit)
	}
	return nil
}

// parsePosition parses a position argument or flag value.
func parsePosition(what, s string) (eventstore.Position, error) {
	p, err := eventstore.ParsePosition(s)
	if err != nil {
		return eventstore.Position{}, usagef("%s: %w", what, err)
	}
	return p, nil
}

func (e *env) streamsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "streams", Short: "List streams"}
	var p postgres.ListStreamsParams
	list := &cobra.Command{
		Use:   "list",
		Short: "List streams with their version and last event time, by stream ID",
		Long: `List the streams that have events, ordered by stream ID, with each one's
version (its number of events) and when its last event was appended.
--category keeps the streams of one category (the part of the ID before
its first '-'); --after and --limit page through them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkLimit(p.Limit); err != nil {
				return err
			}
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			ss, err := store.ListStreams(cmd.Context(), p)
			if err != nil {
				return err
			}
			if e.json {
				type streamJSON struct {
					StreamID       string    `json:"stream_id"`
					Category       string    `json:"category"`
					Version        int64     `json:"version"`
					LastRecordedAt time.Time `json:"last_recorded_at"`
				}
				out := make([]streamJSON, len(ss))
				for i, s := range ss {
					out[i] = streamJSON{s.StreamID, eventstore.Category(s.StreamID), s.Version, s.LastRecordedAt.UTC()}
				}
				return e.writeJSON(out)
			}
			t := newTable(e.io.Stdout, "STREAM", "VERSION", "LAST EVENT AT")
			for _, s := range ss {
				t.row(s.StreamID, fmt.Sprint(s.Version), formatTime(s.LastRecordedAt))
			}
			if err := t.flush(); err != nil {
				return err
			}
			if len(ss) == p.Limit {
				fmt.Fprintf(e.io.Stderr, "more streams may follow: --after %q\n", ss[len(ss)-1].StreamID)
			}
			return nil
		},
	}
	list.Flags().StringVar(&p.Category, "category", "", "only streams of this category")
	list.Flags().StringVar(&p.After, "after", "", "only streams whose ID sorts after this one (paging)")
	list.Flags().IntVar(&p.Limit, "limit", postgres.ListStreamsLimitDefault, "the most streams to list")
	cmd.AddCommand(list)
	return cmd
}

func (e *env) streamCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "stream", Short: "Read a stream"}
	var from int64
	var limit int
	read := &cobra.Command{
		Use:   "read <stream-id>",
		Short: "Print a stream's events in version order, payloads as stored",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkLimit(limit); err != nil {
				return err
			}
			if err := eventstore.ValidateStreamID(args[0]); err != nil {
				return usageError{err}
			}
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			recs, err := store.ReadStreamRaw(cmd.Context(), args[0], from, limit)
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				info, err := store.StreamInfo(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if !info.Exists {
					return notFoundError{fmt.Sprintf("stream %q not found: it has no events", args[0])}
				}
			}
			if err := e.writeRecords(recs, false); err != nil {
				return err
			}
			if !e.json && len(recs) == limit {
				fmt.Fprintf(e.io.Stderr, "more events may follow: --from %d\n", recs[len(recs)-1].StreamVersion+1)
			}
			return nil
		},
	}
	read.Flags().Int64Var(&from, "from", 1, "first version to print")
	read.Flags().IntVar(&limit, "limit", 100, "the most events to print")
	cmd.AddCommand(read)
	return cmd
}

func (e *env) eventCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "event", Short: "Show an event"}
	show := &cobra.Command{
		Use:   "show <event-id>",
		Short: "Show one event by its ID (the broker message UUID), payload as stored",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := uuid.Parse(args[0])
			if err != nil {
				return usagef("event ID %q is not a UUID: %w", args[0], err)
			}
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			recs, err := store.LookupRawEvents(cmd.Context(), []uuid.UUID{id})
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				return notFoundError{fmt.Sprintf("event %s not found in schema %s", id, store.Schema())}
			}
			r := recs[0]
			if e.json {
				return e.writeJSON(toRecordJSON(r))
			}
			_, err = fmt.Fprintf(e.io.Stdout, "event_id     %s\nstream       %s (version %d)\nposition     %s\ntype         %s (schema version %d)\nrecorded_at  %s\nmetadata     %s\npayload\n%s\n",
				r.ID, r.StreamID, r.StreamVersion, r.Position, r.Type, max(r.SchemaVersion, 1), formatTime(r.RecordedAt), compactJSON(r.Metadata), indentJSON(r.Payload))
			return err
		},
	}
	cmd.AddCommand(show)
	return cmd
}

func (e *env) feedCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "feed",
		Short: "Read or follow the global feed",
		Long: `The global feed is every event in (transaction_id, position) order, the
order projections and forwarders read. A position is written
transaction_id/position, e.g. 845/12; 0/0 is the start of the feed. The
feed shows an event once no older transaction is still running, so an
open transaction anywhere on the server holds it back.`,
	}
	var afterFlag string
	var limit int
	read := &cobra.Command{
		Use:   "read",
		Short: "Print the feed's events after a position",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			after, err := parsePosition("--after", afterFlag)
			if err != nil {
				return err
			}
			if err := checkLimit(limit); err != nil {
				return err
			}
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				return err
			}
			recs, err := store.ReadFeed(cmd.Context(), after, limit)
			if err != nil {
				return err
			}
			if err := e.writeRecords(recs, true); err != nil {
				return err
			}
			if !e.json && len(recs) == limit {
				fmt.Fprintf(e.io.Stderr, "more events may follow: --after %s\n", recs[len(recs)-1].Position)
			}
			return nil
		},
	}
	read.Flags().StringVar(&afterFlag, "after", "0/0", "print events after this position")
	read.Flags().IntVar(&limit, "limit", 100, "the most events to print")

	var followAfter string
	var followLimit int
	var poll time.Duration
	follow := &cobra.Command{
		Use:   "follow",
		Short: "Print the feed's events as they come, until interrupted",
		Long: `Print each event of the feed as it becomes readable, one per line (one
JSON object per line with --json), until interrupted (exit 0) or --limit
events were printed. It starts after the feed's current head, or after
--after (0/0 prints everything first).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var after eventstore.Position
			if followAfter != "" {
				var err error
				if after, err = parsePosition("--after", followAfter); err != nil {
					return err
				}
			}
			if followLimit < 0 {
				return usagef("--limit must not be negative, got %d", followLimit)
			}
			if poll < 0 {
				return usagef("--poll-interval must not be negative, got %s", poll)
			}
			ctx := cmd.Context()
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			if followAfter == "" {
				if after, err = store.Head(ctx); err != nil {
					return err
				}
			}
			if !e.json {
				fmt.Fprintf(e.io.Stderr, "following the feed of schema %s after %s (Ctrl-C stops)\n", store.Schema(), after)
			}
			n := 0
			for r, err := range store.FollowFeed(ctx, after, &postgres.FollowFeedOpts{PollInterval: poll}) {
				if err != nil {
					return err
				}
				if err := e.writeFeedLine(r); err != nil {
					return err
				}
				if n++; followLimit > 0 && n == followLimit {
					return nil
				}
			}
			// The iteration ends when ctx is done: an interrupt is the way
			// to stop following, not an error; a --timeout is one.
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return ctx.Err()
			}
			return nil
		},
	}
	follow.Flags().StringVar(&followAfter, "after", "", "start after this position (default: the feed's current head)")
	follow.Flags().IntVar(&followLimit, "limit", 0, "stop after this many events (0: follow until interrupted)")
	follow.Flags().DurationVar(&poll, "poll-interval", postgres.FollowPollIntervalDefault, "how often to look for new events")
	cmd.AddCommand(read, follow)
	return cmd
}
