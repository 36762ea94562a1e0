package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/eventstore/storetest"
	"github.com/google/uuid"
)

// The suite is only worth something if it fails for broken stores. Each
// mutant below wraps the memory store with one bug; TestSuiteCatchesMutants
// runs the named subtest of the suite against it in a child process and
// requires that subtest to fail.

// mutant is a Store that delegates to the memory store unless a hook
// overrides a method.
type mutant struct {
	*memory.Store
	append     func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error)
	readStream func(s *memory.Store, ctx context.Context, id string, from int64) iter.Seq2[eventstore.Record, error]
	readAll    func(s *memory.Store, ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error)
	streamInfo func(s *memory.Store, ctx context.Context, id string) (eventstore.StreamInfo, error)
	save       func(s *memory.Store, ctx context.Context, snap eventstore.Snapshot) error
}

func (m *mutant) Append(ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	if m.append != nil {
		return m.append(m.Store, ctx, id, exp, events)
	}
	return m.Store.Append(ctx, id, exp, events)
}

func (m *mutant) ReadStream(ctx context.Context, id string, from int64) iter.Seq2[eventstore.Record, error] {
	if m.readStream != nil {
		return m.readStream(m.Store, ctx, id, from)
	}
	return m.Store.ReadStream(ctx, id, from)
}

func (m *mutant) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	if m.readAll != nil {
		return m.readAll(m.Store, ctx, after, limit)
	}
	return m.Store.ReadAll(ctx, after, limit)
}

func (m *mutant) StreamInfo(ctx context.Context, id string) (eventstore.StreamInfo, error) {
	if m.streamInfo != nil {
		return m.streamInfo(m.Store, ctx, id)
	}
	return m.Store.StreamInfo(ctx, id)
}

func (m *mutant) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	if m.save != nil {
		return m.save(m.Store, ctx, snap)
	}
	return m.Store.SaveSnapshot(ctx, snap)
}

