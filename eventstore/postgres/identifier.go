package postgres

import (
	"fmt"
	"strings"

	"github.com/esox-go/esox/eventstore"
)

// MaxIdentifierLength is the longest identifier PostgreSQL keeps without
// truncating it (NAMEDATALEN-1 bytes).
const MaxIdentifierLength = 63

// ValidateIdentifier returns nil when name is usable as a schema or table
// name: 1 to 63 bytes of ASCII letters, digits and underscores, not starting
// with a digit. Anything else gets an *eventstore.InvalidArgumentError, which
// matches eventstore.ErrInvalidArgument. Valid names are still always quoted
// (see QuoteIdentifier), so they keep their case.
func ValidateIdentifier(name string) error {
	if name == "" {
		return &eventstore.InvalidArgumentError{Field: "identifier", Reason: "must not be empty"}
	}
	if len(name) > MaxIdentifierLength {
		return &eventstore.InvalidArgumentError{Field: "identifier", Reason: fmt.Sprintf("%q is longer than %d bytes", truncate(name, 70), MaxIdentifierLength)}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9':
			if i == 0 {
				return &eventstore.InvalidArgumentError{Field: "identifier", Reason: fmt.Sprintf("%q must start with a letter or underscore", name)}
			}
		default:
			return &eventstore.InvalidArgumentError{Field: "identifier", Reason: fmt.Sprintf("%q may contain only ASCII letters, digits and underscores", name)}
		}
	}
	return nil
}

// QuoteIdentifier returns name as a quoted SQL identifier, doubling any
// double quote inside it. It does not validate name; configuration passes
// through ValidateIdentifier first.
func QuoteIdentifier(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
