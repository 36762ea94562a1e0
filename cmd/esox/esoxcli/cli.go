// Package esoxcli is the esox command: a thin shell over esox's operations
// (migrations, streams and the feed, forwarder consumer groups,
// projections, dead letters, the reset after a logical restore, hash chain
// verification and seals), which are
// exported, tested functions of the esox packages. cmd/esox's main calls
// Main; a service may embed the command tree in its own binary the same
// way.
//
// The command reads raw events (payloads as stored) and needs none of the
// application's Go types. It never prints the database URL, which may hold
// a password.
//
// # Exit codes
//
//	0    success
//	1    failure (the database refused or failed, or anything unexpected)
//	2    usage: an unknown command or flag, a missing or extra argument, a
//	     bad value (a position that is not transaction_id/position, an
//	     invalid schema name, stream ID or event ID), no database URL
//	3    not found: the stream, event, consumer group, projection (version,
//	     partition) or dead letter does not exist, or the schema has no esox
//	     tables
//	4    refused: a leader is running (stop every instance of the service
//	     first)
//	5    not confirmed: a destructive command without --yes, refused
//	     without a terminal to ask on, or declined at the prompt
//	6    broken: verify found a broken hash chain, or events that do not
//	     match the seal given
//	130  interrupted (SIGINT or SIGTERM) before the command finished
//
// # Stability
//
// The command names, flags, exit codes and the field names of --json
// output are the stable interface; the human tables may change.
package esoxcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// Exit codes of Main; see the package doc.
const (
	ExitOK            = 0
	ExitError         = 1
	ExitUsage         = 2
	ExitNotFound      = 3
	ExitLeaderRunning = 4
	ExitNotConfirmed  = 5
	ExitBroken        = 6
	ExitInterrupted   = 130
)

// Environment variables the command reads.
const (
	// EnvDatabaseURL is the database URL when --database-url is not given.
	EnvDatabaseURL = "DATABASE_URL"
	// EnvSchema is the schema when --schema is not given.
	EnvSchema = "ESOX_SCHEMA"
)

// IO is where the command reads and writes. Terminal checks (the
// confirmation prompt, the progress bar) look at Stdin and Stderr when
// they are *os.File.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// StdIO returns the process's standard streams.
func StdIO() IO { return IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr} }

// Main runs the esox command with args (without the program name) and
// returns its exit code (see the package doc). ctx ends the command: cancel
// it on SIGINT or SIGTERM (cmd/esox does), and a command in progress stops
// with ExitInterrupted (feed follow stops with ExitOK). Errors are printed
// to io.Stderr, results to io.Stdout.
func Main(ctx context.Context, args []string, io IO) int {
	e := &env{io: io}
	root := e.rootCommand()
	root.SetArgs(args)
	root.SetIn(io.Stdin)
	root.SetOut(io.Stdout)
	root.SetErr(io.Stderr)
	err := root.ExecuteContext(ctx)
	e.close()
	if err == nil {
		return ExitOK
	}
	code := e.exitCode(ctx, err)
	msg := redact(err.Error(), e.databaseURL())
	if e.timeout > 0 && errors.Is(err, context.DeadlineExceeded) {
		msg += fmt.Sprintf(" (--timeout %s ran out)", e.timeout)
	}
	fmt.Fprintln(io.Stderr, "esox: "+msg)
	if code == ExitUsage && !e.started {
		fmt.Fprintln(io.Stderr, "Run 'esox --help' for usage.")
	}
	return code
}

// env is one run of the command: its flags, streams and connection.
type env struct {
	io IO

	flagDatabaseURL string
	flagSchema      string
	json            bool
	yes             bool
	timeout         time.Duration

	started bool // the command's own code ran (flags and args were accepted)
	cancel  context.CancelFunc
	db      *sqlx.DB
	store   *postgres.Store
}

// usageError is a bad flag, argument or value.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// notFoundError is something asked for that does not exist.
type notFoundError struct{ msg string }

func (e notFoundError) Error() string { return e.msg }

// notConfirmedError is a destructive command that was not confirmed.
type notConfirmedError struct{ msg string }

func (e notConfirmedError) Error() string { return e.msg }

// exitCode classifies err.
func (e *env) exitCode(ctx context.Context, err error) int {
	var usage usageError
	var nf notFoundError
	var nc notConfirmedError
	var broken brokenError
	switch {
	case !e.started, errors.As(err, &usage), errors.Is(err, eventstore.ErrInvalidArgument), errors.Is(err, eventstore.ErrInvalidStreamID):
		return ExitUsage
	case errors.As(err, &nf), errors.Is(err, forwarder.ErrGroupNotFound), errors.Is(err, eventstore.ErrStreamNotFound),
		errors.Is(err, projector.ErrProjectionNotFound), errors.Is(err, projector.ErrDeadLetterNotFound):
		return ExitNotFound
	case errors.Is(err, forwarder.ErrForwarderRunning), errors.Is(err, esox.ErrLeaderRunning):
		return ExitLeaderRunning
	case errors.As(err, &nc):
		return ExitNotConfirmed
	case errors.As(err, &broken):
		return ExitBroken
	case ctx.Err() != nil:
		return ExitInterrupted
	}
	return ExitError
}