// mutants maps a name to the broken store and the subtests that must catch it.
var mutants = map[string]struct {
	catchers []string
	hook     func(m *mutant)
}{
	"IgnoresExpectedVersion": {[]string{"ExpectedVersionMatrix", "ConcurrentAppendRace"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, _ eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			return s.Append(ctx, id, eventstore.Any, events)
		}
	}},
	"ConflictWithWrongActual": {[]string{"ExpectedVersionMatrix"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			res, err := s.Append(ctx, id, exp, events)
			if ce := (*eventstore.ConcurrencyError)(nil); errors.As(err, &ce) {
				ce.Actual++
			}
			return res, err
		}
	}},
	"CheckThenActRace": {[]string{"ConcurrentAppendRace"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			info, err := s.StreamInfo(ctx, id)
			if err != nil {
				return eventstore.AppendResult{}, err
			}
			if !exp.Matches(info.Version) {
				return eventstore.AppendResult{}, &eventstore.ConcurrencyError{StreamID: id, Expected: exp, Actual: info.Version}
			}
			// The window a slow database round trip would open between
			// the check and the write.
			time.Sleep(time.Millisecond)
			return s.Append(ctx, id, eventstore.Any, events)
		}
	}},
	"PartialWriteOnError": {[]string{"AppendIsAtomic", "MalformedPayload", "DuplicateEventID"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			res, err := s.Append(ctx, id, exp, events)
			if err != nil && len(events) > 1 {
				_, _ = s.Append(ctx, id, eventstore.Any, events[:1])
			}
			return res, err
		}
	}},
	"LosesTypedErrors": {[]string{"ExpectedVersionMatrix", "UnknownEventType", "MalformedPayload", "InvalidStreamIDs", "InvalidArguments", "DuplicateEventID"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			res, err := s.Append(ctx, id, exp, events)
			if err != nil {
				err = fmt.Errorf("append failed: %v", err)
			}
			return res, err
		}
	}},
	"IgnoresCancelledContext": {[]string{"ContextCancellation"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			return s.Append(context.WithoutCancel(ctx), id, exp, events)
		}
	}},
	"DropsEventMetadata": {[]string{"Metadata"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			events = slices.Clone(events)
			for i := range events {
				events[i].Metadata = eventstore.Metadata{}
			}
			return s.Append(ctx, id, exp, events)
		}
	}},
	"ReplacesGivenIDs": {[]string{"EventIDs", "DuplicateEventID"}, func(m *mutant) {
		m.append = func(s *memory.Store, ctx context.Context, id string, exp eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
			events = slices.Clone(events)
			for i := range events {
				events[i].ID = uuid.Nil
			}
			return s.Append(ctx, id, exp, events)
		}
	}},
	"ReadStreamIgnoresFrom": {[]string{"ReadStreamFromVersion", "ReadStreamManyPages"}, func(m *mutant) {
		m.readStream = func(s *memory.Store, ctx context.Context, id string, _ int64) iter.Seq2[eventstore.Record, error] {
			return s.ReadStream(ctx, id, 1)
		}
	}},
	"ReadStreamSwallowsErrors": {[]string{"InvalidStreamIDs", "ContextCancellation"}, func(m *mutant) {
		m.readStream = func(s *memory.Store, ctx context.Context, id string, from int64) iter.Seq2[eventstore.Record, error] {
			return func(yield func(eventstore.Record, error) bool) {
				for r, err := range s.ReadStream(ctx, id, from) {
					if err == nil && !yield(r, nil) {
						return
					}
				}
			}
		}
	}},
	"ReadStreamIgnoresBreak": {[]string{"ReadStreamStopEarly"}, func(m *mutant) {
		m.readStream = func(s *memory.Store, ctx context.Context, id string, from int64) iter.Seq2[eventstore.Record, error] {
			return func(yield func(eventstore.Record, error) bool) {
				for r, err := range s.ReadStream(ctx, id, from) {
					yield(r, err) // keeps going after yield returned false: the range loop panics
				}
			}
		}
	}},
	"ReadAllIncludesAfter": {[]string{"ReadAllOrderAndResume"}, func(m *mutant) {
		m.readAll = func(s *memory.Store, ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
			if after.Position > 0 {
				after.Position--
			}
			return s.ReadAll(ctx, after, limit)
		}
	}},
	"ReadAllSkipsOne": {[]string{"ReadAllOrderAndResume"}, func(m *mutant) {
		m.readAll = func(s *memory.Store, ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
			recs, err := s.ReadAll(ctx, after, limit)
			if len(recs) > 2 {
				recs = slices.Delete(recs, 1, 2)
			}
			return recs, err
		}
	}},
	"ReadAllReordersPage": {[]string{"ReadAllOrderAndResume", "AppendIsAtomic"}, func(m *mutant) {
		m.readAll = func(s *memory.Store, ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
			recs, err := s.ReadAll(ctx, after, limit)
			slices.Reverse(recs)
			return recs, err
		}
	}},
	"ReadAllIgnoresLimit": {[]string{"ReadAllLimits", "ReadAllOrderAndResume"}, func(m *mutant) {
		m.readAll = func(s *memory.Store, ctx context.Context, after eventstore.Position, _ int) ([]eventstore.Record, error) {
			return s.ReadAll(ctx, after, eventstore.MaxReadAllLimit)
		}
	}},
	"ReadAllLosesPayload": {[]string{"LargePayload", "AppendResultAndRecordFields"}, func(m *mutant) {
		m.readAll = func(s *memory.Store, ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
			recs, err := s.ReadAll(ctx, after, limit)
			for i := range recs {
				if len(recs[i].Payload) > 1000 {
					recs[i].Data = nil
				}
				recs[i].RecordedAt = recs[i].RecordedAt.AddDate(0, 0, 1)
			}
			return recs, err
		}
	}},
	"StreamInfoOffByOne": {[]string{"StreamInfo", "ExpectedVersionMatrix"}, func(m *mutant) {
		m.streamInfo = func(s *memory.Store, ctx context.Context, id string) (eventstore.StreamInfo, error) {
			info, err := s.StreamInfo(ctx, id)
			if info.Exists {
				info.Version--
			}
			return info, err
		}
	}},
	"SnapshotKeepsFirst": {[]string{"Snapshots"}, func(m *mutant) {
		m.save = func(s *memory.Store, ctx context.Context, snap eventstore.Snapshot) error {
			if _, err := s.LoadSnapshot(ctx, snap.StreamID); err == nil {
				return nil
			}
			return s.SaveSnapshot(ctx, snap)
		}
	}},
	"SnapshotGoesBack": {[]string{"Snapshots"}, func(m *mutant) {
		m.save = func(s *memory.Store, ctx context.Context, snap eventstore.Snapshot) error {
			if prev, err := s.LoadSnapshot(ctx, snap.StreamID); err == nil && prev.Version > snap.Version {
				snap.Version = prev.Version // overwrite the newer one with older state
			}
			return s.SaveSnapshot(ctx, snap)
		}
	}},
	"SnapshotAcceptsAnything": {[]string{"Snapshots"}, func(m *mutant) {
		m.save = func(s *memory.Store, ctx context.Context, snap eventstore.Snapshot) error {
			err := s.SaveSnapshot(ctx, snap)
			if errors.Is(err, eventstore.ErrInvalidArgument) {
				return nil
			}
			return err
		}
	}},
}

