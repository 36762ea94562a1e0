package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

type testBundle struct {
	store *memory.Store
	repo  *aggregate.Repository[*Order]
}

func setup(t *testing.T, cfg aggregate.Config) *testBundle {
	t.Helper()
	store := memory.New(newRegistry())
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	repo, err := aggregate.NewRepository(store, "order", NewOrder, cfg)
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	return &testBundle{store: store, repo: repo}
}

func mustUpdate[T aggregate.Root](t *testing.T, repo *aggregate.Repository[T], id string, fn func(T) error) eventstore.AppendResult {
	t.Helper()
	res, err := repo.Update(context.Background(), id, fn)
	if err != nil {
		t.Fatalf("Update(%s): %v", id, err)
	}
	return res
}

func streamVersion(t *testing.T, store eventstore.Store, streamID string) int64 {
	t.Helper()
	info, err := store.StreamInfo(context.Background(), streamID)
	if err != nil {
		t.Fatalf("StreamInfo: %v", err)
	}
	return info.Version
}

func TestCreateLoadUpdate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})

	res, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") })
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if res.StreamID != "order-o1" || res.FirstVersion != 1 || res.LastVersion != 1 || len(res.EventIDs) != 1 {
		t.Fatalf("Create result = %+v, want stream order-o1 version 1 with one event", res)
	}
	res = mustUpdate(t, b.repo, "o1", func(o *Order) error {
		if err := o.AddItem("apple", 2); err != nil {
			return err
		}
		return o.Ship()
	})
	if res.FirstVersion != 2 || res.LastVersion != 3 {
		t.Fatalf("Update result = %+v, want versions 2..3", res)
	}

	o, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := orderState{Customer: "ada", Items: map[string]int{"apple": 2}, Shipped: true}
	if o.ID() != "o1" || o.Version() != 3 || len(o.Pending()) != 0 || !reflect.DeepEqual(o.state(), want) {
		t.Fatalf("Load = id %q version %d pending %v state %+v; want o1, 3, none, %+v", o.ID(), o.Version(), o.Pending(), o.state(), want)
	}

	// The stored events are the values raised, the pointer dereferenced.
	var got []any
	for rec, err := range b.store.ReadStream(ctx, "order-o1", 1) {
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		got = append(got, rec.Data)
	}
	wantEvents := []any{OrderPlaced{Customer: "ada"}, ItemAdded{SKU: "apple", Qty: 2}, OrderShipped{}}
	if !reflect.DeepEqual(got, wantEvents) {
		t.Fatalf("stored events = %#v, want %#v", got, wantEvents)
	}
}

// TestCreateExisting: Create of a stream that has events writes nothing
// and returns an *AlreadyExistsError, matched by ErrAlreadyExists and, for
// callers that handle every conflict alike, by ErrConcurrencyConflict.
func TestCreateExisting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	if _, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
	_, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("bob") })
	requireAlreadyExists(t, err, "order-o1", 2)
	if v := streamVersion(t, b.store, "order-o1"); v != 2 {
		t.Fatalf("stream version after refused Create = %d, want 2", v)
	}
}

// requireAlreadyExists fails t unless err is the *AlreadyExistsError of
// streamID at version, matching both sentinels.
func requireAlreadyExists(t *testing.T, err error, streamID string, version int64) {
	t.Helper()
	var (
		ae *aggregate.AlreadyExistsError
		ce *eventstore.ConcurrencyError
	)
	if !errors.Is(err, aggregate.ErrAlreadyExists) || !errors.As(err, &ae) {
		t.Fatalf("err = %v, want an *aggregate.AlreadyExistsError", err)
	}
	if ae.StreamID != streamID || ae.Version != version {
		t.Fatalf("AlreadyExistsError = %+v, want stream %s at version %d", ae, streamID, version)
	}
	if !errors.Is(err, eventstore.ErrConcurrencyConflict) || !errors.As(err, &ce) || ce.Expected != eventstore.NoStream || ce.Actual != version {
		t.Fatalf("err = %v does not unwrap to the store's conflict (expected no_stream, actual %d)", err, version)
	}
	if !strings.Contains(err.Error(), streamID) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("message %q does not name the stream and say it exists", err)
	}
}

func TestLoadMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	if _, err := b.repo.Load(ctx, "nope"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("Load: err = %v, want ErrStreamNotFound", err)
	}
	called := false
	_, err := b.repo.Update(ctx, "nope", func(*Order) error { called = true; return nil })
	if !errors.Is(err, eventstore.ErrStreamNotFound) || called {
		t.Fatalf("Update: err = %v, fn called %v; want ErrStreamNotFound without calling fn", err, called)
	}
}

