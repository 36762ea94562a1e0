package eventstore

import (
	"reflect"
	"testing"
)

// FuzzDecodeFlatMetadata: where the one-pass decoder of metadata columns
// answers, it answers what encoding/json does.
func FuzzDecodeFlatMetadata(f *testing.F) {
	for _, s := range []string{`{}`, ` { } `, `{"correlation_id": "c", "actor": "a", "x": "y"}`, `{"x":"1","x":"2"}`,
		`{"on_behalf_of":"o","reason":"r","causation_id":"k"}`, `{"a":"\u00e9"}`, `{"a":1}`, `{"a":"b",}`, `{"a":"b"} x`,
		`{"a":"` + "\xff" + `"}`, `{"a":"` + "\t" + `"}`, `{"é": "ü"}`, `null`, `{"a" "b"}`, `{"a":"b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeFlatMetadata(b)
		if !ok {
			return
		}
		want, err := decodeMetadataJSON(b)
		if err != nil {
			t.Fatalf("one pass decodes %q as %+v, encoding/json refuses it: %v", b, got, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("one pass decodes %q as %+v, encoding/json as %+v", b, got, want)
		}
	})
}
