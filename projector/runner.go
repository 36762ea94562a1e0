package projector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leader"
)

// Runner keeps projections up to date with the global feed of a PostgreSQL
// store. One Runner hosts many projections; several processes may run the
// same projections, and for each projection version (each partition of it,
// see Projection.Partitions) exactly one process works at a time (guarantee
// 7 in docs/guarantees.md), elected with a session advisory lock. Every
// lock of the process lives on one lock session for the pool (so the pool
// needs one connection for it plus the workers' own), and idle
// projections share the store's one feed watcher: a process's idle load
// does not grow with the number of projections it runs (see
// docs/operations.md).
//
// Each batch is read outside any transaction from the gap-free feed, then
// applied in one transaction that first advances the projection's checkpoint
// with a compare-and-set (so two workers can never both apply a batch) and
// then runs the handler: the read model and its checkpoint commit or roll
// back together (guarantee 5 in docs/guarantees.md).
//
// A Runner is safe for concurrent use: Status, WaitFor, Rebuild, Resume and
// SetCheckpoint may be called while Run runs, from any process.
type Runner struct {
	store   *postgres.Store
	db      *sqlx.DB
	cfg     Config
	log     *slog.Logger
	t       tables
	workers []*worker                 // sorted by name, version, partition
	budgets map[string]*leader.Budget // by leader key, under Config.MaxPartitions
	tel     *runnerTelemetry

	running atomic.Bool

	advMu    sync.Mutex
	advanced chan struct{} // closed and replaced whenever a checkpoint moves in this process
}

// NewRunner returns a Runner for projections over store's feed. It validates
// cfg and the projections (names, handlers, no duplicate name and version)
// and does not touch the database.
//
// Errors match eventstore.ErrInvalidArgument (or carry a Handlers' Err) and
// name the bad field or projection.
func NewRunner(store *postgres.Store, cfg Config, projections ...Projection) (*Runner, error) {
	if store == nil {
		return nil, fmt.Errorf("projector: %w", &eventstore.InvalidArgumentError{Field: "store", Reason: "must not be nil"})
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(projections) == 0 {
		return nil, fmt.Errorf("projector: %w", &eventstore.InvalidArgumentError{Field: "projections", Reason: "at least one is required"})
	}
	r := &Runner{
		store:    store,
		db:       store.DB(),
		cfg:      cfg,
		log:      cfg.Logger.With("component", "projector"),
		t:        tablesIn(store.Schema()),
		advanced: make(chan struct{}),
	}
	seen := map[string]bool{}
	for _, p := range projections {
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("projector: invalid projection: %w", err)
		}
		id := p.Name + "@" + strconv.Itoa(p.version())
		if seen[id] {
			return nil, fmt.Errorf("projector: %w", &eventstore.InvalidArgumentError{Field: "projections", Reason: fmt.Sprintf("projection %q version %d is given twice", p.Name, p.version())})
		}
		seen[id] = true
		var budget *leader.Budget
		if cfg.MaxPartitions > 0 {
			budget = leader.NewBudget(cfg.MaxPartitions)
		}
		for part := range p.partitions() {
			w := newWorker(r, p, part)
			r.workers = append(r.workers, w)
			if budget != nil {
				if r.budgets == nil {
					r.budgets = map[string]*leader.Budget{}
				}
				r.budgets[w.leaderKey] = budget
			}
		}
	}
	slices.SortFunc(r.workers, func(a, b *worker) int {
		return cmp.Or(cmp.Compare(a.p.Name, b.p.Name), cmp.Compare(a.version, b.version), cmp.Compare(a.partition, b.partition))
	})
	r.tel = newRunnerTelemetry(r)
	for _, w := range r.workers {
		w.tel = r.tel.newWorker(w)
	}
	return r, nil
}

// versions returns one worker per projection version (its partition 0),
// in the runner's order.
func (r *Runner) versions() []*worker {
	var out []*worker
	for _, w := range r.workers {
		if w.partition == 0 {
			out = append(out, w)
		}
	}
	return out
}

// Migrate creates or updates the projector's tables in the store's schema
// (checkpoints, dead letters, inbox; postgres.ApplyMigrations under
// Component) and registers each projection version: a version seen for the
// first time gets a checkpoint at the start of the feed for each of its
// partitions and its Setup runs in the same transaction. The first version
// of a projection is active; a version higher than the active one is
// building (blue/green, see Projection.Version); a lower one is retired.
// When a runner registers several versions of a new projection at once, the
// highest is active. A version registered with another partition count
// than its Projection.Partitions is refused with a *PartitionsError
// (matching ErrPartitionsChanged), and nothing of the projection is
// registered.
//
// Run calls Migrate unless Config.DisableMigrate is set; call it yourself to
// use Status or WaitFor before Run, or, as a role that may create tables,
// before starting the service with a role that may not (see
// docs/operations.md). Once everything is applied and registered it only
// reads. It is idempotent and safe to call from several processes at once.
// ctx bounds it.
func (r *Runner) Migrate(ctx context.Context) (postgres.MigrateResult, error) {
	res, err := migrate(ctx, r.db, r.t.schema)
	if err != nil {
		return res, err
	}
	// Highest version first, so a fresh install activates the newest.
	ws := r.versions()
	slices.SortStableFunc(ws, func(a, b *worker) int {
		return cmp.Or(cmp.Compare(a.p.Name, b.p.Name), cmp.Compare(b.version, a.version))
	})
	for _, w := range ws {
		if err := r.register(ctx, w); err != nil {
			return res, fmt.Errorf("projector: register projection %q version %d: %w", w.p.Name, w.version, err)
		}
	}
	return res, nil
}

