// Package storetest is the conformance suite every eventstore.Store must
// pass. The PostgreSQL store (eventstore/postgres) and the in-memory store
// (eventstore/memory) both run it; a store written outside esox should too.
//
// Call Run from a test with a constructor that returns a fresh, empty store:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
//			return memory.New(reg)
//		})
//	}
//
// Run's subtests run in parallel and each asks for its own store, so the
// constructor must be safe for concurrent use and must not hand two subtests
// the same data (for PostgreSQL: one schema per call).
//
// # What the suite checks
//
// It proves the guarantees of docs/guarantees.md numbered 1 (optimistic concurrency, including 16
// goroutines racing for each version of one stream), 2 and 3 as far as one
// process can see them (ReadAll in Position order, per-stream version order
// in the feed, paged reads resuming from a checkpoint equal one full read) and
// 8 (bad input refused with typed errors and nothing written), plus reads from
// a version, stream info, snapshots, event IDs, metadata, the W3C trace
// context of the appending span in each event's metadata (and none without
// a span), a 1 MiB payload and context cancellation. Every subtest asserts; none merely runs code.
//
// The suite assumes no timing. A PostgreSQL feed reader sees only events of
// transactions below the snapshot's xmin, which another test's open
// transaction on the same server can hold back, so the suite waits (up to
// FeedTimeout) for appended events to become visible in ReadAll instead of
// expecting them at once. "Nothing was written" is proved the same way: the
// suite appends a barrier event after the refused append, waits for it in the
// feed and then requires the feed to hold exactly what it expects.
//
// # Decisions the suite pins down
//
// Where eventstore.Store's documentation leaves a choice, the suite makes it
// so that all stores agree:
//
//   - An event ID that is already stored, or repeated within one append, is
//     refused with an error matching eventstore.ErrInvalidArgument (an
//     *eventstore.InvalidArgumentError), never with ErrConcurrencyConflict
//     since retrying cannot succeed, and nothing of the append is written.
//     PostgreSQL reports it as a unique violation on event_id, which the
//     store translates.
//   - Any and StreamExists appends racing on one stream all succeed: a store
//     whose optimistic insert loses the next version to a concurrent writer
//     retries, since the expectation still holds.
//   - Every store refuses what PostgreSQL cannot store, before writing
//     (Refusals lists the cases, Storable the near misses that must be
//     accepted): a payload whose JSON jsonb refuses (the escape \u0000,
//     lone surrogate escapes, invalid UTF-8, numbers outside numeric's
//     range, a string over 2^28-1 bytes) is an *eventstore.PayloadError
//     (eventstore.ErrMalformedPayload) naming the event type; metadata
//     containing NUL is an *eventstore.InvalidArgumentError
//     (eventstore.ErrInvalidArgument) on "metadata"; a type name with NUL or
//     invalid UTF-8 is refused by eventstore.Register. A string holding the
//     six characters `\u0000` (an escaped backslash) is fine and
//     round-trips.
//   - An append whose events are all stored already, with the same IDs in
//     the same order as one earlier append (all that append wrote) to the
//     same stream, at versions the expected version allows, is a replay: it
//     writes nothing and returns the stored events' AppendResult. Any other
//     reuse of a stored ID is refused as above.
//   - A store with a maximum event size (RunMaxEventSize) stores an event of
//     exactly that many bytes of payload plus metadata JSON and refuses a
//     larger one with an *eventstore.EventTooLargeError.
//   - SaveSnapshot keeps the snapshot of the highest version: an older one
//     is ignored, one of the same version replaces it. It refuses a Version
//     below 1, an empty Type or one with NUL or invalid UTF-8, and a Payload
//     that is not valid JSON or not valid UTF-8, with an error matching
//     eventstore.ErrInvalidArgument (eventstore.ValidateSnapshot). A payload
//     is kept as the JSON text given, \u0000 and lone surrogates included.
//   - Stream IDs are validated on every call that takes one: ReadStream
//     yields, and StreamInfo, SaveSnapshot and LoadSnapshot return, an error
//     matching eventstore.ErrInvalidStreamID.
//   - A context that is already done makes every method fail with an error
//     matching ctx.Err() (errors.Is(err, context.Canceled) or
//     context.DeadlineExceeded), and Append writes nothing.
//   - ReadAll accepts limits 1 to eventstore.MaxReadAllLimit and returns an
//     error matching eventstore.ErrInvalidArgument otherwise.
//   - Record.Payload and Snapshot.Payload are compared as JSON values, not
//     bytes: jsonb normalizes key order and white space.
package storetest
