package esoxcli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/esox-go/esox/eventstore"
)

// timeFormat is how tables show times: UTC, to the millisecond.
const timeFormat = "2006-01-02T15:04:05.000Z"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(timeFormat)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// writeJSON prints v as indented JSON.
func (e *env) writeJSON(v any) error {
	enc := json.NewEncoder(e.io.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeJSONLine prints v as one line of JSON (for streams of objects).
func (e *env) writeJSONLine(v any) error {
	enc := json.NewEncoder(e.io.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes aligned columns to w; call flush at the end.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		cols[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// recordJSON is a raw event as --json prints it.
type recordJSON struct {
	Position      string          `json:"position"`
	EventID       string          `json:"event_id"`
	StreamID      string          `json:"stream_id"`
	StreamVersion int64           `json:"stream_version"`
	EventType     string          `json:"event_type"`
	SchemaVersion int             `json:"schema_version"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Metadata      json.RawMessage `json:"metadata"`
	Payload       json.RawMessage `json:"payload"`
}

func toRecordJSON(r eventstore.RawRecord) recordJSON {
	md := r.Metadata
	if len(md) == 0 {
		md = json.RawMessage("{}")
	}
	return recordJSON{
		Position:      r.Position.String(),
		EventID:       r.ID.String(),
		StreamID:      r.StreamID,
		StreamVersion: r.StreamVersion,
		EventType:     r.Type,
		SchemaVersion: max(r.SchemaVersion, 1),
		RecordedAt:    r.RecordedAt.UTC(),
		Metadata:      compactJSON(md),
		Payload:       compactJSON(r.Payload),
	}
}

// compactJSON returns b without insignificant white space (jsonb adds
// some), or b itself when it does not parse.
func compactJSON(b []byte) json.RawMessage {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}

// indentJSON returns b indented for reading, or b when it does not parse.
func indentJSON(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String()
}

// writeRecords prints records as a table (columns chosen for a stream or
// for the feed) or as a JSON array.
func (e *env) writeRecords(recs []eventstore.RawRecord, feed bool) error {
	if e.json {
		out := make([]recordJSON, len(recs))
		for i, r := range recs {
			out[i] = toRecordJSON(r)
		}
		return e.writeJSON(out)
	}
	var t *table
	if feed {
		t = newTable(e.io.Stdout, "POSITION", "STREAM", "VERSION", "TYPE", "EVENT ID", "RECORDED AT", "PAYLOAD")
	} else {
		t = newTable(e.io.Stdout, "VERSION", "POSITION", "TYPE", "EVENT ID", "RECORDED AT", "PAYLOAD")
	}
	for _, r := range recs {
		if feed {
			t.row(r.Position.String(), r.StreamID, fmt.Sprint(r.StreamVersion), r.Type, r.ID.String(), formatTime(r.RecordedAt), string(compactJSON(r.Payload)))
		} else {
			t.row(fmt.Sprint(r.StreamVersion), r.Position.String(), r.Type, r.ID.String(), formatTime(r.RecordedAt), string(compactJSON(r.Payload)))
		}
	}
	return t.flush()
}

// writeFeedLine prints one followed record: a line of JSON, or a line of
// space-separated columns (a table cannot align what is still to come).
func (e *env) writeFeedLine(r eventstore.RawRecord) error {
	if e.json {
		return e.writeJSONLine(toRecordJSON(r))
	}
	_, err := fmt.Fprintf(e.io.Stdout, "%s  %s  v%d  %s  %s  %s  %s\n", r.Position, r.StreamID, r.StreamVersion, r.Type, r.ID, formatTime(r.RecordedAt), compactJSON(r.Payload))
	return err
}
