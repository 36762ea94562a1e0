package esox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// Config configures an App. The zero value means all defaults: the event
// store in schema "esox", no projections, no forwarding.
type Config struct {
	// Schema holds every table of the App: the events, snapshots,
	// checkpoints, offsets and inbox tables. Defaults to
	// postgres.SchemaDefault ("esox"). It overrides Store.Schema.
	Schema string
	// Store configures the event store (Schema aside). Its Logger defaults
	// to Config.Logger.
	Store postgres.Config
	// Projections are kept up to date by the App's projector runner. None:
	// the App runs no runner.
	Projections []projector.Projection
	// Projector configures the runner. Its Logger defaults to
	// Config.Logger. Its DisableMigrate is always set: the App migrates and
	// registers the projections itself (see Migrate).
	Projector projector.Config
	// Publisher, when set, receives every event through the App's
	// forwarder (the events table is the outbox). nil: no forwarding.
	// The App does not close it.
	Publisher message.Publisher
	// Forwarder configures the forwarder. Its Logger defaults to
	// Config.Logger. Its DisableMigrate is always set: the App migrates.
	Forwarder forwarder.Config
	// KeyStore holds the data keys of the registry's Shredder
	// (crypto-shredding of personal data, docs/compliance.md), when it is
	// a PostgreSQL one: Migrate creates its table with the rest. Optional.
	KeyStore *postgres.KeyStore
	// Inboxes are the inboxes of the service's broker consumers (see
	// projector.NewInbox): Migrate migrates them with the rest. Their
	// consumers run as Components.
	Inboxes []*projector.Inbox
	// Components are run by Run beside the runner and the forwarder, e.g.
	// a broker consumer applying messages through an inbox. Their Migrate
	// funcs run with the App's migrations.
	Components []Component
	// DisableMigrate stops Run from applying migrations: an owner role
	// runs App.Migrate (or the esox command) before the application,
	// which then needs no DDL rights. See docs/operations.md.
	DisableMigrate bool
	// Logger receives the App's logs and, unless their configs set one,
	// the store's, runner's and forwarder's. Defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider gives, unless their configs set one, the store's,
	// runner's and forwarder's tracers (the inboxes of Inboxes are built
	// by the caller: set InboxConfig.TracerProvider there). Defaults to
	// the global provider, otel.GetTracerProvider(), a no-op until the
	// application installs one. See docs/observability.md.
	TracerProvider trace.TracerProvider
	// MeterProvider gives, unless their configs set one, the store's,
	// runner's and forwarder's meters (set InboxConfig.MeterProvider for
	// the inboxes). Defaults to the global provider,
	// otel.GetMeterProvider(), a no-op until the application installs one.
	MeterProvider metric.MeterProvider
}

// Component is something an App runs beside its projector runner and
// forwarder, under the same Run: a broker consumer, a process manager, a
// periodic job, or, with Front, the service's HTTP or gRPC server
// (HTTPServer builds that one).
type Component struct {
	// Name names the component in logs and errors. Required, unique
	// within the App.
	Name string
	// Migrate creates the component's tables. It runs with the App's
	// migrations, after the store's, runner's, forwarder's and inboxes'.
	// Optional.
	Migrate func(ctx context.Context) (postgres.MigrateResult, error)
	// Run runs the component until ctx is done and returns then (its
	// error is only logged); an error, or a return, before ctx is done
	// stops the whole App with that error. Required.
	Run func(ctx context.Context) error
	// Ready, when set, is closed by the component once events may flow to
	// it, e.g. once its broker subscription exists: the App starts the
	// forwarder, and closes App.Ready, only once every component's Ready
	// is closed. A broker that keeps nothing for absent subscribers
	// (GoChannel), or a RabbitMQ exchange with no queue bound yet, drops
	// what is published before the subscription. A Watermill Router's
	// Running() fits. nil: ready as soon as Run is called. A channel an
	// earlier Run closed counts as ready.
	Ready <-chan struct{}
	// Front marks a component that takes requests from outside the
	// service (an HTTP or gRPC server). Run starts front components
	// first, before it migrates, so that they answer readiness probes
	// (not ready until App.Ready is closed) from the start; on stop it
	// stops them first, each once the previous has returned, while the
	// runner and the forwarder still run: requests in flight can still
	// append, and wait for their read models with App.WaitFor.
	Front bool
}

