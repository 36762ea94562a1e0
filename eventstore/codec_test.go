package eventstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/gojson"
)

// codecEnv names the Codec the package's tests run with: unset for the
// default (encoding/json), "gojson" for eventstore/gojson.
const codecEnv = "ESOX_TEST_CODEC"

func TestMain(m *testing.M) {
	switch c := os.Getenv(codecEnv); c {
	case "":
	case "gojson":
		eventstore.SetDefaultCodec(gojson.Codec{})
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want gojson or nothing\n", codecEnv, c)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// TestGoJSONConformance runs every other test of the package again (the
// decoding, upcasting, personal-data and fuzz seed tests among them) with
// eventstore/gojson as the Codec of every Registry: a Codec must not
// change what the registry decodes or refuses.
func TestGoJSONConformance(t *testing.T) {
	if os.Getenv(codecEnv) != "" {
		t.Skip("already running with another codec")
	}
	if testing.Short() {
		t.Skip("runs the package's tests again")
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.count=1", "-test.skip=^TestGoJSONConformance$")
	cmd.Env = append(os.Environ(), codecEnv+"=gojson")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the package's tests with the gojson codec: %v\n%s", err, out)
	}
}

// FuzzCodecsAgree: eventstore/gojson decodes what encoding/json decodes,
// into the same value, refuses what it refuses (both with a
// *PayloadError), and encodes the values to JSON that decodes the same.
func FuzzCodecsAgree(f *testing.F) {
	for _, s := range []string{`{"order_id":"o","cents":5}`, `{"ORDER_ID":"o","Cents":5,"x":[1,{"y":null}]}`, `{"cents":null}`,
		`{"order_id":"\u00e9\ud83d\ude00<&>"}`, `{"order_id":"a","order_id":"b"}`, `{`, `null`, `[]`, `{"cents":1e99}`, `{"cents":1.5}`, "\x00", `{"order_id":"\xff"}`} {
		f.Add([]byte(s))
	}
	std, fast := eventstore.NewRegistry(), eventstore.NewRegistry()
	fast.SetCodec(gojson.Codec{})
	for _, r := range []*eventstore.Registry{std, fast} {
		eventstore.MustRegister[placed](r, "OrderPlaced")
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		v1, err1 := std.Decode("OrderPlaced", payload)
		v2, err2 := fast.Decode("OrderPlaced", payload)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("encoding/json: %v, gojson: %v", err1, err2)
		}
		if err1 != nil {
			if !errors.Is(err2, eventstore.ErrMalformedPayload) {
				t.Fatalf("untyped error %v", err2)
			}
			return
		}
		if !reflect.DeepEqual(v1, v2) {
			t.Fatalf("encoding/json decodes %#v, gojson %#v", v1, v2)
		}
		_, b1, err1 := std.Encode(v1)
		_, b2, err2 := fast.Encode(v1)
		if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encoding/json encodes %s (%v), gojson %s (%v)", b1, err1, b2, err2)
		}
	})
}

// BenchmarkDecode decodes one stored event at its type's current version
// (RawRecord.AppendDecoded, as every read does) with each Codec, with empty
// metadata and with three keys (correlation, causation, trace context).
func BenchmarkDecode(b *testing.B) {
	type item struct {
		SKU string `json:"sku"`
		N   int    `json:"n"`
	}
	metadata := map[string]string{
		"none":  `{}`,
		"three": `{"causation_id": "01900000-0000-7000-8000-000000000001", "correlation_id": "01900000-0000-7000-8000-000000000002", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`,
	}
	for _, c := range []struct {
		name  string
		codec eventstore.Codec
	}{{"json", eventstore.JSONCodec{}}, {"gojson", gojson.Codec{}}} {
		for _, md := range []string{"none", "three"} {
			raw := eventstore.RawRecord{ID: uuid.New(), Type: "item_added", SchemaVersion: 1, Payload: []byte(`{"n": 1, "sku": "sku-1"}`), Metadata: []byte(metadata[md])}
			b.Run("codec="+c.name+"/metadata="+md, func(b *testing.B) {
				reg := eventstore.NewRegistry()
				reg.SetCodec(c.codec)
				eventstore.MustRegister[item](reg, "item_added")
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
}

// BenchmarkEncodeAppend measures the client's CPU and allocations of
// encoding one append of one event (EncodeAppend: validation, payload,
// metadata, the checks of what PostgreSQL can store), with each Codec.
func BenchmarkEncodeAppend(b *testing.B) {
	type item struct {
		SKU string `json:"sku"`
		N   int    `json:"n"`
	}
	for _, c := range []struct {
		name  string
		codec eventstore.Codec
	}{{"json", eventstore.JSONCodec{}}, {"gojson", gojson.Codec{}}} {
		b.Run("codec="+c.name, func(b *testing.B) {
			reg := eventstore.NewRegistry()
			reg.SetCodec(c.codec)
			eventstore.MustRegister[item](reg, "item_added")
			events := []eventstore.Event{{Data: item{SKU: "sku-1", N: 1}}}
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := eventstore.EncodeAppend(ctx, reg, "order-1", eventstore.Exact(3), events, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
