package esox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }

type Deposited struct {
	Account string `json:"account"`
	Amount  int    `json:"amount"`
}

func registry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[Deposited](reg, "deposited")
	return reg
}

// balances is a projection summing deposits per account into
// <schema>.balances.
func balances(reg *eventstore.Registry, schema string) projector.Projection {
	table := postgres.QuoteIdentifier(schema) + ".balances"
	hs := projector.NewHandlers(reg)
	projector.On(hs, func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e Deposited) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (account, total) VALUES ($1, $2)
			ON CONFLICT (account) DO UPDATE SET total = balances.total + excluded.total`, e.Account, e.Amount)
		return err
	})
	return projector.Projection{
		Name:    "balances",
		Handler: hs,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+table+` (account text PRIMARY KEY, total bigint NOT NULL)`)
			return err
		},
	}
}

// publisher records what the forwarder publishes.
type publisher struct {
	mu   sync.Mutex
	msgs []*message.Message
	got  chan struct{} // receives after each publish, without blocking
}

func newPublisher() *publisher { return &publisher{got: make(chan struct{}, 1)} }

func (p *publisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	p.msgs = append(p.msgs, msgs...)
	p.mu.Unlock()
	select {
	case p.got <- struct{}{}:
	default:
	}
	return nil
}

func (p *publisher) Close() error { return nil }

func (p *publisher) uuids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.msgs {
		out = append(out, m.UUID)
	}
	return out
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// run starts a.Run. stop cancels it and returns Run's error; done is
// closed once Run has returned, and then *errp is its error.
func run(t *testing.T, a *esox.App) (stop func() error, done <-chan struct{}, errp *error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	var err error
	go func() {
		defer close(finished)
		err = a.Run(ctx)
	}()
	stop = func() error {
		cancel()
		<-finished
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop, finished, &err
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestAppRunsEverything: one App migrates the store, the projector, the
// forwarder and a component, then runs them under one Run: an append
// reaches the read model (WaitFor) and the publisher, the component runs,
// Ready is closed, and cancelling stops everything with a nil error.
func TestAppRunsEverything(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := registry()
	pub := newPublisher()
	componentRan := make(chan struct{})
	var migrated bool
	a, err := esox.New(db, reg, esox.Config{
		Schema:      schema,
		Projections: []projector.Projection{balances(reg, schema)},
		Projector:   projector.Config{PollInterval: 5 * time.Millisecond},
		Publisher:   pub,
		Components: []esox.Component{{
			Name: "consumer",
			Migrate: func(ctx context.Context) (postgres.MigrateResult, error) {
				migrated = true
				return postgres.MigrateResult{}, nil
			},
			Run: func(ctx context.Context) error {
				close(componentRan)
				<-ctx.Done()
				return nil
			},
		}},
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, _, _ := run(t, a)
	select {
	case <-a.Ready():
	case <-testCtx(t).Done():
		t.Fatal("the App never became ready")
	}
	<-componentRan
	if !migrated {
		t.Error("the component's Migrate did not run")
	}
	res, err := a.Store().Append(testCtx(t), "account-1", eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: "a", Amount: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WaitFor(testCtx(t), res.LastPosition); err != nil {
		t.Fatal(err)
	}
	var total int
	if err := db.GetContext(testCtx(t), &total, `SELECT total FROM `+postgres.QuoteIdentifier(schema)+`.balances WHERE account = 'a'`); err != nil || total != 5 {
		t.Fatalf("balance = %d, %v; want 5", total, err)
	}
	for !slices.Contains(pub.uuids(), res.EventIDs[0].String()) {
		select {
		case <-pub.got:
		case <-testCtx(t).Done():
			t.Fatal("the event was never published")
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

// TestAppStopsInOrder: on stop the components are stopped in reverse order,
// each once the previous one has returned, and Run returns nil; a component
// that fails stops the App with its error.
func TestAppStopsInOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := registry()
	var mu sync.Mutex
	var order []string
	note := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	started := make(chan string, 2)
	comp := func(name string) esox.Component {
		return esox.Component{Name: name, Run: func(ctx context.Context) error {
			started <- name
			<-ctx.Done()
			note(name)
			return nil
		}}
	}
	a, err := esox.New(db, reg, esox.Config{
		Schema:      schema,
		Projections: []projector.Projection{balances(reg, schema)},
		Publisher:   newPublisher(),
		Components:  []esox.Component{comp("first"), comp("second")},
		Logger:      quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, _, _ := run(t, a)
	<-started
	<-started
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"second", "first"}; !slices.Equal(order, want) {
		t.Fatalf("components stopped in order %v, want %v", order, want)
	}

	boom := errors.New("boom")
	failing, err := esox.New(db, reg, esox.Config{
		Schema:      schema,
		Projections: []projector.Projection{balances(reg, schema)},
		Components: []esox.Component{{Name: "failing", Run: func(ctx context.Context) error {
			return boom
		}}},
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, done, errp := run(t, failing)
	select {
	case <-done:
		if !errors.Is(*errp, boom) {
			t.Fatalf("Run = %v, want the component's error", *errp)
		}
	case <-testCtx(t).Done():
		t.Fatal("a failing component did not stop the App")
	}
}

// TestNewValidates: a nil db, components without a name, twice the same
// name, or without Run, and a registry whose upcasters leave a gap are
// refused with ErrInvalidArgument.
func TestNewValidates(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	reg := registry()
	run := func(context.Context) error { return nil }
	for name, cfg := range map[string]esox.Config{
		"no name":   {Components: []esox.Component{{Run: run}}},
		"twice":     {Components: []esox.Component{{Name: "a", Run: run}, {Name: "a", Run: run}}},
		"no run":    {Components: []esox.Component{{Name: "a"}}},
		"bad store": {Schema: "no spaces allowed"},
	} {
		if _, err := esox.New(db, reg, cfg); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: New = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := esox.New(nil, reg, esox.Config{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("New(nil db) = %v, want ErrInvalidArgument", err)
	}
	// A registry whose upcasters leave a gap: events of version 1 could
	// not be read.
	gap := registry()
	type v3 struct{}
	eventstore.MustRegisterVersion[v3](gap, "evolved", 3)
	if err := gap.Upcast("evolved", 2, func(p json.RawMessage) (json.RawMessage, error) { return p, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := esox.New(db, gap, esox.Config{}); !errors.Is(err, eventstore.ErrInvalidUpcaster) {
		t.Errorf("New with a gap in the upcasters = %v, want ErrInvalidUpcaster", err)
	}
}

// TestAppDisableMigrate: with DisableMigrate, Run applies nothing and
// refuses projections nobody registered; once Migrate has run (an owner
// role's job), Run works. Migrate migrates the inboxes too.
func TestAppDisableMigrate(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := registry()
	inbox, err := projector.NewInbox(db, reg, projector.InboxConfig{Schema: schema, Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := esox.Config{
		Schema:         schema,
		Projections:    []projector.Projection{balances(reg, schema)},
		Inboxes:        []*projector.Inbox{inbox},
		DisableMigrate: true,
		Logger:         quiet(),
	}
	a, err := esox.New(db, reg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, done, errp := run(t, a)
	select {
	case <-done:
		if !errors.Is(*errp, projector.ErrNotRegistered) {
			t.Fatalf("Run before Migrate = %v, want ErrNotRegistered", *errp)
		}
	case <-testCtx(t).Done():
		t.Fatal("Run with DisableMigrate did not refuse unregistered projections")
	}
	var tables int
	if err := db.GetContext(testCtx(t), &tables, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, schema); err != nil || tables != 0 {
		t.Fatalf("tables after Run with DisableMigrate: %d, %v; want none", tables, err)
	}

	res, err := a.Migrate(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	components := map[string]bool{}
	for _, m := range res.Applied {
		components[m.Component] = true
	}
	for _, c := range []string{postgres.Component, projector.Component} {
		if !components[c] {
			t.Errorf("Migrate applied %v, want %s among them", res.Applied, c)
		}
	}
	if _, err := inbox.Status(testCtx(t)); err != nil {
		t.Errorf("inbox status after Migrate: %v", err)
	}
	b, err := esox.New(db, reg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop, _, _ := run(t, b)
	select {
	case <-b.Ready():
	case <-testCtx(t).Done():
		t.Fatal("never ready")
	}
	r, err := b.Store().Append(testCtx(t), "account-1", eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: "a", Amount: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(testCtx(t), r.LastPosition); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestAppHTTPServerStopsFirst: the HTTP server of esox.HTTPServer answers
// before the App is ready (so /readyz can say 503); on stop, Ready is
// reopened and the server stops first: a request in flight when Shutdown
// begins still appends, is projected (the runner still runs) and
// forwarded (the forwarder still runs), and gets its response; Run returns
// only after it.
func TestAppHTTPServerStopsFirst(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := registry()
	pub := newPublisher()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	shuttingDown := make(chan struct{})
	srv := &http.Server{}
	srv.RegisterOnShutdown(func() { close(shuttingDown) })
	web := esox.HTTPServer(srv, ln, time.Minute)
	// The gate holds Run's migrations until the test has seen /readyz
	// answer 503.
	sawNotReady := make(chan struct{})
	web.Migrate = func(ctx context.Context) (postgres.MigrateResult, error) {
		select {
		case <-sawNotReady:
			return postgres.MigrateResult{}, nil
		case <-ctx.Done():
			return postgres.MigrateResult{}, ctx.Err()
		}
	}
	a, err := esox.New(db, reg, esox.Config{
		Schema:      schema,
		Projections: []projector.Projection{balances(reg, schema)},
		Publisher:   pub,
		Components:  []esox.Component{web},
		Logger:      quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	inFlight := make(chan struct{})
	var handled atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-a.Ready():
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("POST /deposit", func(w http.ResponseWriter, r *http.Request) {
		close(inFlight)
		<-shuttingDown
		select {
		case <-a.Ready():
			http.Error(w, "Ready is still closed while the App stops", http.StatusInternalServerError)
			return
		default:
		}
		res, err := a.Store().Append(r.Context(), "account-late", eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: "late", Amount: 7}}})
		if err == nil {
			err = a.WaitFor(r.Context(), res.LastPosition)
		}
		for err == nil && !slices.Contains(pub.uuids(), res.EventIDs[0].String()) {
			select {
			case <-pub.got:
			case <-r.Context().Done():
				err = r.Context().Err()
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		handled.Store(true)
	})
	srv.Handler = mux
	base := "http://" + ln.Addr().String()

	stop, _, _ := run(t, a)
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("the server does not answer during the migrations: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the migrations: %d, want 503", resp.StatusCode)
	}
	close(sawNotReady)
	for {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		select {
		case <-a.Ready():
		case <-testCtx(t).Done():
			t.Fatal("never ready")
		}
	}

	status := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/deposit", "text/plain", nil)
		if err != nil {
			t.Errorf("request in flight during shutdown: %v", err)
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-inFlight
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !handled.Load() {
		t.Error("Run returned before the request in flight was handled")
	}
	if got := <-status; got != http.StatusOK {
		t.Fatalf("request in flight during shutdown: status %d, want 200", got)
	}
}

// TestAppFrontRunsBeforeMigrate: a front component runs while the App
// migrates, and App.Ready stays open until then; the other components run
// only after the migrations.
func TestAppFrontRunsBeforeMigrate(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	frontRunning := make(chan struct{})
	var a *esox.App
	var migrated atomic.Bool
	var err error
	a, err = esox.New(db, registry(), esox.Config{
		Schema: schema,
		Components: []esox.Component{
			{
				Name: "worker",
				Migrate: func(ctx context.Context) (postgres.MigrateResult, error) {
					select {
					case <-frontRunning:
					case <-ctx.Done():
						return postgres.MigrateResult{}, ctx.Err()
					}
					select {
					case <-a.Ready():
						return postgres.MigrateResult{}, errors.New("the App is ready before its migrations ran")
					default:
					}
					migrated.Store(true)
					return postgres.MigrateResult{}, nil
				},
				Run: func(ctx context.Context) error {
					if !migrated.Load() {
						return errors.New("a non-front component runs before the migrations")
					}
					<-ctx.Done()
					return nil
				},
			},
			{Name: "front", Front: true, Run: func(ctx context.Context) error {
				close(frontRunning)
				<-ctx.Done()
				return nil
			}},
		},
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, done, errp := run(t, a)
	select {
	case <-a.Ready():
	case <-done:
		t.Fatalf("Run = %v", *errp)
	case <-testCtx(t).Done():
		t.Fatal("never ready: the front component did not run during the migrations")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestAppWaitsForComponentsReady: the forwarder starts, and App.Ready is
// closed, only once every component's Ready is closed, so a consumer that
// subscribes first misses nothing a broker without retention would drop.
func TestAppWaitsForComponentsReady(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := registry()
	pub := newPublisher()
	subscribed := make(chan struct{})
	var a *esox.App
	var err error
	a, err = esox.New(db, reg, esox.Config{
		Schema:      schema,
		Projections: []projector.Projection{balances(reg, schema)},
		Publisher:   pub,
		Components: []esox.Component{{
			Name:  "consumer",
			Ready: subscribed,
			Run: func(ctx context.Context) error {
				// Before it declares itself ready, an event is appended and
				// projected (the runner runs); the forwarder must not have
				// published it, nor the App be ready.
				res, err := a.Store().Append(ctx, "account-early", eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: "early", Amount: 1}}})
				if err != nil {
					return err
				}
				if err := a.WaitFor(ctx, res.LastPosition); err != nil {
					return err
				}
				if n := len(pub.uuids()); n != 0 {
					return fmt.Errorf("the forwarder published %d events before the consumer was ready", n)
				}
				select {
				case <-a.Ready():
					return errors.New("the App is ready before its consumer")
				default:
				}
				close(subscribed)
				<-ctx.Done()
				return nil
			},
		}},
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, done, errp := run(t, a)
	select {
	case <-a.Ready():
	case <-done:
		t.Fatalf("Run = %v", *errp)
	case <-testCtx(t).Done():
		t.Fatal("never ready")
	}
	for len(pub.uuids()) == 0 {
		select {
		case <-pub.got:
		case <-testCtx(t).Done():
			t.Fatal("the event appended before the consumer was ready was never published")
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