// ErrNotRegistered is matched by the error Run returns under
// Config.DisableMigrate when a projection version has no checkpoint yet
// (Runner.Migrate has not run with it), and by a *WaitError for a projection
// that no runner has registered.
var ErrNotRegistered = errors.New("projector: projection version not registered")

// ErrPartitionsChanged is matched by a *PartitionsError.
var ErrPartitionsChanged = errors.New("projector: projection version registered with another partition count")

// PartitionsError is returned by Runner.Migrate and Runner.Run when a
// projection version is registered with another partition count than the
// runner's Projection.Partitions: a stream's partition depends on the
// count, so changing it in place would apply events twice or out of order.
// Deploy the new count as a new Version instead (blue/green, see
// docs/projections.md), or give the version its registered count back. It
// matches ErrPartitionsChanged.
type PartitionsError struct {
	Projection string
	Version    int
	// Registered is the version's partition count in the checkpoints
	// table; Configured is Projection.Partitions (0 counted as 1).
	Registered, Configured int
}

func (e *PartitionsError) Error() string {
	return fmt.Sprintf("projector: projection %q version %d is registered with %d partitions, not %d: "+
		"a stream's partition depends on the count, so change it with a new Version (blue/green rebuild, see docs/projections.md)",
		e.Projection, e.Version, e.Registered, e.Configured)
}

// Is makes errors.Is(err, ErrPartitionsChanged) true.
func (e *PartitionsError) Is(target error) bool { return target == ErrPartitionsChanged }

// registration is what the checkpoints table says of a projection
// version.
type registration struct {
	Projection string `db:"projection"`
	Version    int    `db:"version"`
	Status     string `db:"status"`
	Partitions int    `db:"partitions"`
	Rows       int    `db:"rows"`
}

// checkPartitions returns a *PartitionsError when reg, the registration of
// w's version, has another partition count than w's projection.
func checkPartitions(w *worker, reg registration) error {
	if reg.Partitions != w.partitions || reg.Rows != w.partitions {
		return &PartitionsError{Projection: w.p.Name, Version: w.version, Registered: reg.Partitions, Configured: w.partitions}
	}
	return nil
}

// checkRegistered returns an error matching ErrNotRegistered, naming them,
// when some of the runner's projection versions have no checkpoint row, or
// a *PartitionsError when one is registered with another partition count.
func (r *Runner) checkRegistered(ctx context.Context) error {
	var rows []registration
	err := r.db.SelectContext(ctx, &rows, `SELECT projection, version, min(status) AS status, max(partitions) AS partitions, count(*) AS rows
		FROM `+r.t.checkpoints+` GROUP BY projection, version`)
	if err != nil && !postgres.IsUndefinedTable(err) {
		return fmt.Errorf("projector: read checkpoints: %w", err)
	}
	var missing []string
	for _, w := range r.versions() {
		i := slices.IndexFunc(rows, func(row registration) bool { return row.Projection == w.p.Name && row.Version == w.version })
		if i < 0 {
			missing = append(missing, fmt.Sprintf("%q version %d", w.p.Name, w.version))
			continue
		}
		if err := checkPartitions(w, rows[i]); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("projector: %w: %s; with Config.DisableMigrate, run Runner.Migrate with these projections first, as a role that may create tables", ErrNotRegistered, strings.Join(missing, ", "))
	}
	return nil
}

func (r *Runner) register(ctx context.Context, w *worker) error {
	tx, err := r.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, postgres.LockKey("esox:projector-register:"+r.t.schema+":"+w.p.Name)); err != nil {
		return err
	}
	var rows []registration
	if err := tx.SelectContext(ctx, &rows, `SELECT projection, version, min(status) AS status, max(partitions) AS partitions, count(*) AS rows
		FROM `+r.t.checkpoints+` WHERE projection = $1 GROUP BY projection, version`, w.p.Name); err != nil {
		return err
	}
	active := 0
	for _, row := range rows {
		if row.Version == w.version {
			return checkPartitions(w, row) // already registered
		}
		if row.Status == statusActive {
			active = row.Version
		}
	}
	status := statusActive
	switch {
	case active == 0:
	case w.version > active:
		status = statusBuilding
	default:
		status = statusRetired
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+r.t.checkpoints+` (projection, version, status, activated_at, partition, partitions)
		SELECT $1, $2, $3, CASE WHEN $3 = 'active' THEN now() END, p, $4 FROM generate_series(0, $4 - 1) AS p`,
		w.p.Name, w.version, status, w.partitions); err != nil {
		return err
	}
	if status != statusRetired && w.p.Setup != nil {
		if err := w.p.Setup(ctx, postgres.NewTx(tx)); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	r.log.InfoContext(ctx, "projection registered", "projection", w.p.Name, "version", w.version, "status", status, "partitions", w.partitions)
	return nil
}