func TestFuncErrorReturnedAsIsAndNothingSaved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	boom := errors.New("boom")

	_, err := b.repo.Create(ctx, "o1", func(o *Order) error {
		_ = o.Place("ada") // raises, then fails: nothing may be saved
		return boom
	})
	if err != boom {
		t.Fatalf("Create: err = %v, want boom itself", err)
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 0 {
		t.Fatalf("stream version after failed Create = %d, want 0", v)
	}

	if _, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err = b.repo.Update(ctx, "o1", func(o *Order) error {
		_ = o.AddItem("apple", 1)
		return boom
	})
	if err != boom {
		t.Fatalf("Update: err = %v, want boom itself", err)
	}
	_, err = b.repo.Update(ctx, "o1", func(o *Order) error { return o.Place("bob") })
	if err != errAlreadyPlaced {
		t.Fatalf("Update: err = %v, want errAlreadyPlaced itself", err)
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 1 {
		t.Fatalf("stream version after failed Updates = %d, want 1", v)
	}
}

func TestSaveWithoutPendingIsNoop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	o, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	before := len(b.store.All())
	res, err := b.repo.Save(ctx, o)
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if res.StreamID != "order-o1" || res.LastVersion != 1 || len(res.EventIDs) != 0 || !res.LastPosition.IsZero() {
		t.Fatalf("Save result = %+v, want stream order-o1, LastVersion 1, no events", res)
	}
	// An Update whose function raises nothing writes nothing either.
	if res := mustUpdate(t, b.repo, "o1", func(*Order) error { return nil }); len(res.EventIDs) != 0 || res.LastVersion != 1 {
		t.Fatalf("no-op Update result = %+v", res)
	}
	if after := len(b.store.All()); after != before {
		t.Fatalf("store holds %d events after no-op saves, want %d", after, before)
	}
	// A fresh aggregate with nothing raised writes nothing: the stream stays absent.
	if _, err := b.repo.Save(ctx, b.repo.New("o2")); err != nil {
		t.Fatalf("Save of empty new aggregate: %v", err)
	}
	if v := streamVersion(t, b.store, "order-o2"); v != 0 {
		t.Fatalf("order-o2 version = %d, want 0", v)
	}
}

func mustCreate(t *testing.T, repo *aggregate.Repository[*Order], id string) {
	t.Helper()
	if _, err := repo.Create(context.Background(), id, func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create(%s): %v", id, err)
	}
}

func TestSaveConflictKeepsAggregate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	stale, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })

	if err := stale.AddItem("apple", 1); err != nil {
		t.Fatalf("AddItem: %v", err)
	}
	_, err = b.repo.Save(ctx, stale)
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) || ce.Expected != eventstore.Exact(1) || ce.Actual != 2 {
		t.Fatalf("Save: err = %v, want a conflict expecting 1, actual 2", err)
	}
	if stale.Version() != 1 || !reflect.DeepEqual(stale.Pending(), []any{ItemAdded{SKU: "apple", Qty: 1}}) {
		t.Fatalf("after the conflict: version %d pending %#v; want 1 and the unsaved event", stale.Version(), stale.Pending())
	}
}

func TestSaveMetadataFromContext(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{})
	ctx := eventstore.WithCorrelationID(context.Background(), "req-1")
	ctx = eventstore.WithActor(ctx, "user-7")
	if _, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	for rec, err := range b.store.ReadStream(ctx, "order-o1", 1) {
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		if rec.Metadata.CorrelationID != "req-1" || rec.Metadata.Actor != "user-7" {
			t.Fatalf("metadata = %+v, want correlation req-1 and actor user-7", rec.Metadata)
		}
	}
}

func TestSaveWithoutID(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{})
	o := &Order{} // not from New, Create or Load
	_ = o.Place("ada")
	if _, err := b.repo.Save(context.Background(), o); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("Save: err = %v, want ErrInvalidArgument", err)
	}
}

