package httpapi

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// IdempotencyKeysTable is the table, in the service's schema, that holds the
// stored results of commands sent with an Idempotency-Key header.
const IdempotencyKeysTable = "idempotency_keys"

// Component is the component under which Migrate records the API's
// migrations in the schema's esox_migrations table.
const Component = "ordering_api"

// MaxIdempotencyKeyLength bounds the Idempotency-Key header.
const MaxIdempotencyKeyLength = 200

//go:embed migrations/*.up.sql
var migrations embed.FS

// Migrate creates the idempotency keys table in schema with
// postgres.ApplyMigrations. It is idempotent and safe to run from several
// processes at once; ctx bounds it.
func Migrate(ctx context.Context, db *sqlx.DB, schema string) (postgres.MigrateResult, error) {
	files, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return postgres.MigrateResult{}, err
	}
	res, err := postgres.ApplyMigrations(ctx, db, postgres.MigrationParams{
		Schema:    schema,
		Component: Component,
		Files:     files,
		Data: struct{ Keys, CreatedIndex string }{
			Keys:         postgres.QuoteIdentifier(schema) + "." + postgres.QuoteIdentifier(IdempotencyKeysTable),
			CreatedIndex: postgres.QuoteIdentifier(IdempotencyKeysTable + "_created_at_idx"),
		},
	})
	if err != nil {
		return res, fmt.Errorf("httpapi: migrate: %w", err)
	}
	return res, nil
}

// Idempotency stores command results under their Idempotency-Key, atomically
// with the command's events: its AppendHook inserts the key's row inside the
// append's transaction, so a crash can never record a key without its
// events or events without their key. Safe for concurrent use.
type Idempotency struct {
	db    *sqlx.DB
	table string
}

// NewIdempotency returns the Idempotency of the keys table in schema (see
// Migrate). schema must pass postgres.ValidateSchemaName.
func NewIdempotency(db *sqlx.DB, schema string) (*Idempotency, error) {
	if db == nil {
		return nil, errors.New("httpapi: idempotency: db must not be nil")
	}
	if err := postgres.ValidateSchemaName(schema); err != nil {
		return nil, fmt.Errorf("httpapi: idempotency: schema: %w", err)
	}
	return &Idempotency{db: db, table: postgres.QuoteIdentifier(schema) + "." + postgres.QuoteIdentifier(IdempotencyKeysTable)}, nil
}

// storedResult is a command's response as stored under its key.
type storedResult struct {
	RequestHash string
	Status      int
	Body        []byte
}

// pendingKey travels in the command's context to the append hook.
type pendingKey struct {
	key, hash string
	status    int
	// render builds the response body from the appended records.
	render func(records []eventstore.Record) ([]byte, error)
	// body is what render returned, set by the hook.
	body []byte
}

type pendingKeyCtx struct{}

func withPendingKey(ctx context.Context, p *pendingKey) context.Context {
	return context.WithValue(ctx, pendingKeyCtx{}, p)
}

// errKeyTaken is returned by the hook when a concurrent request with the
// same key committed first; the append rolls back and the handler replays
// the stored result.
var errKeyTaken = errors.New("idempotency key already used")

// AppendHook returns the hook to put in postgres.Config.AppendHooks. For an
// append whose ctx carries a pending key (a command with an Idempotency-Key
// header), it inserts the key, the request's hash and the response into the
// keys table in the append's transaction. If another request recorded the
// key first, the hook fails the append (nothing is written) with an error the
// API recognises, and the API answers with the stored result instead.
// Appends without a key pass through.
func (i *Idempotency) AppendHook() postgres.AppendHook {
	return func(ctx context.Context, tx postgres.Tx, records []eventstore.Record) error {
		p, _ := ctx.Value(pendingKeyCtx{}).(*pendingKey)
		if p == nil {
			return nil
		}
		body, err := p.render(records)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO `+i.table+` (idempotency_key, request_hash, status, body)
			VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING`, p.key, p.hash, p.status, string(body))
		if err != nil {
			return fmt.Errorf("record idempotency key: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errKeyTaken
		}
		p.body = body
		return nil
	}
}

// lookup returns the result stored under key, if any.
func (i *Idempotency) lookup(ctx context.Context, key string) (storedResult, bool, error) {
	var (
		r    storedResult
		body string
	)
	err := i.db.QueryRowContext(ctx, `SELECT request_hash, status, body FROM `+i.table+` WHERE idempotency_key = $1`, key).
		Scan(&r.RequestHash, &r.Status, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return storedResult{}, false, nil
	}
	if err != nil {
		return storedResult{}, false, fmt.Errorf("httpapi: look up idempotency key: %w", err)
	}
	r.Body = []byte(body)
	return r, true, nil
}

// DeleteOlderThan deletes the keys recorded before now-age and returns how
// many it deleted: run it periodically (e.g. daily with 24h) to bound the
// table; a key deleted is a key a client may reuse. ctx bounds the query.
func (i *Idempotency) DeleteOlderThan(ctx context.Context, age time.Duration) (int64, error) {
	res, err := i.db.ExecContext(ctx, `DELETE FROM `+i.table+` WHERE created_at < now() - make_interval(secs => $1)`, age.Seconds())
	if err != nil {
		return 0, fmt.Errorf("httpapi: delete idempotency keys: %w", err)
	}
	return res.RowsAffected()
}

// requestHash identifies a request for an idempotency key: its method, path,
// If-Match header and body.
func requestHash(method, path, ifMatch string, body []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", method, path, ifMatch)
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// validKey reports whether an Idempotency-Key header is usable: 1 to
// MaxIdempotencyKeyLength printable ASCII characters.
func validKey(k string) bool {
	if k == "" || len(k) > MaxIdempotencyKeyLength {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}
