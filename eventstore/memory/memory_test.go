package memory_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/gojson"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/eventstore/storetest"
	"github.com/google/uuid"
)

// TestConformance runs the store conformance suite against the memory store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		return memory.New(reg)
	})
	storetest.RunEvolution(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		return memory.New(reg)
	}, func(t *testing.T, s eventstore.Store, reg *eventstore.Registry) eventstore.Store {
		return s.(*memory.Store).WithRegistry(reg)
	})
	storetest.RunChain(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		return memory.New(reg)
	})
	storetest.RunPersonalData(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		return memory.New(reg)
	}, func(t *testing.T, s eventstore.Store, reg *eventstore.Registry) eventstore.Store {
		return s.(*memory.Store).WithRegistry(reg)
	}, func(t *testing.T) eventstore.KeyStore { return memory.NewKeyStore() })
	storetest.RunMaxEventSize(t, func(t *testing.T, reg *eventstore.Registry, maxEventSize int) eventstore.Store {
		s, err := memory.NewWithConfig(reg, memory.Config{MaxEventSize: maxEventSize})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestConformanceGoJSON runs the conformance suites of encoding and
// decoding (events, evolution, personal data) with the eventstore/gojson
// Codec: a Codec must not change what a store accepts, refuses or reads.
func TestConformanceGoJSON(t *testing.T) {
	newStore := func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		reg.SetCodec(gojson.Codec{})
		return memory.New(reg)
	}
	reopen := func(t *testing.T, s eventstore.Store, reg *eventstore.Registry) eventstore.Store {
		reg.SetCodec(gojson.Codec{})
		return s.(*memory.Store).WithRegistry(reg)
	}
	storetest.Run(t, newStore)
	storetest.RunEvolution(t, newStore, reopen)
	storetest.RunPersonalData(t, newStore, reopen, func(t *testing.T) eventstore.KeyStore { return memory.NewKeyStore() })
}

func TestNewWithConfigRefusesNegativeMaxEventSize(t *testing.T) {
	t.Parallel()
	_, err := memory.NewWithConfig(eventstore.NewRegistry(), memory.Config{MaxEventSize: -1})
	if !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("NewWithConfig(MaxEventSize -1) = %v, want ErrInvalidArgument", err)
	}
}

type itemAdded struct {
	SKU   string         `json:"sku"`
	Qty   int            `json:"qty"`
	Attrs map[string]int `json:"attrs,omitempty"`
}

func newStore(t *testing.T) (*memory.Store, context.Context) {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[itemAdded](reg, "item_added")
	return memory.New(reg), t.Context()
}

// TestConcurrentUse runs writers on private and shared streams beside feed
// tailers, stream readers and snapshot users (run it with -race), then checks
// the feed: every event once, Positions contiguous, one TransactionID per
// append, each stream in version order.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)
	const (
		privateWriters = 6
		sharedWriters  = 4
		appends        = 100
		total          = (privateWriters + sharedWriters) * appends
	)
	var writers, readers sync.WaitGroup
	errc := make(chan error, 64)
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	for w := range privateWriters {
		writers.Go(func() {
			stream := fmt.Sprintf("private-%d", w)
			for v := range appends {
				if _, err := s.Append(ctx, stream, eventstore.Exact(int64(v)), []eventstore.Event{{Data: itemAdded{SKU: stream, Qty: v}}}); err != nil {
					report(err)
					return
				}
				if v%10 == 0 {
					if err := s.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: stream, Version: int64(v + 1), Type: "t", Payload: []byte(`{}`)}); err != nil {
						report(err)
					}
				}
			}
		})
	}
	for w := range sharedWriters {
		writers.Go(func() {
			for v := range appends {
				if _, err := s.Append(ctx, "shared-1", eventstore.Any, []eventstore.Event{{Data: itemAdded{SKU: "shared", Qty: w*1000 + v}}}); err != nil {
					report(err)
					return
				}
			}
		})
	}
	// Feed tailers read until they have seen every event, checking order.
	for range 3 {
		readers.Go(func() {
			var after eventstore.Position
			seen := 0
			versions := map[string]int64{}
			for seen < total {
				page, err := s.ReadAll(ctx, after, 37)
				if err != nil {
					report(err)
					return
				}
				for _, r := range page {
					if !after.Less(r.Position) || r.StreamVersion != versions[r.StreamID]+1 {
						report(fmt.Errorf("tailer: %s v%d at %s after %s v%d", r.StreamID, r.StreamVersion, r.Position, after, versions[r.StreamID]))
						return
					}
					versions[r.StreamID] = r.StreamVersion
					after = r.Position
				}
				seen += len(page)
				if len(page) == 0 {
					select {
					case <-ctx.Done():
						report(ctx.Err())
						return
					case <-time.After(time.Millisecond):
					}
				}
			}
		})
	}
	readers.Go(func() {
		for range 50 {
			var last int64
			for r, err := range s.ReadStream(ctx, "shared-1", 1) {
				if err != nil || r.StreamVersion != last+1 {
					report(fmt.Errorf("ReadStream: version %d after %d, err %v", r.StreamVersion, last, err))
					return
				}
				last = r.StreamVersion
			}
			if _, err := s.StreamInfo(ctx, "shared-1"); err != nil {
				report(err)
			}
			if _, err := s.LoadSnapshot(ctx, "private-0"); err != nil && !errors.Is(err, eventstore.ErrSnapshotNotFound) {
				report(err)
			}
			_ = s.All()
		}
	})
	writers.Wait()
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}

	all := s.All()
	if len(all) != total {
		t.Fatalf("All() holds %d records, want %d", len(all), total)
	}
	ids := map[uuid.UUID]bool{}
	for i, r := range all {
		// One event per append here: each has its own transaction.
		if want := (eventstore.Position{TransactionID: uint64(i + 1), Position: int64(i + 1)}); r.Position != want {
			t.Fatalf("record %d at %s, want %s", i, r.Position, want)
		}
		if ids[r.ID] {
			t.Fatalf("event %s appears twice", r.ID)
		}
		ids[r.ID] = true
	}
	if info, _ := s.StreamInfo(ctx, "shared-1"); info.Version != sharedWriters*appends {
		t.Fatalf("shared-1 is at version %d, want %d", info.Version, sharedWriters*appends)
	}
}

