package eventstore_test

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// BenchmarkAppendDecoded decodes one stored event at its type's current
// version, and one a version older that AddField upcasts first: the cost
// an upcast step adds to a read, without a database.
func BenchmarkAppendDecoded(b *testing.B) {
	type item struct {
		SKU  string `json:"sku"`
		N    int    `json:"n"`
		Unit string `json:"unit"`
	}
	reg := eventstore.NewRegistry()
	eventstore.MustRegisterVersion[item](reg, "item_added", 2)
	if err := reg.Upcast("item_added", 1, eventstore.AddField("unit", "piece")); err != nil {
		b.Fatal(err)
	}
	for name, raw := range map[string]eventstore.RawRecord{
		"current": {ID: uuid.New(), Type: "item_added", SchemaVersion: 2, Payload: json.RawMessage(`{"n": 1, "sku": "sku", "unit": "piece"}`), Metadata: json.RawMessage(`{}`)},
		"upcast":  {ID: uuid.New(), Type: "item_added", SchemaVersion: 1, Payload: json.RawMessage(`{"n": 1, "sku": "sku"}`), Metadata: json.RawMessage(`{}`)},
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			recs := make([]eventstore.Record, 0, 1)
			for b.Loop() {
				var err error
				if recs, err = raw.AppendDecoded(recs[:0], reg); err != nil || len(recs) != 1 {
					b.Fatal(err)
				}
			}
		})
	}
}
