package postgres

import (
	"context"
	"database/sql"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// KeysComponent is the component under which KeyStore.Migrate records its
// migrations.
const KeysComponent = "keys"

// KeysTableDefault is the keys table used when KeyStoreConfig.Table is
// empty.
const KeysTableDefault = "esox_keys"

//go:embed keymigrations/*.up.sql
var embeddedKeyMigrations embed.FS

// KeyStoreConfig configures a KeyStore. The zero value means all defaults.
type KeyStoreConfig struct {
	// Schema holds the keys table. Defaults to SchemaDefault ("esox"). It
	// must pass ValidateSchemaName.
	Schema string
	// Table is the keys table's name. Defaults to KeysTableDefault.
	Table string
	// Logger receives the key store's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// KeyStore is the PostgreSQL eventstore.KeyStore: the wrapped data keys of
// subjects (docs/compliance.md) in one table, at most one live key per
// subject, a tombstone for each forgotten one. Put it in the events'
// database or, to back the keys up on their own terms, in another one.
// Create it with NewKeyStore and its table with Migrate. It runs on any
// *sqlx.DB (lib/pq or pgx) and sends only text parameters. Safe for
// concurrent use.
type KeyStore struct {
	db    *sqlx.DB
	cfg   KeyStoreConfig
	log   *slog.Logger
	table string // quoted, qualified
}

var _ eventstore.KeyStore = (*KeyStore)(nil)

// NewKeyStore returns a KeyStore on db. It does not touch the database;
// call Migrate first. Errors match eventstore.ErrInvalidArgument: a nil db
// or an invalid cfg, naming the field.
func NewKeyStore(db *sqlx.DB, cfg KeyStoreConfig) (*KeyStore, error) {
	if db == nil {
		return nil, fmt.Errorf("eventstore/postgres: key store: %w", &eventstore.InvalidArgumentError{Field: "db", Reason: "must not be nil"})
	}
	if cfg.Schema == "" {
		cfg.Schema = SchemaDefault
	}
	if cfg.Table == "" {
		cfg.Table = KeysTableDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := ValidateSchemaName(cfg.Schema); err != nil {
		return nil, fmt.Errorf("eventstore/postgres: key store: invalid config: Schema: %w", err)
	}
	if err := ValidateIdentifier(cfg.Table); err != nil || cfg.Table == migrationsTable {
		if err == nil {
			err = &eventstore.InvalidArgumentError{Field: "Table", Reason: fmt.Sprintf("%q is the migrations table", cfg.Table)}
		}
		return nil, fmt.Errorf("eventstore/postgres: key store: invalid config: Table: %w", err)
	}
	return &KeyStore{db: db, cfg: cfg, log: cfg.Logger.With("component", "eventstore/postgres/keys"),
		table: QuoteIdentifier(cfg.Schema) + "." + QuoteIdentifier(cfg.Table)}, nil
}

// Migrations returns the key store's migration set (component
// KeysComponent, with the table name when it is not the default). Safe for
// concurrent use.
func (k *KeyStore) Migrations() MigrationParams { return keyMigrations(k.cfg.Schema, k.cfg.Table) }

// keyMigrations is the migration set of a key store with table in schema
// (both valid identifiers).
func keyMigrations(schema, table string) MigrationParams {
	files, err := fs.Sub(embeddedKeyMigrations, "keymigrations")
	if err != nil {
		panic("eventstore/postgres: embedded key migrations: " + err.Error()) // a valid path
	}
	component := KeysComponent
	if table != KeysTableDefault {
		component += ":" + table
	}
	return MigrationParams{Schema: schema, Component: component, Files: files, Data: map[string]string{
		"Keys":               QuoteIdentifier(schema) + "." + QuoteIdentifier(table),
		"KeysForgottenCheck": QuoteIdentifier(constraintName(table, "forgotten_check")),
		"KeysLiveIndex":      QuoteIdentifier(constraintName(table, "live_subject_key")),
	}}
}

// KeyStoreMigrations returns the migration set of a key store with the
// default table (KeysTableDefault) in schema: what NewKeyStore(db,
// KeyStoreConfig{Schema: schema}).Migrations() returns, for a caller
// without a KeyStore (the esox command). A bad schema name returns an error
// matching eventstore.ErrInvalidArgument.
func KeyStoreMigrations(schema string) (MigrationParams, error) {
	if err := ValidateSchemaName(schema); err != nil {
		return MigrationParams{}, fmt.Errorf("eventstore/postgres: key store: %w", err)
	}
	return keyMigrations(schema, KeysTableDefault), nil
}

// Migrate creates the keys table (ApplyMigrations with Migrations):
// idempotent, safe from several processes at once. ctx bounds the run.
func (k *KeyStore) Migrate(ctx context.Context) (MigrateResult, error) {
	res, err := ApplyMigrations(ctx, k.db, k.Migrations())
	if err != nil {
		return res, fmt.Errorf("eventstore/postgres: key store: %w", err)
	}
	return res, nil
}

const keyColumns = `key_id::text, subject, wrapped, created_at, forgotten_at`

// scanKeys reads rows of keyColumns.
func scanKeys(rows *sql.Rows) ([]eventstore.WrappedKey, error) {
	defer rows.Close()
	var out []eventstore.WrappedKey
	for rows.Next() {
		var (
			w         eventstore.WrappedKey
			id        string
			forgotten sql.NullTime
		)
		if err := rows.Scan(&id, &w.Subject, &w.Wrapped, &w.CreatedAt, &forgotten); err != nil {
			return nil, err
		}
		var err error
		if w.ID, err = uuid.Parse(id); err != nil {
			return nil, err
		}
		w.CreatedAt = w.CreatedAt.UTC()
		if forgotten.Valid {
			w.ForgottenAt, w.Wrapped = forgotten.Time.UTC(), nil
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// SubjectKeys returns the live key of each of subjects that has one. ctx
// bounds the query; database errors are wrapped.
func (k *KeyStore) SubjectKeys(ctx context.Context, subjects []string) ([]eventstore.WrappedKey, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM `+k.table+` WHERE subject = ANY($1::text[]) AND wrapped IS NOT NULL`, arrayLiteral(subjects))
	if err != nil {
		return nil, translate(ctx, "subject keys", err)
	}
	out, err := scanKeys(rows)
	if err != nil {
		return nil, translate(ctx, "subject keys", err)
	}
	return out, nil
}

// CreateKeys stores keys for subjects without a live key (a subject's
// existing live key wins: ON CONFLICT DO NOTHING on the partial unique
// index), then returns the live key of each of their subjects, read after
// the insert committed. Errors: an *eventstore.InvalidArgumentError for a
// key without an ID, a subject or a wrapped key; database errors wrapped.
// ctx bounds the statements.
func (k *KeyStore) CreateKeys(ctx context.Context, keys []eventstore.WrappedKey) ([]eventstore.WrappedKey, error) {
	ids, subjects, wrapped := make([]string, len(keys)), make([]string, len(keys)), make([]string, len(keys))
	for i, w := range keys {
		if w.ID == uuid.Nil || w.Subject == "" || len(w.Wrapped) == 0 {
			return nil, fmt.Errorf("eventstore/postgres: create keys: %w", &eventstore.InvalidArgumentError{Field: "keys", Reason: "each needs an ID, a subject and a wrapped key"})
		}
		ids[i], subjects[i], wrapped[i] = w.ID.String(), w.Subject, hex.EncodeToString(w.Wrapped)
	}
	if _, err := k.db.ExecContext(ctx, `INSERT INTO `+k.table+` (key_id, subject, wrapped)
SELECT n.id::uuid, n.subject, decode(n.wrapped, 'hex') FROM unnest($1::text[], $2::text[], $3::text[]) AS n(id, subject, wrapped)
ON CONFLICT (subject) WHERE wrapped IS NOT NULL DO NOTHING`, arrayLiteral(ids), arrayLiteral(subjects), arrayLiteral(wrapped)); err != nil {
		return nil, translate(ctx, "create keys", err)
	}
	return k.SubjectKeys(ctx, subjects)
}

// Keys returns the keys with the given IDs, forgotten ones with Wrapped
// nil; IDs never stored are left out. ctx bounds the query; database
// errors are wrapped.
func (k *KeyStore) Keys(ctx context.Context, ids []uuid.UUID) ([]eventstore.WrappedKey, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM `+k.table+` WHERE key_id = ANY($1::uuid[])`, uuidArray(ids))
	if err != nil {
		return nil, translate(ctx, "keys", err)
	}
	out, err := scanKeys(rows)
	if err != nil {
		return nil, translate(ctx, "keys", err)
	}
	return out, nil
}

// Forget destroys the wrapped key of subject's live key (the row stays, as
// a tombstone with forgotten_at set) and returns its ID; none when the
// subject has no live key. The wrapped bytes stay in PostgreSQL's WAL, its
// archives and backups, and in the table's dead rows until VACUUM: they are
// useless without the key-encryption key, which is why docs/compliance.md
// rotates it. ctx bounds the statement; database errors are wrapped.
func (k *KeyStore) Forget(ctx context.Context, subject string) ([]uuid.UUID, error) {
	rows, err := k.db.QueryContext(ctx, `UPDATE `+k.table+` SET wrapped = NULL, forgotten_at = now()
WHERE subject = $1 AND wrapped IS NOT NULL RETURNING key_id::text`, subject)
	if err != nil {
		return nil, translate(ctx, "forget", err)
	}
	defer rows.Close()
	var out []uuid.UUID
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, translate(ctx, "forget", err)
		}
		u, err := uuid.Parse(id)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(ctx, "forget", err)
	}
	if len(out) > 0 {
		k.log.InfoContext(ctx, "forgot subject", "keys", len(out))
	}
	return out, nil
}

// rewrapBatch is how many keys Rewrap reads per query.
const rewrapBatch = 500

// Rewrap re-wraps every live key with kek: it unwraps each with kek and
// wraps it again, so that a key-encryption key rotation (a KMS key
// version, or a LocalKeyEncrypter holding the old key as retired) leaves
// no key wrapped by the old one; then the old one can be destroyed, which
// also makes the copies of forgotten keys in backups and WAL archives
// useless (docs/compliance.md). It returns how many keys it re-wrapped. A
// key forgotten meanwhile is left alone. It works in batches, each key
// updated on its own, so it can run while the service runs and be run
// again after a failure. ctx bounds the whole run; errors are kek's and
// the database's, wrapped.
func (k *KeyStore) Rewrap(ctx context.Context, kek eventstore.KeyEncrypter) (int, error) {
	if kek == nil {
		return 0, fmt.Errorf("eventstore/postgres: rewrap: %w", &eventstore.InvalidArgumentError{Field: "kek", Reason: "must not be nil"})
	}
	n := 0
	after := uuid.Nil.String()
	for {
		var batch []struct {
			ID      string `db:"key_id"`
			Wrapped []byte `db:"wrapped"`
		}
		if err := k.db.SelectContext(ctx, &batch, `SELECT key_id::text AS key_id, wrapped FROM `+k.table+`
WHERE wrapped IS NOT NULL AND key_id > $1::uuid ORDER BY key_id LIMIT $2`, after, rewrapBatch); err != nil {
			return n, translate(ctx, "rewrap", err)
		}
		for _, row := range batch {
			key, err := kek.UnwrapKey(ctx, row.Wrapped)
			if err != nil {
				return n, fmt.Errorf("eventstore/postgres: rewrap key %s: %w", row.ID, err)
			}
			again, err := kek.WrapKey(ctx, key)
			clear(key)
			if err != nil {
				return n, fmt.Errorf("eventstore/postgres: rewrap key %s: %w", row.ID, err)
			}
			res, err := k.db.ExecContext(ctx, `UPDATE `+k.table+` SET wrapped = decode($2, 'hex') WHERE key_id = $1::uuid AND wrapped = decode($3, 'hex')`,
				row.ID, hex.EncodeToString(again), hex.EncodeToString(row.Wrapped))
			if err != nil {
				return n, translate(ctx, "rewrap", err)
			}
			if m, _ := res.RowsAffected(); m == 1 {
				n++
			}
		}
		if len(batch) < rewrapBatch {
			k.log.InfoContext(ctx, "rewrapped data keys", "keys", n)
			return n, nil
		}
		after = batch[len(batch)-1].ID
	}
}

// KeyStats counts a key store's keys, for an operator.
type KeyStats struct {
	// Live keys can decrypt; Forgotten are tombstones.
	Live, Forgotten int64
	// LastForgotten is when the last key was forgotten (zero if none).
	LastForgotten time.Time
}

// Stats counts the keys. ctx bounds the query.
func (k *KeyStore) Stats(ctx context.Context) (KeyStats, error) {
	var (
		st   KeyStats
		last sql.NullTime
	)
	err := k.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE wrapped IS NOT NULL), count(*) FILTER (WHERE wrapped IS NULL), max(forgotten_at) FROM `+k.table).
		Scan(&st.Live, &st.Forgotten, &last)
	if err != nil {
		return KeyStats{}, translate(ctx, "key stats", err)
	}
	if last.Valid {
		st.LastForgotten = last.Time.UTC()
	}
	return st, nil
}