const mutantEnv = "STORETEST_MUTANT"

// TestMutant runs the suite against the mutant named by STORETEST_MUTANT; it
// does nothing without it. TestSuiteCatchesMutants runs it in a child process.
func TestMutant(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("runs only as TestSuiteCatchesMutants' child process")
	}
	mu, ok := mutants[name]
	if !ok {
		t.Fatalf("unknown mutant %q", name)
	}
	storetest.Run(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		m := &mutant{Store: memory.New(reg)}
		mu.hook(m)
		return m
	})
}

func TestSuiteCatchesMutants(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("child process")
	}
	if testing.Short() {
		t.Skip("runs the suite in child processes; skipped with -short")
	}
	for _, name := range slices.Sorted(maps.Keys(mutants)) {
		for _, catcher := range mutants[name].catchers {
			t.Run(name+"/"+catcher, func(t *testing.T) {
				t.Parallel()
				cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMutant$/^"+catcher+"$", "-test.count=1", "-test.v")
				cmd.Env = append(os.Environ(), mutantEnv+"="+name)
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) {
					t.Fatalf("the suite's %s subtest passed (or did not run: %v) against mutant %s:\n%s", catcher, err, name, out)
				}
				if !strings.Contains(string(out), "--- FAIL: TestMutant/"+catcher) {
					t.Fatalf("mutant %s made the child fail, but not in subtest %s:\n%s", name, catcher, out)
				}
			})
		}
	}
}

// laggingStore is a correct store whose feed lags like PostgreSQL's while
// another transaction holds back the snapshot xmin: ReadAll shows only
// records up to a horizon that catches up with the head every third call.
type laggingStore struct {
	*memory.Store
	mu      sync.Mutex
	calls   int
	horizon eventstore.Position
}

func (l *laggingStore) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	l.mu.Lock()
	l.calls++
	if l.calls%3 == 0 {
		for {
			page, err := l.Store.ReadAll(ctx, l.horizon, eventstore.MaxReadAllLimit)
			if err != nil || len(page) == 0 {
				break
			}
			l.horizon = page[len(page)-1].Position
		}
	}
	horizon := l.horizon
	l.mu.Unlock()
	recs, err := l.Store.ReadAll(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	n := 0
	for n < len(recs) && !horizon.Less(recs[n].Position) {
		n++
	}
	return recs[:n], nil
}

// TestSuiteToleratesFeedLag runs the whole suite against a correct store
// whose feed shows appended events only after a few reads: the suite must
// wait for visibility rather than expect it at once.
func TestSuiteToleratesFeedLag(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("child process")
	}
	storetest.Run(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		return &laggingStore{Store: memory.New(reg)}
	})
}