func (e *env) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "esox",
		Short: "Operate an esox event store: migrations, streams, the feed, forwarders, projections, verification",
		Long: `esox operates the PostgreSQL schema of an esox service without the
service's code: it plans and applies migrations, lists and reads streams,
shows events, reads and follows the global feed, inspects and moves
forwarder consumer groups, inspects, rebuilds, resumes, moves and skips
projections, retries and discards dead letters, resets the schema after a
logical restore, and verifies and seals the events' hash chains. What needs
the service's code (a rebuild's Reset, a retry's handler) is a request the
service's leader performs while it runs.

The database comes from --database-url or $DATABASE_URL (a postgres:// URL
or key=value pairs); it is never printed. --schema (or $ESOX_SCHEMA) names
the schema holding the service's tables.

Exit codes: 0 ok, 1 failure, 2 usage (bad command, flag or value),
3 not found, 4 refused because a leader is running, 5 not confirmed,
6 broken chain or seal mismatch, 130 interrupted.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			e.started = true
			if e.timeout < 0 {
				return usagef("--timeout must not be negative, got %s", e.timeout)
			}
			if e.timeout > 0 {
				ctx, cancel := context.WithTimeout(cmd.Context(), e.timeout)
				e.cancel = cancel
				cmd.SetContext(ctx)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&e.flagDatabaseURL, "database-url", "", "PostgreSQL URL or key=value DSN (default $"+EnvDatabaseURL+")")
	pf.StringVar(&e.flagSchema, "schema", "", "schema of the service's tables (default $"+EnvSchema+", else "+postgres.SchemaDefault+")")
	pf.BoolVar(&e.json, "json", false, "print JSON (stable snake_case fields) instead of tables")
	pf.BoolVarP(&e.yes, "yes", "y", false, "confirm destructive commands without asking")
	pf.DurationVar(&e.timeout, "timeout", 0, "give up after this long, e.g. 30s (0: no limit)")

	root.AddGroup(&cobra.Group{ID: "ops", Title: "Commands:"})
	for _, c := range []*cobra.Command{e.migrateCommand(), e.streamsCommand(), e.streamCommand(), e.eventCommand(), e.feedCommand(), e.forwarderCommand(),
		e.projectionsCommand(), e.projectionCommand(), e.deadLettersCommand(), e.restoreCommand(), e.verifyCommand(), e.sealCommand(), e.versionCommand()} {
		c.GroupID = "ops"
		root.AddCommand(c)
	}
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		refuseUnknownSubcommands(c)
	}
	return root
}

// refuseUnknownSubcommands makes each command that only groups others (and
// c itself) fail with a usage error when given an unknown subcommand,
// rather than print its help and succeed as cobra does; without
// arguments it prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	if c.Runnable() || !c.HasSubCommands() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q for %q; see '%s --help'", args[0], cmd.CommandPath(), cmd.CommandPath())
		}
		return cmd.Help()
	}
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
}

// schema returns the schema to work in.
func (e *env) schema() string {
	if e.flagSchema != "" {
		return e.flagSchema
	}
	if s := os.Getenv(EnvSchema); s != "" {
		return s
	}
	return postgres.SchemaDefault
}

// databaseURL returns the database URL to connect to ("" when none).
func (e *env) databaseURL() string {
	if e.flagDatabaseURL != "" {
		return e.flagDatabaseURL
	}
	return os.Getenv(EnvDatabaseURL)
}

// open connects to the database (once) and returns the schema's store. The
// store has no registered types: the command reads raw events.
func (e *env) open(ctx context.Context) (*postgres.Store, error) {
	if e.store != nil {
		return e.store, nil
	}
	dsn := e.databaseURL()
	if dsn == "" {
		return nil, usagef("no database: set $%s or pass --database-url", EnvDatabaseURL)
	}
	schema := e.schema()
	if err := postgres.ValidateSchemaName(schema); err != nil {
		return nil, usagef("--schema: %w", err)
	}
	cfg, err := pgx.ParseConfig(dsn) // its errors hide the password
	if err != nil {
		return nil, usagef("database URL: %w", err)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "esox" // how pg_stat_activity shows the command
	}
	db := sqlx.NewDb(stdlib.OpenDB(*cfg), "pgx")
	db.SetMaxOpenConns(4)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	store, err := postgres.New(db, eventstore.NewRegistry(), postgres.Config{Schema: schema, Logger: discardLogger()})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	e.db, e.store = db, store
	return store, nil
}

// openEvents is open, and refuses (not found) a schema without an events
// table: the wrong --schema, or a schema not migrated yet.
func (e *env) openEvents(ctx context.Context) (*postgres.Store, error) {
	store, err := e.open(ctx)
	if err != nil {
		return nil, err
	}
	var exists bool
	if err := e.db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, store.QualifiedEventsTable()).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up the events table: %w", err)
	}
	if !exists {
		return nil, notFoundError{fmt.Sprintf("schema %q has no esox events table: check --schema, or run 'esox migrate apply'", store.Schema())}
	}
	return store, nil
}

func (e *env) close() {
	if e.store != nil {
		_ = e.store.Close()
	}
	if e.db != nil {
		_ = e.db.Close()
	}
	if e.cancel != nil {
		e.cancel()
	}
}

// redact removes the password of dsn from msg, should a driver's message
// ever quote it.
func redact(msg, dsn string) string {
	var pw string
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		pw, _ = u.User.Password()
	}
	if pw == "" {
		for f := range strings.FieldsSeq(dsn) {
			if v, ok := strings.CutPrefix(f, "password="); ok {
				pw = strings.Trim(v, `'`)
			}
		}
	}
	if len(pw) < 3 {
		return msg
	}
	return strings.ReplaceAll(msg, pw, "xxxxx")
}