func TestUpdateRetriesConflict(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")

	attempts := 0
	res := mustUpdate(t, b.repo, "o1", func(o *Order) error {
		attempts++
		if attempts == 1 {
			// A concurrent writer saves between our load and our save.
			mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
		}
		return o.AddItem("apple", 1)
	})
	if attempts != 2 {
		t.Fatalf("fn ran %d times, want 2", attempts)
	}
	if res.FirstVersion != 3 || res.LastVersion != 3 {
		t.Fatalf("Update result = %+v, want version 3", res)
	}
	o, err := b.repo.Load(context.Background(), "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := map[string]int{"pear": 1, "apple": 1}; !reflect.DeepEqual(o.Items, want) {
		t.Fatalf("items = %v, want %v: both writers' events", o.Items, want)
	}
}

// noWait is a retry policy without waits, for tests that count attempts.
func noWait(cfg aggregate.Config) aggregate.Config {
	cfg.RetryBackoff, cfg.MaxRetryBackoff = time.Nanosecond, time.Nanosecond
	return cfg
}

func TestUpdateGivesUp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		cfg          aggregate.Config
		wantAttempts int
		wantMsg      string
	}{
		{"default", noWait(aggregate.Config{}), 1 + aggregate.MaxRetriesDefault, fmt.Sprintf("gave up after %d attempts", 1+aggregate.MaxRetriesDefault)},
		{"max_retries_1", noWait(aggregate.Config{MaxRetries: 1}), 2, "gave up after 2 attempts"},
		{"disabled", aggregate.Config{DisableRetries: true}, 1, "not retried"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.cfg)
			mustCreate(t, b.repo, "o1")
			attempts := 0
			_, err := b.repo.Update(context.Background(), "o1", func(o *Order) error {
				attempts++
				mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
				return o.AddItem("apple", 1)
			})
			var ce *eventstore.ConcurrencyError
			if !errors.Is(err, eventstore.ErrConcurrencyConflict) || !errors.As(err, &ce) {
				t.Fatalf("Update: err = %v, want a *eventstore.ConcurrencyError", err)
			}
			if ce.Actual != int64(1+attempts) {
				t.Fatalf("wrapped conflict %+v is not the last attempt's (actual version %d)", ce, 1+attempts)
			}
			if attempts != tt.wantAttempts {
				t.Fatalf("fn ran %d times, want %d", attempts, tt.wantAttempts)
			}
			// The message says what happened and names the knob to turn.
			knob := "aggregate.Config.MaxRetries"
			if tt.cfg.DisableRetries {
				knob = "aggregate.Config.DisableRetries"
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), knob) {
				t.Fatalf("error %q does not say %q and name %s", err, tt.wantMsg, knob)
			}
			// Only the concurrent writer's events were stored.
			if v := streamVersion(t, b.store, "order-o1"); v != int64(1+tt.wantAttempts) {
				t.Fatalf("stream version = %d, want %d", v, 1+tt.wantAttempts)
			}
		})
	}
}

// signalHandler is a slog.Handler that sends every record's message on a
// channel, so a test can wait for a log line instead of sleeping.
type signalHandler struct{ msgs chan<- string }

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.msgs <- r.Message:
	default: // the test reads the first line only
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// TestUpdateWaitEndsWithContext: Update waits between attempts (here an
// hour, the first retry's backoff), and the wait ends when ctx does, with
// ctx's error wrapping the conflict; fn is not run again.
func TestUpdateWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	msgs := make(chan string, 1)
	b := setup(t, aggregate.Config{RetryBackoff: time.Hour, Logger: slog.New(signalHandler{msgs: msgs})})
	mustCreate(t, b.repo, "o1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	attempts := 0
	go func() {
		_, err := b.repo.Update(ctx, "o1", func(o *Order) error {
			attempts++
			// A concurrent writer, through another Repository of the store.
			otherRepo, err := aggregate.NewRepository(b.store, "order", NewOrder, aggregate.Config{Logger: quietLogger})
			if err != nil {
				return err
			}
			if _, err := otherRepo.Update(context.Background(), "o1", func(o *Order) error { return o.AddItem("pear", 1) }); err != nil {
				return err
			}
			return o.AddItem("apple", 1)
		})
		done <- err
	}()
	// The Debug line is logged just before the wait starts.
	if msg := <-msgs; !strings.Contains(msg, "retrying") {
		t.Fatalf("log %q, want the retry line", msg)
	}
	cancel()
	err := <-done
	var ce *eventstore.ConcurrencyError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &ce) || attempts != 1 {
		t.Fatalf("Update: err = %v after %d attempts; want context.Canceled wrapping the conflict, after 1", err, attempts)
	}
}

func TestUpdateStopsRetryingWhenContextEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{MaxRetries: 10})
	mustCreate(t, b.repo, "o1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	attempts := 0
	_, err := b.repo.Update(ctx, "o1", func(o *Order) error {
		attempts++
		mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
		cancel()
		return o.AddItem("apple", 1)
	})
	if !errors.Is(err, context.Canceled) || attempts != 1 {
		t.Fatalf("Update: err = %v after %d attempts, want context.Canceled after 1", err, attempts)
	}
}

func TestNewRepositoryValidates(t *testing.T) {
	t.Parallel()
	store := memory.New(newRegistry())
	for _, tt := range []struct {
		name     string
		store    eventstore.Store
		category string
		newFunc  func(string) *Order
		cfg      aggregate.Config
		want     string
	}{
		{"nil_store", nil, "order", NewOrder, aggregate.Config{}, "store"},
		{"nil_new", store, "order", nil, aggregate.Config{}, "newFunc"},
		{"empty_category", store, "", NewOrder, aggregate.Config{}, "category"},
		{"dash_in_category", store, "sales-order", NewOrder, aggregate.Config{}, "'-'"},
		{"control_in_category", store, "ord\ner", NewOrder, aggregate.Config{}, "control"},
		{"negative_snapshot_every", store, "order", NewOrder, aggregate.Config{SnapshotEvery: -1}, "SnapshotEvery"},
		{"negative_max_retries", store, "order", NewOrder, aggregate.Config{MaxRetries: -1}, "MaxRetries"},
		{"negative_backoff", store, "order", NewOrder, aggregate.Config{RetryBackoff: -time.Millisecond}, "RetryBackoff"},
		{"negative_max_backoff", store, "order", NewOrder, aggregate.Config{MaxRetryBackoff: -time.Millisecond}, "MaxRetryBackoff"},
		{"max_backoff_below_backoff", store, "order", NewOrder, aggregate.Config{RetryBackoff: time.Second, MaxRetryBackoff: time.Millisecond}, "MaxRetryBackoff"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := aggregate.NewRepository(tt.store, tt.category, tt.newFunc, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}

	repo, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{})
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	cfg := repo.Config()
	if cfg.SnapshotEvery != aggregate.SnapshotEveryDefault || cfg.MaxRetries != aggregate.MaxRetriesDefault ||
		cfg.RetryBackoff != aggregate.RetryBackoffDefault || cfg.MaxRetryBackoff != aggregate.MaxRetryBackoffDefault || cfg.Logger == nil {
		t.Fatalf("defaults not filled: %+v", cfg)
	}
	// A first backoff above the default cap raises the cap with it.
	if cfg := (aggregate.Config{RetryBackoff: time.Minute}).WithDefaults(); cfg.MaxRetryBackoff != time.Minute {
		t.Fatalf("RetryBackoff 1m: MaxRetryBackoff defaulted to %s, want 1m", cfg.MaxRetryBackoff)
	}
	if repo.Category() != "order" || repo.StreamID("7f") != "order-7f" {
		t.Fatalf("Category %q StreamID %q", repo.Category(), repo.StreamID("7f"))
	}
}

func TestRaiseAndReplay(t *testing.T) {
	t.Parallel()
	o := aggregate.New(NewOrder, "o1")
	aggregate.Replay(o, OrderPlaced{Customer: "ada"}, &ItemAdded{SKU: "apple", Qty: 1})
	if o.Version() != 2 || len(o.Pending()) != 0 || o.Items["apple"] != 1 {
		t.Fatalf("after Replay: version %d pending %v items %v", o.Version(), o.Pending(), o.Items)
	}
	aggregate.Raise(o, &ItemAdded{SKU: "pear", Qty: 2}, OrderShipped{})
	want := []any{ItemAdded{SKU: "pear", Qty: 2}, OrderShipped{}}
	if o.Version() != 2 || !reflect.DeepEqual(o.Pending(), want) || !o.Shipped {
		t.Fatalf("after Raise: version %d pending %#v shipped %v", o.Version(), o.Pending(), o.Shipped)
	}
	// Pending returns a copy.
	p := o.Pending()
	p[0] = nil
	if o.Pending()[0] == nil {
		t.Fatal("Pending shares its slice with the aggregate")
	}
	// New resets whatever newFunc left in Base.
	if n := aggregate.New(func(string) *Order { return o }, "o2"); n.ID() != "o2" || n.Version() != 0 || len(n.Pending()) != 0 {
		t.Fatalf("New did not reset Base: %q %d %v", n.ID(), n.Version(), n.Pending())
	}
}

func TestNewPanicsOnNil(t *testing.T) {
	t.Parallel()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "nil") {
			t.Fatalf("recover() = %v, want a panic about nil", r)
		}
	}()
	aggregate.New(func(string) *Order { return nil }, "o1")
}