// TestPositions checks the emulated feed position: one TransactionID per
// append, one Position per event, both increasing; a refused append uses
// neither.
func TestPositions(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)
	r1, err := s.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: itemAdded{SKU: "a"}}, {Data: itemAdded{SKU: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: itemAdded{SKU: "c"}}}); !errors.Is(err, eventstore.ErrConcurrencyConflict) {
		t.Fatalf("conflicting Append: %v", err)
	}
	r2, err := s.Append(ctx, "order-2", eventstore.NoStream, []eventstore.Event{{Data: itemAdded{SKU: "c"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventstore.Position{TransactionID: 1, Position: 2}); r1.LastPosition != want {
		t.Errorf("first append's LastPosition = %s, want %s", r1.LastPosition, want)
	}
	if want := (eventstore.Position{TransactionID: 2, Position: 3}); r2.LastPosition != want {
		t.Errorf("second append's LastPosition = %s, want %s", r2.LastPosition, want)
	}
	var got []eventstore.Position
	for _, r := range s.All() {
		got = append(got, r.Position)
	}
	want := []eventstore.Position{{TransactionID: 1, Position: 1}, {TransactionID: 1, Position: 2}, {TransactionID: 2, Position: 3}}
	if !slices.Equal(got, want) {
		t.Errorf("All() positions = %v, want %v", got, want)
	}
}

// TestNULInJSON checks the jsonb emulation for event payloads: U+0000 in any
// JSON string (value or key) is refused, the six characters `\u0000` are
// not.
func TestNULInJSON(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)
	for name, data := range map[string]itemAdded{
		"value":       {SKU: "a\x00"},
		"map key":     {SKU: "a", Attrs: map[string]int{"k\x00": 1}},
		"only NUL":    {SKU: "\x00"},
		"after slash": {SKU: `\` + "\x00"},
	} {
		_, err := s.Append(ctx, "nul-1", eventstore.Any, []eventstore.Event{{Data: data}})
		var pe *eventstore.PayloadError
		if !errors.As(err, &pe) || pe.Type != "item_added" {
			t.Errorf("%s: Append error %v, want a *eventstore.PayloadError for item_added", name, err)
		}
	}
	if info, _ := s.StreamInfo(ctx, "nul-1"); info.Exists {
		t.Fatal("a refused append wrote events")
	}
	fine := itemAdded{SKU: `\u0000 \\u0000`, Attrs: map[string]int{`\u0000`: 1}}
	if _, err := s.Append(ctx, "nul-1", eventstore.NoStream, []eventstore.Event{{Data: fine}}); err != nil {
		t.Fatalf("Append of backslash-u text: %v", err)
	}
	if got := s.All()[0].Data; !reflect.DeepEqual(got, fine) {
		t.Fatalf("read back %#v, want %#v", got, fine)
	}
}

// TestAllIsACopy checks All hands out records the caller may change.
func TestAllIsACopy(t *testing.T) {
	t.Parallel()
	s, ctx := newStore(t)
	if got := s.All(); len(got) != 0 {
		t.Fatalf("All() of a new store = %v, want empty", got)
	}
	ctx = eventstore.WithMetadata(ctx, eventstore.Metadata{Extra: map[string]string{"k": "v"}})
	if _, err := s.Append(ctx, "copy-1", eventstore.NoStream, []eventstore.Event{{Data: itemAdded{SKU: "a", Attrs: map[string]int{"x": 1}}}}); err != nil {
		t.Fatal(err)
	}
	first := s.All()
	first[0].Data.(itemAdded).Attrs["x"] = 2
	first[0].Metadata.Extra["k"] = "changed"
	first[0].Payload[0] = 'X'
	second := s.All()
	if got := second[0].Data.(itemAdded).Attrs["x"]; got != 1 {
		t.Errorf("Attrs[x] = %d after changing an earlier copy, want 1", got)
	}
	if got := second[0].Metadata.Extra["k"]; got != "v" {
		t.Errorf("Metadata.Extra[k] = %q after changing an earlier copy, want v", got)
	}
	if second[0].Payload[0] != '{' {
		t.Errorf("Payload = %s after changing an earlier copy", second[0].Payload)
	}
}
