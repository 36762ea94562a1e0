package postgres

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SQLSTATE codes the store translates.
const (
	codeUniqueViolation         = "23505"
	codeUntranslatableCharacter = "22P05"
)

// translate wraps a driver error for the API: the message names the
// operation, the driver's error stays reachable with errors.As, and when ctx
// has ended its error is reachable with errors.Is too.
func translate(ctx context.Context, op string, err error) error {
	if ctx != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("eventstore/postgres: %s: %w (%w)", op, ctx.Err(), err)
	}
	return fmt.Errorf("eventstore/postgres: %s: %w", op, err)
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// containsNUL reports whether a JSON text holds an escaped NUL (\u0000) that
// is not itself an escaped backslash followed by "u0000".
func containsNUL(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		if i+1 < len(b) && b[i+1] == 'u' && bytes.HasPrefix(b[i+2:], []byte("0000")) {
			return true
		}
		i++ // skip the escaped character
	}
	return false
}