// unusedTx is an eventstore.Tx that no test may reach: calling it panics.
type unusedTx struct{ eventstore.Tx }

// TestTxFormsRefuseWithoutTxAppender: on a store that cannot append in a
// caller's transaction (the in-memory one), the Tx forms refuse with
// ErrTxNotSupported naming the store, before running the command; a nil tx
// is an invalid argument.
func TestTxFormsRefuseWithoutTxAppender(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	o, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	_ = o.AddItem("pear", 1)
	for _, tt := range []struct {
		name string
		tx   eventstore.Tx
		want error
	}{
		{"unsupported", unusedTx{}, aggregate.ErrTxNotSupported},
		{"nil_tx", nil, eventstore.ErrInvalidArgument},
	} {
		called := false
		fn := func(o *Order) error { called = true; return o.AddItem("apple", 1) }
		_, errCreate := b.repo.CreateTx(ctx, tt.tx, "o2", fn)
		_, errUpdate := b.repo.UpdateTx(ctx, tt.tx, "o1", fn)
		_, errSave := b.repo.SaveTx(ctx, tt.tx, o)
		for name, err := range map[string]error{"CreateTx": errCreate, "UpdateTx": errUpdate, "SaveTx": errSave} {
			if !errors.Is(err, tt.want) {
				t.Errorf("%s: %s: err = %v, want %v", tt.name, name, err, tt.want)
			}
			if tt.want == aggregate.ErrTxNotSupported && !strings.Contains(err.Error(), "*memory.Store") {
				t.Errorf("%s: %s: %q does not name the store's type", tt.name, name, err)
			}
		}
		if called {
			t.Errorf("%s: the command ran although it could not be saved", tt.name)
		}
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 1 || streamVersion(t, b.store, "order-o2") != 0 || len(o.Pending()) != 1 {
		t.Fatalf("after refused Tx forms: o1 at %d, o2 at %d, %d pending; want 1, 0 and the unsaved event", v, streamVersion(t, b.store, "order-o2"), len(o.Pending()))
	}
}

// TestRetry: Retry reruns fn after a conflict with the Repository's policy,
// returns any other error (and an AlreadyExists, which would recur) at
// once, and gives up after MaxRetries naming the knob.
func TestRetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conflict := &eventstore.ConcurrencyError{StreamID: "order-o1", Expected: eventstore.Exact(1), Actual: 2}
	boom := errors.New("boom")
	for _, tt := range []struct {
		name         string
		cfg          aggregate.Config
		errs         []error // fn's results per attempt; the last repeats
		wantAttempts int
		want         error // matched with errors.Is
		wantMsg      string
	}{
		{"success_at_once", aggregate.Config{}, []error{nil}, 1, nil, ""},
		{"conflicts_then_success", noWait(aggregate.Config{}), []error{conflict, fmt.Errorf("wrapped: %w", conflict), nil}, 3, nil, ""},
		{"other_error_as_is", noWait(aggregate.Config{}), []error{boom}, 1, boom, ""},
		{"conflict_then_other_error", noWait(aggregate.Config{}), []error{conflict, boom}, 2, boom, ""},
		{"already_exists_not_retried", noWait(aggregate.Config{}), []error{&aggregate.AlreadyExistsError{StreamID: "order-o1", Version: 1, Err: conflict}}, 1, aggregate.ErrAlreadyExists, ""},
		{"gives_up", noWait(aggregate.Config{MaxRetries: 4}), []error{conflict}, 5, eventstore.ErrConcurrencyConflict, "raise aggregate.Config.MaxRetries"},
		{"disabled", aggregate.Config{DisableRetries: true}, []error{conflict}, 1, eventstore.ErrConcurrencyConflict, "aggregate.Config.DisableRetries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.cfg)
			attempts := 0
			err := b.repo.Retry(ctx, func(context.Context) error {
				attempts++
				return tt.errs[min(attempts, len(tt.errs))-1]
			})
			if attempts != tt.wantAttempts {
				t.Fatalf("fn ran %d times, want %d", attempts, tt.wantAttempts)
			}
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == boom && err != boom {
				t.Fatalf("err = %v, want fn's error itself", err)
			}
			if !strings.Contains(fmt.Sprint(err), tt.wantMsg) {
				t.Fatalf("err %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}
