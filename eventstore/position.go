package eventstore

import (
	"cmp"
	"fmt"
)

// Position is a place in the global feed: the PostgreSQL transaction id that
// wrote an event and the event's position (its identity column). The feed is
// ordered by (TransactionID, Position), which is the order in which readers can
// see events without gaps; Position alone is not.
//
// The zero Position means "before everything": reading after it starts at the
// first event. Position values start at 1.
type Position struct {
	// TransactionID is the xid8 of the transaction that appended the event.
	TransactionID uint64 `json:"transaction_id"`
	// Position is the event's global sequence number, unique across the table.
	Position int64 `json:"position"`
}

// Compare returns -1, 0 or +1 as p sorts before, equal to or after q in the
// feed.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.TransactionID, q.TransactionID); c != 0 {
		return c
	}
	return cmp.Compare(p.Position, q.Position)
}

// Less reports whether p sorts before q in the feed.
func (p Position) Less(q Position) bool { return p.Compare(q) < 0 }

// IsZero reports whether p is the zero Position, before every event.
func (p Position) IsZero() bool { return p == Position{} }

// String formats p as "transaction_id/position".
func (p Position) String() string {
	return fmt.Sprintf("%d/%d", p.TransactionID, p.Position)
}
