package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strconv"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/readmodel"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// restoredTxID is the transaction id restored events are renumbered to:
// the smallest normal xid8 is 3, so 1 (FrozenTransactionId) sorts before
// any transaction of the new cluster, and the feed reads such rows at once.
const restoredTxID = 1

// resetAfterRestore makes a schema restored with pg_dump/pg_restore into
// another cluster usable again. Transaction ids restart in the new cluster,
// so new events would sort before the restored ones and behind every
// checkpoint. It:
//
//  1. finds out whether there was a restore: an event whose transaction id
//     is at or past the new cluster's next one (none: nothing to do). If
//     so, every event not yet renumbered is a restored one — also those
//     below the next id, when the old cluster's ids straddle it — since no
//     instance ran since the restore;
//  2. moves each live projection's checkpoint and the forwarder's offset to
//     the same place in the renumbered feed, (1, position): exactly when the
//     events applied before form a prefix by position; otherwise a
//     projection is rebuilt (Runner.Rebuild) and the forwarder's offset is
//     put before the first event it had not published (some events are
//     published again; consumers de-duplicate on the UUID);
//  3. renumbers the restored events to transaction id 1, which keeps their
//     position order (and so each stream's order).
//
// Steps 2 and 3 are in that order so that a run that dies half-way can be
// run again. Every instance of the service must be stopped from the restore
// until it has run: an event appended in between would be taken for a
// restored one.
func resetAfterRestore(ctx context.Context, db *sqlx.DB, store *postgres.Store, runner *projector.Runner, fwd *forwarder.Forwarder, out io.Writer) error {
	events := store.QualifiedEventsTable()
	var next string
	if err := db.GetContext(ctx, &next, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text`); err != nil {
		return fmt.Errorf("read the next transaction id: %w", err)
	}
	var ahead int64
	if err := db.GetContext(ctx, &ahead, `SELECT count(*) FROM `+events+` WHERE transaction_id >= $1::xid8`, next); err != nil {
		return err
	}
	if ahead == 0 {
		fmt.Fprintf(out, "events: 0 renumbered (none is at or past the next transaction id of this cluster, %s: nothing to do)\n", next)
		return nil
	}
	// Some events are ahead of this cluster: a restore. The old cluster's
	// transaction ids may straddle this one's next id, so every event not
	// yet renumbered is a restored one — which holds because every
	// instance is stopped and none appended since the restore.
	restored := func(p eventstore.Position) bool { return p.TransactionID > restoredTxID }
	// moved returns the position in the renumbered feed equivalent to c,
	// and whether it is exact.
	moved := func(c eventstore.Position) (eventstore.Position, bool, error) {
		var maxApplied, minPending sql.NullInt64
		txid := strconv.FormatUint(c.TransactionID, 10)
		if err := db.GetContext(ctx, &maxApplied, `SELECT max(position) FROM `+events+` WHERE (transaction_id, position) <= ($1::xid8, $2)`, txid, c.Position); err != nil {
			return eventstore.Position{}, false, err
		}
		if err := db.GetContext(ctx, &minPending, `SELECT min(position) FROM `+events+` WHERE (transaction_id, position) > ($1::xid8, $2)`, txid, c.Position); err != nil {
			return eventstore.Position{}, false, err
		}
		switch {
		case !maxApplied.Valid:
			return eventstore.Position{}, true, nil
		case !minPending.Valid || minPending.Int64 > maxApplied.Int64:
			return eventstore.Position{TransactionID: restoredTxID, Position: maxApplied.Int64}, true, nil
		}
		return eventstore.Position{TransactionID: restoredTxID, Position: minPending.Int64 - 1}, false, nil
	}

	statuses, err := runner.Status(ctx)
	if err != nil {
		return err
	}
	for _, s := range statuses {
		if !s.Live || !restored(s.Checkpoint) {
			continue
		}
		pos, exact, err := moved(s.Checkpoint)
		if err != nil {
			return err
		}
		if !exact {
			if err := runner.Rebuild(ctx, s.Name); err != nil {
				return fmt.Errorf("rebuild %s: %w", s.Name, err)
			}
			fmt.Fprintf(out, "projection %s: checkpoint %s has no exact equivalent; rebuilding it from the start\n", s.Name, s.Checkpoint)
			continue
		}
		if err := runner.SetCheckpoint(ctx, s.Name, pos); err != nil {
			return err
		}
		fmt.Fprintf(out, "projection %s: checkpoint %s -> %s\n", s.Name, s.Checkpoint, pos)
	}
	off, err := fwd.Offset(ctx)
	if err != nil {
		return err
	}
	if restored(off) {
		pos, exact, err := moved(off)
		if err != nil {
			return err
		}
		if err := fwd.SetOffset(ctx, pos); err != nil {
			return err
		}
		note := ""
		if !exact {
			note = " (events after it are published again; consumers de-duplicate)"
		}
		fmt.Fprintf(out, "forwarder: offset %s -> %s%s\n", off, pos, note)
	}
	res, err := db.ExecContext(ctx, `UPDATE `+events+` SET transaction_id = $1::xid8 WHERE transaction_id <> $1::xid8`, strconv.Itoa(restoredTxID))
	if err != nil {
		return fmt.Errorf("renumber restored events: %w", err)
	}
	n, _ := res.RowsAffected()
	fmt.Fprintf(out, "events: %d renumbered to transaction id %d (next transaction id of this cluster: %s)\n", n, restoredTxID, next)
	return nil
}

// runResetAfterRestore is the reset-after-restore subcommand.
func runResetAfterRestore(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	db, err := openDB(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return err
	}
	defer db.Close()
	// The Shredder: a rebuild below reads the contacts, which must not be
	// taken for redacted.
	reg, _, _, err := newRegistry(db, cfg, log)
	if err != nil {
		return err
	}
	store, err := postgres.New(db, reg, postgres.Config{Schema: cfg.Schema, Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	tables, err := readmodel.TablesIn(cfg.Schema)
	if err != nil {
		return err
	}
	runner, err := projector.NewRunner(store, projector.Config{Logger: log},
		readmodel.OrdersProjection(reg, tables), readmodel.CustomerStatsProjection(reg, tables), readmodel.CustomersProjection(reg, tables))
	if err != nil {
		return err
	}
	// The forwarder is only used for its offset; it never publishes here.
	pub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer pub.Close()
	fwd, err := forwarder.New(store, pub, forwarder.Config{ConsumerGroup: forwarderGroup, DisableMigrate: true, Logger: log})
	if err != nil {
		return err
	}
	return resetAfterRestore(ctx, db, store, runner, fwd, stdout)
}
