package eventstore_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/esox-go/esox/eventstore"
)

// checkMetadataJSON fails t unless m encodes exactly as encoding/json
// encodes m.Map(): the bytes the stores write and MaxEventSize counts.
func checkMetadataJSON(t *testing.T, m eventstore.Metadata) {
	t.Helper()
	got, err := m.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(m.Map())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Metadata %+v encodes as\n%s\nencoding/json as\n%s", m, got, want)
	}
}

// TestMetadataJSONMatchesEncodingJSON: esox's own metadata encoder writes
// exactly what encoding/json writes, escapes and invalid UTF-8 included.
func TestMetadataJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `q"b\s`, "<a & b>", "\x00\x01\b\f\n\r\t\x1f\x7f", "é€𝄞", "\u2028\u2029", "bad\xffutf8\xc3", "\xed\xa0\x80"} {
		checkMetadataJSON(t, eventstore.Metadata{CorrelationID: s, Extra: map[string]string{s + "k": s, "z": s}})
		checkMetadataJSON(t, eventstore.Metadata{Actor: s, CausationID: "c", Extra: map[string]string{"actor": "shadowed", "a": s}})
		checkMetadataJSON(t, eventstore.Metadata{OnBehalfOf: s, Reason: s + "r", Extra: map[string]string{"reason": "shadowed", "on_behalf_of": "shadowed", "p": s}})
	}
	checkMetadataJSON(t, eventstore.Metadata{})
	many := map[string]string{}
	for _, k := range []string{"m", "b", "y", "a", "q", "c", "x", "d", "w", "e"} {
		many[k] = k + k
	}
	checkMetadataJSON(t, eventstore.Metadata{Actor: "n", Extra: many})
}

// FuzzMetadataEncoding: any metadata encodes exactly as encoding/json does.
func FuzzMetadataEncoding(f *testing.F) {
	f.Add("corr", "k", "v", "actor", "<&>")
	f.Add("", "\u2028", "\xff", "", "\x00")
	f.Fuzz(func(t *testing.T, corr, k, v, actor, other string) {
		checkMetadataJSON(t, eventstore.Metadata{CorrelationID: corr, Actor: actor, Extra: map[string]string{k: v, other: k}})
	})
}
