package esoxcli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/esox-go/esox/eventstore"
)

// maxSealFile bounds the size of a seal file read by verify --seal: a seal
// is a few hundred bytes.
const maxSealFile = 64 << 10

// brokenError is a chain that does not verify or a seal that does not
// match: ExitBroken.
type brokenError struct{ msg string }

func (e brokenError) Error() string { return e.msg }

func (e *env) verifyCommand() *cobra.Command {
	var (
		stream, sealFile string
		batch            int
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify the hash chains of the streams, and the events against an exported seal",
		Long: `Verify recomputes the digest of every event (of one stream with --stream)
and reports the first broken link of each broken stream: an event changed,
missing, inserted or reordered, or without a digest after chained ones.
Events appended before chaining was enabled are counted as unchained.

With --seal FILE (a seal exported by 'esox seal'; - reads it from stdin) it
also checks that the events at or before the seal's position still make
the seal's digest: that finds events removed from a stream's tail and
histories rewritten with their digests recomputed, which the chains alone
cannot show. See docs/compliance.md for what this proves.

Exits 0 when everything verifies, 6 when a chain is broken or the seal
does not match, 2 for a malformed seal file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var seal *eventstore.Seal
			if sealFile != "" {
				s, err := e.readSeal(sealFile)
				if err != nil {
					return err
				}
				seal = &s
			}
			if batch < 1 || batch > maxLimit {
				return usagef("--batch-size must be between 1 and %d, got %d", maxLimit, batch)
			}
			if stream != "" {
				if err := eventstore.ValidateStreamID(stream); err != nil {
					return usagef("--stream: %w", err)
				}
			}
			store, err := e.openEvents(ctx)
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := store.Verify(ctx, &eventstore.VerifyOpts{StreamID: stream, BatchSize: batch})
			if err != nil {
				return err
			}
			took := time.Since(start)
			var sr *eventstore.SealResult
			if seal != nil {
				r, err := store.VerifySeal(ctx, *seal)
				if err != nil {
					return err
				}
				sr = &r
			}
			if err := e.writeVerify(res, sr, took); err != nil {
				return err
			}
			switch {
			case !res.OK() && sr != nil && !sr.OK():
				return brokenError{fmt.Sprintf("%d broken stream(s), and the events do not match the seal", res.BrokenStreams)}
			case !res.OK():
				return brokenError{fmt.Sprintf("%d broken stream(s)", res.BrokenStreams)}
			case sr != nil && !sr.OK():
				return brokenError{"the events do not match the seal: " + sr.Detail}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stream, "stream", "", "verify this stream only")
	cmd.Flags().StringVar(&sealFile, "seal", "", "also check the events against this exported seal (- for stdin)")
	cmd.Flags().IntVar(&batch, "batch-size", eventstore.VerifyBatchSizeDefault, "events read per query")
	return cmd
}

// readSeal reads and parses a seal file ("-": stdin). A missing,
// unreadable or malformed file is a usage error.
func (e *env) readSeal(name string) (eventstore.Seal, error) {
	var r io.Reader = e.io.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return eventstore.Seal{}, usagef("--seal: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSealFile+1))
	if err != nil {
		return eventstore.Seal{}, usagef("--seal: read %s: %w", name, err)
	}
	if len(b) > maxSealFile {
		return eventstore.Seal{}, usagef("--seal: %s is larger than %d bytes: not a seal", name, maxSealFile)
	}
	seal, err := eventstore.ParseSeal(b)
	if err != nil {
		return eventstore.Seal{}, usagef("--seal: %s: %w", name, err)
	}
	return seal, nil
}

type breakJSON struct {
	StreamID      string `json:"stream_id"`
	StreamVersion int64  `json:"stream_version"`
	Kind          string `json:"kind"`
	EventID       string `json:"event_id,omitempty"`
	Position      string `json:"position,omitempty"`
	Detail        string `json:"detail"`
}

type sealCheckJSON struct {
	Match   bool            `json:"match"`
	Seal    eventstore.Seal `json:"seal"`
	Streams int64           `json:"streams"`
	Events  int64           `json:"events"`
	Detail  string          `json:"detail,omitempty"`
}

// writeVerify prints what verify found.
func (e *env) writeVerify(res eventstore.VerifyResult, sr *eventstore.SealResult, took time.Duration) error {
	if e.json {
		out := struct {
			OK            bool           `json:"ok"`
			Streams       int64          `json:"streams"`
			Events        int64          `json:"events"`
			Unchained     int64          `json:"unchained"`
			BrokenStreams int64          `json:"broken_streams"`
			Breaks        []breakJSON    `json:"breaks"`
			Seal          *sealCheckJSON `json:"seal,omitempty"`
			Seconds       float64        `json:"seconds"`
		}{OK: res.OK() && (sr == nil || sr.OK()), Streams: res.Streams, Events: res.Events, Unchained: res.Unchained,
			BrokenStreams: res.BrokenStreams, Breaks: []breakJSON{}, Seconds: took.Seconds()}
		for _, b := range res.Breaks {
			out.Breaks = append(out.Breaks, toBreakJSON(b))
		}
		if sr != nil {
			out.Seal = &sealCheckJSON{Match: sr.OK(), Seal: sr.Seal, Streams: sr.Streams, Events: sr.Events, Detail: sr.Detail}
		}
		return e.writeJSON(out)
	}
	w := e.io.Stdout
	fmt.Fprintf(w, "verified %d event(s) in %d stream(s) in %s", res.Events, res.Streams, took.Round(time.Millisecond))
	if res.Unchained > 0 {
		fmt.Fprintf(w, "; %d unchained (appended before chaining was enabled)", res.Unchained)
	}
	fmt.Fprintln(w)
	if res.OK() {
		fmt.Fprintln(w, "chains: ok")
	} else {
		fmt.Fprintf(w, "chains: %d broken stream(s)\n", res.BrokenStreams)
		t := newTable(w, "STREAM", "VERSION", "KIND", "EVENT ID", "POSITION", "DETAIL")
		for _, b := range res.Breaks {
			j := toBreakJSON(b)
			t.row(j.StreamID, fmt.Sprint(j.StreamVersion), j.Kind, dash(j.EventID), dash(j.Position), j.Detail)
		}
		if err := t.flush(); err != nil {
			return err
		}
		if int64(len(res.Breaks)) < res.BrokenStreams {
			fmt.Fprintf(w, "(%d more broken stream(s) not listed)\n", res.BrokenStreams-int64(len(res.Breaks)))
		}
	}
	if sr != nil {
		if sr.OK() {
			fmt.Fprintf(w, "seal %d at %s (%d events in %d streams, sealed %s): ok\n", sr.Seal.ID, sr.Seal.Position, sr.Seal.Events, sr.Seal.Streams, formatTime(sr.Seal.SealedAt))
		} else {
			fmt.Fprintf(w, "seal %d at %s: MISMATCH: %s\n", sr.Seal.ID, sr.Seal.Position, sr.Detail)
		}
	}
	return nil
}

func toBreakJSON(b eventstore.ChainBreak) breakJSON {
	j := breakJSON{StreamID: b.StreamID, StreamVersion: b.StreamVersion, Kind: string(b.Kind), Detail: b.Detail}
	if b.EventID != ([16]byte{}) {
		j.EventID, j.Position = b.EventID.String(), b.Position.String()
	}
	return j
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (e *env) sealCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "seal",
		Short: "Seal the feed's head and print the seal to export",
		Long: `Seal computes a digest over the head of every stream at the feed's current
head, records it in the schema's seals table, and prints it as JSON: keep
that copy somewhere the database's superusers cannot change (an append-only
log, object storage with retention, another system). 'esox verify --seal'
checks the events against it later. With --out FILE it writes the seal to
FILE instead (refusing to overwrite an existing file) and prints a summary.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var f *os.File
			if out != "" {
				var err error
				if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err != nil {
					if errors.Is(err, os.ErrExist) {
						return usagef("--out: %s exists: a seal file is never overwritten", out)
					}
					return usagef("--out: %w", err)
				}
				defer f.Close()
			}
			store, err := e.openEvents(cmd.Context())
			if err != nil {
				if f != nil {
					_ = os.Remove(out)
				}
				return err
			}
			seal, err := store.Seal(cmd.Context())
			if err != nil {
				if f != nil {
					_ = os.Remove(out)
				}
				return err
			}
			if f == nil {
				return e.writeJSON(seal)
			}
			b, err := seal.MarshalJSON()
			if err != nil {
				return err
			}
			if _, err := f.Write(append(b, '\n')); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			if err := f.Sync(); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			if e.json {
				return e.writeJSON(seal)
			}
			fmt.Fprintf(e.io.Stdout, "seal %d at %s: %d event(s) in %d stream(s), digest %x, written to %s\n",
				seal.ID, seal.Position, seal.Events, seal.Streams, seal.Digest, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the seal to this file (never overwritten) instead of stdout")
	return cmd
}