// App wires esox for a service: the PostgreSQL event store, a projector
// runner for the Config's projections, and a forwarder to the Config's
// publisher, with the Config's extra components. Migrate migrates all of
// them; Run runs all of them until its context is cancelled.
//
// Its runner and forwarder share the store's one feed watcher and the
// pool's one lock session, so an idle App sends the database one read-only
// query per poll interval and one statement per leader interval, however
// many projections it runs (see docs/operations.md).
//
// An App is safe for concurrent use. Run may be called once at a time.
type App struct {
	db     *sqlx.DB
	cfg    Config
	log    *slog.Logger
	store  *postgres.Store
	runner *projector.Runner
	fwd    *forwarder.Forwarder

	running atomic.Bool
	readyMu sync.Mutex
	ready   chan struct{} // closed once Run has migrated and started everything
}

// New returns an App on db whose events are encoded and decoded with reg. It
// validates cfg and reg's upcaster chains (eventstore.Registry.Validate), and
// builds the store, the runner (when cfg has projections) and the forwarder
// (when cfg has a publisher); it does no I/O.
//
// Errors match eventstore.ErrInvalidArgument and name the bad field,
// projection or component; for a gap in the upcasters, they also match
// eventstore.ErrInvalidUpcaster.
func New(db *sqlx.DB, reg *eventstore.Registry, cfg Config) (*App, error) {
	if db == nil {
		return nil, fmt.Errorf("esox: %w", &eventstore.InvalidArgumentError{Field: "db", Reason: "must not be nil"})
	}
	if reg != nil {
		if err := reg.Validate(); err != nil {
			return nil, fmt.Errorf("esox: registry: %w", err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Schema == "" {
		cfg.Schema = cfg.Store.Schema
	}
	if cfg.Schema == "" {
		cfg.Schema = postgres.SchemaDefault
	}
	cfg.Projections = slices.Clone(cfg.Projections)
	cfg.Components = slices.Clone(cfg.Components)
	cfg.Inboxes = slices.Clone(cfg.Inboxes)
	for i, in := range cfg.Inboxes {
		if in == nil {
			return nil, fmt.Errorf("esox: invalid config: Inboxes[%d]: %w", i, &eventstore.InvalidArgumentError{Field: "Inboxes", Reason: "nil inbox"})
		}
	}
	names := map[string]bool{}
	for i, c := range cfg.Components {
		switch {
		case c.Name == "":
			return nil, fmt.Errorf("esox: invalid config: Components[%d]: %w", i, &eventstore.InvalidArgumentError{Field: "Name", Reason: "must not be empty"})
		case names[c.Name]:
			return nil, fmt.Errorf("esox: invalid config: Components[%d]: %w", i, &eventstore.InvalidArgumentError{Field: "Name", Reason: fmt.Sprintf("%q is given twice", c.Name)})
		case c.Run == nil:
			return nil, fmt.Errorf("esox: invalid config: component %q: %w", c.Name, &eventstore.InvalidArgumentError{Field: "Run", Reason: "must not be nil"})
		}
		names[c.Name] = true
	}

	a := &App{db: db, cfg: cfg, log: cfg.Logger.With("component", "esox"), ready: make(chan struct{})}
	storeCfg := cfg.Store
	storeCfg.Schema = cfg.Schema
	if storeCfg.Logger == nil {
		storeCfg.Logger = cfg.Logger
	}
	storeCfg.TracerProvider = cmp.Or(storeCfg.TracerProvider, cfg.TracerProvider)
	storeCfg.MeterProvider = cmp.Or(storeCfg.MeterProvider, cfg.MeterProvider)
	var err error
	if a.store, err = postgres.New(db, reg, storeCfg); err != nil {
		return nil, fmt.Errorf("esox: %w", err)
	}
	if len(cfg.Projections) > 0 {
		pc := cfg.Projector
		if pc.Logger == nil {
			pc.Logger = cfg.Logger
		}
		pc.TracerProvider = cmp.Or(pc.TracerProvider, cfg.TracerProvider)
		pc.MeterProvider = cmp.Or(pc.MeterProvider, cfg.MeterProvider)
		pc.DisableMigrate = true
		if a.runner, err = projector.NewRunner(a.store, pc, cfg.Projections...); err != nil {
			return nil, fmt.Errorf("esox: %w", err)
		}
	}
	if cfg.Publisher != nil {
		fc := cfg.Forwarder
		if fc.Logger == nil {
			fc.Logger = cfg.Logger
		}
		fc.TracerProvider = cmp.Or(fc.TracerProvider, cfg.TracerProvider)
		fc.MeterProvider = cmp.Or(fc.MeterProvider, cfg.MeterProvider)
		fc.DisableMigrate = true
		if a.fwd, err = forwarder.New(a.store, cfg.Publisher, fc); err != nil {
			return nil, fmt.Errorf("esox: %w", err)
		}
	}
	return a, nil
}

// Store returns the App's event store.
func (a *App) Store() *postgres.Store { return a.store }

// Runner returns the App's projector runner, or nil when the Config has no
// projections.
func (a *App) Runner() *projector.Runner { return a.runner }

// Forwarder returns the App's forwarder, or nil when the Config has no
// publisher.
func (a *App) Forwarder() *forwarder.Forwarder { return a.fwd }

// DB returns the pool the App uses.
func (a *App) DB() *sqlx.DB { return a.db }

// Schema returns the schema of the App's tables.
func (a *App) Schema() string { return a.cfg.Schema }

// Migrate applies every migration of the App, in order: the event store's,
// the projector's (its tables, then each projection version's registration
// and Setup), the forwarder's, the key store's, the inboxes', then each
// component's. With
// Config.DisableMigrate, an owner role runs it before the service starts;
// otherwise Run does. Each is idempotent
// and safe to run from several processes at once; the result lists what
// this call applied. ctx bounds the whole run.
func (a *App) Migrate(ctx context.Context) (postgres.MigrateResult, error) {
	var all postgres.MigrateResult
	step := func(name string, migrate func(context.Context) (postgres.MigrateResult, error)) error {
		res, err := migrate(ctx)
		all.Applied = append(all.Applied, res.Applied...)
		if err != nil {
			return fmt.Errorf("esox: migrate %s: %w", name, err)
		}
		return nil
	}
	if err := step("event store", a.store.Migrate); err != nil {
		return all, err
	}
	if a.runner != nil {
		if err := step("projector", a.runner.Migrate); err != nil {
			return all, err
		}
	}
	if a.fwd != nil {
		if err := step("forwarder", a.fwd.Migrate); err != nil {
			return all, err
		}
	}
	if a.cfg.KeyStore != nil {
		if err := step("key store", a.cfg.KeyStore.Migrate); err != nil {
			return all, err
		}
	}
	for _, in := range a.cfg.Inboxes {
		if err := step("inbox", in.Migrate); err != nil {
			return all, err
		}
	}
	for _, c := range a.cfg.Components {
		if c.Migrate == nil {
			continue
		}
		if err := step(c.Name, c.Migrate); err != nil {
			return all, err
		}
	}
	if len(all.Applied) > 0 {
		a.log.InfoContext(ctx, "migrated", "schema", a.cfg.Schema, "applied", len(all.Applied))
	}
	return all, nil
}

// Ready returns a channel that is closed once Run has applied the
// migrations (unless Config.DisableMigrate), started every part and seen
// every component's Component.Ready closed: the point from which the
// service can take requests. It is replaced by an open channel as soon as
// Run begins to stop, so a /readyz handler that selects on Ready() answers
// "not ready" again while the service drains. The channel stays open while
// Run fails to start. Safe for concurrent use.
func (a *App) Ready() <-chan struct{} {
	a.readyMu.Lock()
	defer a.readyMu.Unlock()
	return a.ready
}

// Run starts the front components (Component.Front), migrates (unless
// Config.DisableMigrate), then runs the projector runner, the other
// components and, once every component's Ready is closed, the forwarder,
// until ctx is done; it returns nil after a clean stop. Ready is closed
// once everything has started.
//
// The first part that fails (returns an error, or returns nil before ctx is
// done) stops the others, and Run returns its error. On stop, Ready is
// reopened and the parts stop in this order, each only once the previous
// one has returned: the front components in reverse order (an HTTP server
// stops accepting requests and finishes those in flight, while everything
// behind it still runs), the forwarder (so a publish in flight ends before
// the consumers it may be feeding stop), the other components in reverse
// order, then the runner. Errors parts return once stopped are logged, not
// returned. Run returns once every goroutine it started has exited.
//
// Run returns an error when called while another Run of the App runs, and
// the migration error when migrating fails (it does not retry: start the
// process again); nil when ctx ends first.
func (a *App) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("esox: Run is already running")
	}
	defer a.running.Store(false)

	var fronts, comps []*part
	var runner, fwd *part
	failed := make(chan error, len(a.cfg.Components)+2)
	launch := func(name string, run func(context.Context) error) *part {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		p := &part{name: name, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(p.done)
			err := run(pctx)
			if pctx.Err() != nil { // stopped
				if err != nil {
					a.log.WarnContext(pctx, "stopped with an error", "part", name, "error", err)
				}
				return
			}
			if err == nil {
				err = errors.New("returned before it was stopped")
			}
			failed <- fmt.Errorf("esox: %s: %w", name, err)
		}()
		return p
	}
	// stop stops what was launched, in stop order.
	stop := func() {
		if ctx.Err() != nil {
			a.log.InfoContext(context.WithoutCancel(ctx), "stopping", "reason", context.Cause(ctx))
		}
		a.readyMu.Lock()
		select {
		case <-a.ready:
			a.ready = make(chan struct{})
		default:
		}
		a.readyMu.Unlock()
		for _, p := range slices.Concat(reversed(fronts), []*part{fwd}, reversed(comps), []*part{runner}) {
			if p != nil {
				p.cancel()
				<-p.done
			}
		}
		a.log.InfoContext(context.WithoutCancel(ctx), "stopped")
	}
	// failure returns the first part's failure, nil if none failed yet.
	failure := func() error {
		select {
		case err := <-failed:
			return err
		default:
			return nil
		}
	}

	for _, c := range a.cfg.Components {
		if c.Front {
			fronts = append(fronts, launch(c.Name, c.Run))
		}
	}
	if !a.cfg.DisableMigrate {
		if _, err := a.Migrate(ctx); err != nil {
			stop()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	if err := failure(); err != nil {
		a.log.ErrorContext(ctx, "a part failed; stopping", "error", err)
		stop()
		return err
	}
	if a.runner != nil {
		runner = launch("projector", a.runner.Run)
	}
	for _, c := range a.cfg.Components {
		if !c.Front {
			comps = append(comps, launch(c.Name, c.Run))
		}
	}
	var runErr error
	for _, c := range a.cfg.Components {
		if c.Ready == nil || runErr != nil || ctx.Err() != nil {
			continue
		}
		select {
		case <-c.Ready:
		case runErr = <-failed:
		case <-ctx.Done():
		}
	}
	if runErr == nil && ctx.Err() == nil {
		if a.fwd != nil {
			fwd = launch("forwarder", a.fwd.Run)
		}
		a.readyMu.Lock()
		close(a.ready)
		a.readyMu.Unlock()
		a.log.InfoContext(ctx, "running", "schema", a.cfg.Schema, "projections", len(a.cfg.Projections),
			"forwarding", a.fwd != nil, "components", len(a.cfg.Components))
		select {
		case <-ctx.Done():
		case runErr = <-failed:
		}
	}
	if runErr != nil {
		a.log.ErrorContext(ctx, "a part failed; stopping", "error", runErr)
	}
	stop()
	return runErr
}

// part is one goroutine of Run.
type part struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed once its run func returned
}

func reversed(ps []*part) []*part {
	out := slices.Clone(ps)
	slices.Reverse(out)
	return out
}

// WaitFor returns nil once every projection of the App has applied the
// record at pos (see projector.Runner.WaitFor), for read-your-writes after
// an append: append, WaitFor(ctx, res.LastPosition), then query the read
// models. It returns nil at once when the App has no projections, and the
// first projection's error otherwise (ctx's, or a typed error when a
// projection cannot get there). Safe for concurrent use.
func (a *App) WaitFor(ctx context.Context, pos eventstore.Position) error {
	if a.runner == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, p := range a.cfg.Projections {
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		if err := a.runner.WaitFor(ctx, p.Name, pos); err != nil {
			return err
		}
	}
	return nil
}
