package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
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

// violatedConstraint returns which of names the PostgreSQL error in err's
// chain names as its constraint, or "". Drivers expose the constraint as a
// field (lib/pq's Error.Constraint, pgx's PgError.ConstraintName), not a
// method, so it reads either field by name; failing that, it looks for a
// name quoted in the message ("… violates unique constraint "x"").
func violatedConstraint(err error, names ...string) string {
	var e interface{ SQLState() string }
	if !errors.As(err, &e) {
		return ""
	}
	v := reflect.ValueOf(e)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.Struct {
		for _, field := range []string{"ConstraintName", "Constraint"} {
			if f := v.FieldByName(field); f.IsValid() && f.Kind() == reflect.String {
				if slices.Contains(names, f.String()) {
					return f.String()
				}
			}
		}
	}
	msg := err.Error()
	for _, n := range names {
		if strings.Contains(msg, `"`+n+`"`) {
			return n
		}
	}
	return ""
}

// arrayLiteral encodes ss as a PostgreSQL array literal of quoted
// elements, a text parameter any driver sends as is and PostgreSQL casts
// to the array type the statement names.
func arrayLiteral(ss []string) string {
	n := 2
	for _, s := range ss {
		n += len(s) + 3
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteByte('{')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(s); j++ {
			if c := s[j]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(s[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