// Checkpoint statuses, as stored.
const (
	statusActive   = "active"
	statusBuilding = "building"
	statusRetired  = "retired"
)

// Run runs every projection until ctx is done: it calls Migrate (or, under
// Config.DisableMigrate, checks that every projection version is
// registered), then for each partition of each projection version competes
// for leadership and, while it leads, applies the feed batch by batch. It
// returns nil after ctx is cancelled, once every goroutine it started has
// exited; the batch in flight commits or rolls back whole. It returns an
// error only when Migrate fails, when a projection version is not
// registered under DisableMigrate (matching ErrNotRegistered), when one is
// registered with another partition count (a *PartitionsError), or when
// Run is already running.
//
// While it leads at least one partition, Run re-reads the runner's
// checkpoint rows every Config.LeaderRetryInterval (one query for all of
// them) and has the worker of a row another process changed (Rebuild,
// Resume, SetCheckpoint, a version switch) re-read it; idle workers send
// the database nothing else.
//
// A projection whose handler keeps failing stops with the error in its
// Status (and in the checkpoints table) while the others go on; see
// Config.MaxRetries, Projection.DeadLetter and Resume. Database errors are
// retried until the database is back.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("projector: Run is already running")
	}
	defer r.running.Store(false)
	var err error
	if r.cfg.DisableMigrate {
		err = r.checkRegistered(ctx)
	} else {
		_, err = r.Migrate(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	defer r.observing()()
	var wg sync.WaitGroup
	wg.Go(func() { r.watchCheckpoints(ctx) })
	for _, w := range r.workers {
		wg.Go(func() {
			_ = leader.Run(ctx, r.db, leader.Config{
				Key:           w.leaderKey,
				RetryInterval: r.cfg.LeaderRetryInterval,
				Budget:        r.budgets[w.leaderKey],
				Logger:        w.log,
			}, w.tel.leadership.Wrap(w.work))
		})
	}
	wg.Wait()
	return nil
}

// watchCheckpoints re-reads the checkpoint rows of the runner's projections
// every LeaderRetryInterval while this process leads some of them, and
// signals each leading worker whose row differs from what it last knew, so
// changes made by other processes reach idle workers without each polling
// its own row.
func (r *Runner) watchCheckpoints(ctx context.Context) {
	var names []string
	for _, w := range r.versions() {
		if !slices.Contains(names, w.p.Name) {
			names = append(names, w.p.Name)
		}
	}
	// Projection names are identifiers (letters, digits, underscores), so
	// quoting each in the array literal is enough (and keeps a name such as
	// NULL a string).
	list := `{"` + strings.Join(names, `","`) + `"}`
	t := time.NewTicker(r.cfg.LeaderRetryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !slices.ContainsFunc(r.workers, func(w *worker) bool { active, _ := w.state(); return active }) {
			continue
		}
		rows, err := r.db.QueryContext(ctx, `SELECT projection, version, partition, `+checkpointColumns+` FROM `+r.t.checkpoints+`
			WHERE projection = ANY($1::text::text[])`, list)
		if err != nil {
			if ctx.Err() == nil {
				r.log.DebugContext(ctx, "re-reading the checkpoints failed; retrying", "error", err)
			}
			continue
		}
		for rows.Next() {
			var name string
			var version, partition int
			c, err := scanCheckpoint(scanFunc(func(dest ...any) error {
				return rows.Scan(append([]any{&name, &version, &partition}, dest...)...)
			}))
			if err != nil {
				r.log.DebugContext(ctx, "re-reading the checkpoints failed; retrying", "error", err)
				break
			}
			for _, w := range r.workers {
				if w.p.Name == name && w.version == version && w.partition == partition && w.stale(c) {
					w.signalReload()
				}
			}
		}
		rows.Close()
	}
}

// notifyAdvanced wakes WaitFor calls in this process.
func (r *Runner) notifyAdvanced() {
	r.advMu.Lock()
	close(r.advanced)
	r.advanced = make(chan struct{})
	r.advMu.Unlock()
}

func (r *Runner) advancedCh() <-chan struct{} {
	r.advMu.Lock()
	defer r.advMu.Unlock()
	return r.advanced
}

// workersNamed returns the runner's workers of projection name.
func (r *Runner) workersNamed(name string) []*worker {
	var out []*worker
	for _, w := range r.workers {
		if w.p.Name == name {
			out = append(out, w)
		}
	}
	return out
}

func (r *Runner) unknown(name string) error {
	return fmt.Errorf("projector: %w", &eventstore.InvalidArgumentError{Field: "projection", Reason: fmt.Sprintf("%q is not one of this runner's projections", name)})
}
