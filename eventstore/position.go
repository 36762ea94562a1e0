package eventstore

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
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

// ParsePosition parses s as Position.String formats it,
// "transaction_id/position": two decimal numbers without sign or spaces,
// e.g. "845/12"; "0/0" is the zero Position. It is the syntax the esox
// command takes for feed positions. Bad input returns an
// *InvalidArgumentError (matching ErrInvalidArgument) that quotes s and
// shows the expected form.
func ParsePosition(s string) (Position, error) {
	bad := func(reason string) (Position, error) {
		return Position{}, &InvalidArgumentError{Field: "position", Reason: fmt.Sprintf("%q: %s; want transaction_id/position, e.g. 845/12 (0/0 is the start of the feed)", s, reason)}
	}
	txid, pos, ok := strings.Cut(s, "/")
	if !ok {
		return bad("missing '/'")
	}
	if !decimal(txid) || !decimal(pos) {
		return bad("both parts must be decimal numbers without sign")
	}
	t, err := strconv.ParseUint(txid, 10, 64)
	if err != nil {
		return bad("transaction id out of range")
	}
	p, err := strconv.ParseInt(pos, 10, 64)
	if err != nil {
		return bad("position out of range")
	}
	return Position{TransactionID: t, Position: p}, nil
}

// decimal reports whether s is a non-empty run of ASCII digits.
func decimal(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
