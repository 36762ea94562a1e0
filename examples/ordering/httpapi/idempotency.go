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

// Idempotency stores command results under their Idempotency-Key,
// atomically with the command's events: a command with a key runs in one
// transaction that claims the key, appends the events through the
// Repository's Tx forms and stores the response under the key (see
// record), so a crash can never record a key without its events or events
// without their key. Safe for concurrent use.
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

// errKeyTaken is returned by record when another request with the same
// key committed first; nothing was written, and the API answers with the
// stored result instead.
var errKeyTaken = errors.New("idempotency key already used")

// pendingKey is a command's Idempotency-Key, the hash of its request and
// the status it answers with on success.
type pendingKey struct {
	key, hash string
	status    int
}

// record runs save in a new transaction that first claims p.key and, when
// save succeeds, stores its response body under the key before committing.
// save gets the transaction as a postgres.Tx, which cannot commit or roll
// back: record owns it.
//
// The claim is an INSERT of the key's row. A concurrent request with the
// same key that claimed it first holds that row until it ends, so this
// INSERT waits for it: if the other commits, the key is taken and record
// returns errKeyTaken, having run nothing; if it rolls back (its command was
// refused), this request claims the key and runs. A key is therefore
// stored if and only if its command's events are, and only one of several
// concurrent duplicates appends.
//
// Any error from save is returned as is, after the rollback; a conflict can
// be retried by running record again (the API does, with
// aggregate.Repository.Retry). ctx bounds the transaction.
func (i *Idempotency) record(ctx context.Context, p *pendingKey, save func(ctx context.Context, tx postgres.Tx) (body []byte, err error)) error {
	tx, err := i.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("httpapi: idempotency: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `INSERT INTO `+i.table+` (idempotency_key, request_hash, status, body)
		VALUES ($1, $2, $3, '') ON CONFLICT (idempotency_key) DO NOTHING`, p.key, p.hash, p.status)
	if err != nil {
		return fmt.Errorf("httpapi: idempotency: claim key: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("httpapi: idempotency: claim key: %w", err)
	} else if n == 0 {
		return errKeyTaken
	}
	body, err := save(ctx, postgres.NewTx(tx))
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+i.table+` SET body = $2 WHERE idempotency_key = $1`, p.key, string(body)); err != nil {
		return fmt.Errorf("httpapi: idempotency: store result: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("httpapi: idempotency: commit: %w", err)
	}
	return nil
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
