// Package postgres is the PostgreSQL event store of esox, on sqlx and any
// database/sql driver for PostgreSQL: lib/pq or pgx's stdlib.
//
// Create a Store with New, create its tables with Store.Migrate, then Append
// events and read them back with ReadStream (one stream, in version order)
// and ReadAll (the global feed, in (transaction_id, position) order).
//
// # Guarantees
//
// The store keeps these guarantees of docs/guarantees.md; each has a test in
// this package:
//
//  1. Optimistic concurrency: Append and AppendTx check the expected version
//     and insert in one statement; a mismatch or a concurrent winner returns a
//     *eventstore.ConcurrencyError (eventstore.ErrConcurrencyConflict) with
//     stream, expected and actual version, and nothing is written. Every
//     outcome is known: an Append whose connection fails after the statement
//     was sent looks its event IDs up on a new connection and reports what
//     it finds; eventstore.ErrOutcomeUnknown is the last resort, and every
//     other error means nothing was written (SettleAppend settles a failed
//     Commit after AppendTx).
//  2. Gap-free global feed: ReadAll returns only rows whose transaction is
//     older than every running one (pg_snapshot_xmin), ordered by
//     (transaction_id, position), so a reader resuming from its last Position
//     never skips an event that commits later with a smaller position.
//  3. Per-stream order in the feed: the append statement refuses, as a
//     conflict with a Reason, to append to a stream whose last event was
//     written by a newer transaction than the appending one, which would put
//     version N+1 before version N in the feed.
//  4. Appends in the caller's transaction: AppendTx takes the caller's
//     transaction (*sqlx.Tx, *sql.Tx, or the Tx a handler is given);
//     AppendHooks run inline projections in the append's transaction, and
//     get a Tx they cannot commit or roll back.
//  8. Bad input is refused: invalid schema and table names
//     (ValidateIdentifier), stream IDs, unregistered types, and payloads,
//     metadata, type names and snapshots PostgreSQL cannot store get typed
//     errors before anything is sent (eventstore.CheckJSONB); what PostgreSQL
//     refuses anyway is translated into the same typed errors. Nothing is
//     written.
//
// # Performance
//
// Without AppendHooks, an Append is one prepared statement executed in one
// round trip: the expected-version check, the per-stream-order check and the
// rows are a single INSERT … SELECT … WHERE … RETURNING. Statements are
// prepared once per Store (and per pooled connection) and reused.
//
// # Audit trail and personal data
//
// Each append chains its events (migration 004): every event's SHA-256
// digest over the previous one and its stored content
// (eventstore.ChainDigest) is written by the append statement, which
// computes it, or checks that the digests the store computed chain after
// the stream's last one (Config.ChainHeads), unless Config.DisableChain. Verify
// checks the chains, Seal and VerifySeal seal every stream's head at a
// feed position for export; the esox command's verify and seal call them.
// KeyStore keeps the wrapped data keys of crypto-shredding in a table of
// its own (component KeysComponent), and the read paths decrypt personal
// fields through the registry's Shredder (eventstore.Registry.Decrypt).
// See docs/compliance.md.
//
// # Drivers
//
// The store imports no driver. It runs on a *sqlx.DB over lib/pq
// (sqlx.Open("postgres", url), after importing github.com/lib/pq) or over
// pgx (sqlx.Open("pgx", url) after importing github.com/jackc/pgx/v5/stdlib,
// or sqlx.NewDb(stdlib.OpenDBFromPool(pool), "pgx") to share a pgxpool). It
// sends every value as a text parameter and classifies errors through
// interface{ SQLState() string } (see SQLState and IsTransient), which both
// drivers' errors implement; the conformance suite and the concurrent
// writers' feed test run on both.
//
// # Migrations
//
// Migrations are numbered text/template SQL files embedded in the binary,
// applied by ApplyMigrations under a transaction-scoped advisory lock and
// recorded in <schema>.esox_migrations. Other packages reuse ApplyMigrations
// for their own tables with their own Component name.
//
// # Observability
//
// Append and AppendTx are spans (OpenTelemetry's database conventions)
// whose W3C trace context every appended event records in its metadata;
// ReadStream is a span too; the esox.append.* metrics count events,
// conflicts and durations by stream category. Only the OpenTelemetry API
// is imported. While the store uses the global providers and the
// application has installed neither, appends and reads start no span and
// record no metric (an install later takes effect at the next call); the
// events still record the trace context of the caller's context, if it
// carries one. See Config.TracerProvider and docs/observability.md.
//
// # Wake-ups
//
// The store sends no NOTIFY (it would take a global lock at every commit).
// Store.Watch wakes its subscribers after each Append through the store and,
// for commits made elsewhere, whenever the store's one feed watcher, which
// polls Head every poll interval while anyone watches, sees the feed's head
// move: one read-only query per interval for the whole process, however
// many readers wait (the projector and the forwarder use it). Subscribe
// gets the same wake-ups without making the store poll.
package postgres
