// Package memory is an in-memory eventstore.Store with the same semantics as
// the PostgreSQL store in eventstore/postgres, for unit tests, demos and
// examples that should run without a database.
//
// It passes the conformance suite in eventstore/storetest, so code tested
// against it behaves the same against PostgreSQL:
//
//   - Optimistic concurrency (guarantee 1 in docs/guarantees.md): Append checks the expected
//     version and writes all of its events or none, returning a
//     *eventstore.ConcurrencyError on a mismatch.
//   - Gap-free global feed and per-stream order (guarantees 2 and 3): every
//     append is atomic and instantaneous under one lock, so the feed read by
//     ReadAll is ordered by Position and trivially gap-free. Each append gets
//     the next Position.TransactionID, each event the next Position.Position.
//   - Bad input is refused (guarantee 8): Append calls eventstore.EncodeAppend
//     first and so returns the same typed errors as PostgreSQL. Payloads are
//     stored as JSON and decoded through the Registry on every read, so a
//     Record's Data is a fresh value of the registered type, exactly as read
//     from PostgreSQL. What PostgreSQL cannot store (eventstore.CheckJSONB:
//     the escape \u0000, lone surrogate escapes, invalid UTF-8, numbers
//     outside numeric's range, jsonb's size limits) is refused here too, by
//     the same check; Config.MaxEventSize (NewWithConfig) is the PostgreSQL
//     store's knob of the same name. A replay of a stored append is reported
//     as written, as in PostgreSQL. An append here cannot fail half-way, so
//     its outcome is never unknown.
//
// Events are kept as the registry encoded them, with their schema version,
// and upcast on every read like PostgreSQL's (docs/evolution.md);
// Store.WithRegistry gives a second release's view of the same events, to
// test schema evolution without a database.
//
// Appends are hash-chained like PostgreSQL's (the same digest, over the
// JSON as this store keeps it) and the store implements
// eventstore.Verifier; KeyStore keeps data keys for crypto-shredding
// (docs/compliance.md).
//
// The store lives only as long as the process: it has no durability and no
// transactions a caller can join (no AppendTx).
package memory
