// Package projector builds read models from the global feed of the
// PostgreSQL event store, exactly once, with failover, rebuilds and
// read-your-writes; it also applies broker messages to read models of other
// services exactly once (the inbox).
//
// # Writing a projection
//
// A Projection has a Name, a Handler and optional Setup, Reset and Activate
// funcs for its own tables. Handlers see a whole batch of records and write
// through the batch's postgres.Tx (a transaction without Commit or Rollback:
// the runner ends it together with the checkpoint); build one with NewHandlers and On (one typed
// func per event type), Records (one func per record) or Batch (the whole
// batch at once, e.g. one multi-row upsert). Records of types a handler does
// not declare are passed over, never decoded, and the checkpoint still moves
// past them.
//
//	hs := projector.NewHandlers(reg)
//	projector.On(hs, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e OrderPlaced) error {
//		_, err := tx.ExecContext(ctx, `INSERT INTO orders_view (id, total) VALUES ($1, $2)`, e.OrderID, e.Total)
//		return err
//	})
//	r, err := projector.NewRunner(store, projector.Config{}, projector.Projection{Name: "orders", Handler: hs})
//	...
//	go r.Run(ctx) // until ctx is cancelled
//	res, _ := store.Append(ctx, ...)
//	_ = r.WaitFor(ctx, "orders", res.LastPosition) // read your writes
//
// # Guarantees
//
// The package keeps guarantees 5 and 7 of docs/guarantees.md:
//
//   - Exactly-once effect (5). Each batch is read outside any transaction
//     from the gap-free feed, then applied in one transaction that first
//     advances the projection's checkpoint (transaction_id, position) with a
//     compare-and-set on its old value, then runs the handler, then
//     commits. The read model and its checkpoint commit together or not at
//     all, so a crash, a cancelled context or a lost connection at any point
//     neither loses nor doubles an effect; a batch whose compare-and-set
//     finds the checkpoint moved applies nothing.
//   - One active worker per projection (7). For each projection version
//     (each partition of it), the processes running it compete for a
//     PostgreSQL session advisory lock, all of a process's locks held on
//     one lock session per pool (internal/leader); the holder works, the
//     others stand by and retry every Config.LeaderRetryInterval (1 s), so
//     another process takes over within about one interval, 1 s by
//     default, after the active one crashes (its sockets close). A frozen
//     process, or one whose host died or was cut off, closes nothing: the
//     server ends its lock session itself, through idle_session_timeout
//     (max(3*LeaderRetryInterval, 5 s), PostgreSQL 14+) and server-side TCP
//     keepalives (about 5 s), so another process takes over after about 6 s
//     by default. A batch transaction left open by a frozen process is
//     rolled back by the server after Config.IdleInTransactionTimeout (1
//     minute by default). The lock holds no transaction, so it never holds
//     back the feed. If two workers briefly overlap (the old one has not
//     yet noticed it lost its session), the checkpoint compare-and-set lets
//     only one of them apply each batch.
//
// # Failures
//
// Database errors (connection lost, server restarting) are retried with
// backoff until the database is back; the runner recovers by itself. A
// handler error is retried Config.MaxRetries times with backoff; then that
// projection stops with the error in its Status (StateStoppedWithError) and
// the checkpoints table, while the other projections go on. Nothing is
// skipped silently: with Projection.DeadLetter the failing events are parked
// one by one in the dead-letter table with their error and the projection
// goes on. Resume restarts a stopped projection after a fix.
//
// # Rebuilds and versions
//
// Rebuild resets a projection in place (Reset, checkpoint to the start) and
// the runner replays it. For a rebuild readers must not see, give the
// projection a higher Version writing new tables: it fills beside the live
// version and, once caught up, becomes live in one transaction that runs its
// Activate (e.g. CREATE OR REPLACE VIEW) and retires the old version.
//
// # Operations without the code
//
// The package functions ListProjections, ReadProjection, RequestRebuild,
// Resume, SetCheckpoint, Skip, ListDeadLetters, RetryDeadLetters and
// DiscardDeadLetters operate the projections of a schema from any process,
// without the projections' code: the esox command and an admin endpoint
// call them while the service runs. What needs the code — a rebuild's
// Reset, a dead letter's retry through the Handler, passing over one event
// of a batch — is a request recorded on the checkpoint row, which the
// version's leading worker performs (it re-reads its row every
// Config.LeaderRetryInterval, and a pending request fences its batches);
// the rest is fenced by the workers' compare-and-set. See
// docs/operations.md.
//
// # Partitions
//
// Projection.Partitions splits a projection by stream (PartitionOf: FNV-32a
// of the stream ID modulo the count) into partitions applied in parallel,
// each with its own checkpoint row and leader, each applying its streams'
// records in feed order, exactly once; Config.MaxPartitions spreads them over
// processes. The count is fixed for a version (a changed one is refused
// with a *PartitionsError): change it with a new Version.
//
// # Waking up
//
// Workers that have caught up wait on the store's feed watcher
// (postgres.Store.Watch): they wake at once after an Append through the
// runner's own Store, and otherwise when the watcher, which polls the
// feed's head every Config.PollInterval (10 ms) for every subscriber of the
// store, sees it move. An idle process therefore sends one read-only query
// per interval (plus its leadership's one statement and the runner's one
// read of its checkpoints per LeaderRetryInterval), however many
// projections it runs. esox does not use LISTEN/NOTIFY: NOTIFY serializes
// committing transactions on a global lock, a cost every appender would
// pay; see docs/projections.md.
//
// # Inline projections and the inbox
//
// InlineHook runs projections inside each append's transaction, for read
// models that must never lag. An Inbox (NewInbox) adapts a projection
// handler to a Watermill handler that de-duplicates broker messages by UUID
// in the same transaction as their effect, optionally refusing deliveries
// out of stream order (InboxConfig.StreamVersionGuard); it reports its
// consumer (Status), waits for an event ID (WaitFor) and trims its records
// (Prune).
//
// # Waiting, and what WaitFor refuses
//
// WaitFor gives read-your-writes. It does not wait for what cannot come: a
// projection not registered, stopped with an error, without a live
// version, or led by no process returns a *WaitError (ErrNotProgressing)
// naming the state and the checkpoint.
//
// # Least privilege
//
// Migrations read esox_migrations before any DDL, so once a role that may
// create tables has run Runner.Migrate (which also registers the
// projections and runs their Setup), the service may run as a role with
// only DML rights, with Config.DisableMigrate. See docs/operations.md.
//
// # Testing projections
//
// Package projectortest applies a projection to given events in a fresh
// schema on a real PostgreSQL, for tests of read models.
//
// # Observability
//
// Each batch is a span linked to the spans that appended its events, which
// the handler runs under; each inbox message a span that continues the
// message's trace. The metrics (esox.projection.*, esox.inbox.*) include
// each projection's lag, backlog and state, observed from the workers'
// memory while Run runs: collecting them costs no query per projection.
// Only the OpenTelemetry API is imported: see Config.TracerProvider and
// docs/observability.md.
//
// See docs/projections.md for a guide.
package projector
