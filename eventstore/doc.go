// Package eventstore holds the storage-agnostic types of esox: events and
// records, global feed positions, expected versions, the errors to match, the
// event type registry with its JSON codec, metadata carried through a
// context.Context, and the Store interface that every event store implements.
//
// It imports no database driver. The PostgreSQL store lives in
// eventstore/postgres, the in-memory one in eventstore/memory, and both pass the
// conformance suite in eventstore/storetest.
//
// # Guarantees
//
// The types here carry the contract of guarantees 1–3 and 8 in
// docs/guarantees.md:
//
//   - Optimistic concurrency (1): every append takes an ExpectedVersion and fails
//     with a *ConcurrencyError matching ErrConcurrencyConflict, writing nothing.
//     Every append error means nothing was written, except one matching
//     ErrOutcomeUnknown (*OutcomeUnknownError), the last resort of a store
//     that could not find out after its connection failed.
//   - Gap-free global feed (2) and per-stream order in it (3): Store.ReadAll
//     returns records ordered by Position and never skips a record that commits
//     later with a smaller Position.
//   - Bad input is refused (8): invalid stream IDs, unregistered event types,
//     payloads that do not decode, and anything PostgreSQL could not store
//     (CheckJSONB, CheckText, ValidateSnapshot, all run by EncodeAppend,
//     Register or the stores' SaveSnapshot) return typed errors and write
//     nothing, in every store alike.
//
// # Events that evolve
//
// An event's identity is fixed at append; its reading evolves. Every stored
// event records the schema version its type was registered at when it was
// written (RegisterVersion; Register is version 1; events stored before
// versions existed read as 1), and every read upcasts older versions to the
// registered ones before decoding: Upcast and UpcastAs for one step, Rename,
// Split (one stored event read as several records) and Drop (read as none),
// all applied by RawRecord.AppendDecoded, the one decode path of the stores,
// the projector and the inbox (Registry.ToCurrent on the JSON alone).
// Registry.Validate checks the chains; WriteAs keeps writing an older version
// during a rolling deploy. A version newer than the registry knows is a
// *SchemaVersionError matching ErrUnknownSchemaVersion, never a guess. See
// docs/evolution.md.
//
// # Audit trail and erasure
//
// Erasure happens by destroying keys, never by rewriting rows
// (docs/compliance.md). Metadata carries the audit keys actor,
// on_behalf_of and reason (WithActor, WithOnBehalfOf, WithReason). Stores
// chain each stream's events by digest (ChainDigest) and implement
// Verifier: Verify reports each broken stream's first broken link
// (ChainChecker, BreakKind), Seal and VerifySeal find truncated tails and
// rewritten histories against a seal exported earlier. Fields of event
// types tagged esox:"personal" are encrypted at append (EncodeAppend) with
// the data key of the event's esox:"subject", by the Registry's Shredder
// over a KeyStore and a KeyEncrypter; Registry.Decrypt is the decryption
// stage every reader runs before AppendDecoded, and Shredder.Forget
// destroys a subject's key: its fields read as redacted (Record.Redacted)
// from then on, while the stored bytes, and so the chains, stay as they
// were.
package eventstore
