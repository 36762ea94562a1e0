package eventstore_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
)

type soldPersonal struct {
	SKU   string `json:"sku"`
	N     int    `json:"n"`
	Buyer string `json:"buyer" esox:"subject"`
	Name  string `json:"name" esox:"personal"`
}

type soldPlain struct {
	SKU   string `json:"sku"`
	N     int    `json:"n"`
	Buyer string `json:"buyer"`
	Name  string `json:"name"`
}

// BenchmarkDecodePersonal decodes 1,000 stored events with one personal
// field each (Registry.Decrypt, one record at a time as ReadStream does,
// then AppendDecoded), against the same events in the clear: the client's
// CPU of decryption, without the database.
func BenchmarkDecodePersonal(b *testing.B) {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[soldPersonal](reg, "sold")
	eventstore.MustRegister[soldPlain](reg, "sold_plain")
	kek, _ := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{1}, 32))
	sh, _ := eventstore.NewShredder(memory.NewKeyStore(), kek, eventstore.ShredderConfig{})
	reg.SetShredder(sh)
	ctx := context.Background()
	mk := func(v func(i int) any) []eventstore.RawRecord {
		events := make([]eventstore.Event, 1000)
		for i := range events {
			events[i] = eventstore.Event{Data: v(i)}
		}
		enc, err := eventstore.EncodeAppend(ctx, reg, "s-1", eventstore.Any, events, nil)
		if err != nil {
			b.Fatal(err)
		}
		raws := make([]eventstore.RawRecord, len(enc))
		for i, e := range enc {
			raws[i] = eventstore.RawRecord{ID: e.ID, StreamID: "s-1", StreamVersion: int64(i + 1), Type: e.Type, SchemaVersion: 1, Payload: e.Payload, Metadata: e.Metadata}
		}
		return raws
	}
	for _, tc := range []struct {
		name string
		raws []eventstore.RawRecord
	}{
		{"encrypted", mk(func(i int) any { return soldPersonal{"sku", i, fmt.Sprint("b", i%10), "Ada Lovelace"} })},
		{"plaintext", mk(func(i int) any { return soldPlain{"sku", i, fmt.Sprint("b", i%10), "Ada Lovelace"} })},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var recs []eventstore.Record
			for b.Loop() {
				for _, raw := range tc.raws {
					one := [1]eventstore.RawRecord{raw}
					if err := reg.Decrypt(ctx, one[:]); err != nil {
						b.Fatal(err)
					}
					var err error
					if recs, err = one[0].AppendDecoded(recs[:0], reg); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
