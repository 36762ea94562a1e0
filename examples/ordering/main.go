// Command ordering is esox's reference service: an order domain behind a
// JSON HTTP API, read models kept by projector projections, events relayed
// to a broker by the forwarder, and a downstream shipping consumer that
// records one shipment per paid order from the broker.
//
//	go run ./examples/ordering            # or: make run
//
// Configuration, flags first, then the environment, then the default:
//
//	-addr          ADDR           127.0.0.1:8080
//	-database-url  DATABASE_URL   postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//	-schema        SCHEMA         ordering
//	-broker        BROKER_URL     gochannel (in-process); amqp://… for RabbitMQ, nats://… for NATS JetStream
//	-topic-prefix  TOPIC_PREFIX   "" (the topic of order events is <prefix>order)
//	-log-level     LOG_LEVEL      info (debug, info, warn, error)
//	-log-format    LOG_FORMAT     text (text or json)
//	-wait-timeout  WAIT_TIMEOUT   5s (how long a command waits for the read models)
//	               KEY_ENCRYPTION_KEY  64 hex digits: the key-encryption key that wraps the customers'
//	                                   data keys (docs/compliance.md); unset: a fixed development key,
//	                                   with a warning. Never a flag: flags show in ps.
//
// Telemetry: GET /metrics serves Prometheus metrics; traces are exported as
// the standard variables say (OTEL_TRACES_EXPORTER=otlp|console|none, or an
// OTEL_EXPORTER_OTLP_ENDPOINT; none by default), see telemetry.go and
// docs/observability.md.
//
//	ordering [serve] [flags]                 serve the API (the default)
//
// Operations (rebuilding a projection, retrying dead letters, moving a
// consumer group, the reset after a logical restore, …) are the esox
// command's: see docs/operations.md.
//
// It wires everything with one esox.App (app.go): the HTTP server answers
// from the start, /readyz with 503 until the App has applied every migration
// (event store, projector, forwarder, inbox, idempotency keys, shipments)
// and started the projections, the shipping consumer and the forwarder. It
// serves until SIGINT or SIGTERM, when it stops accepting requests, finishes
// those in flight, stops the forwarder, then the consumer, then the
// projections, and exits 0. See examples/ordering/API.md for the HTTP API
// and docs/getting-started.md for a walk-through.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// DefaultDatabaseURL is the database when neither -database-url nor
// DATABASE_URL is set: the local server scripts/dev-db.sh uses.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func main() {
	cmd, args := "serve", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if cmd != "serve" {
		fmt.Fprintf(os.Stderr, "ordering: unknown command %q (want serve; operations such as the reset after a restore are the esox command's)\n", cmd)
		os.Exit(2)
	}
	cfg, err := parseConfig(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ordering:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ordering:", err)
		os.Exit(1)
	}
}

// config is the service's configuration.
type config struct {
	Addr        string
	DatabaseURL string
	Schema      string
	Broker      string
	TopicPrefix string
	LogLevel    slog.Level
	LogFormat   string
	WaitTimeout time.Duration
	// KEK is the key-encryption key (KEY_ENCRYPTION_KEY); DevKEK reports
	// that it was not set and the development key is used.
	KEK    []byte
	DevKEK bool
}

// devKEK is the key-encryption key when KEY_ENCRYPTION_KEY is not set:
// fixed, so that a development database stays readable across restarts,
// and public, so never for real personal data.
var devKEK = []byte("esox ordering development KEK!!!")

// parseConfig reads flags, falling back to the environment, then defaults.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("ordering", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var level, wait string
	fs.StringVar(&c.Addr, "addr", env("ADDR", "127.0.0.1:8080"), "listen address (env ADDR)")
	// The URL may hold a password: -h shows the built-in default only.
	fs.StringVar(&c.DatabaseURL, "database-url", DefaultDatabaseURL, "PostgreSQL URL (env DATABASE_URL)")
	fs.StringVar(&c.Schema, "schema", env("SCHEMA", "ordering"), "PostgreSQL schema of every table (env SCHEMA)")
	fs.StringVar(&c.Broker, "broker", env("BROKER_URL", "gochannel"), "broker: gochannel, amqp://… (RabbitMQ) or nats://… (NATS JetStream) (env BROKER_URL)")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", env("TOPIC_PREFIX", ""), "prefix of broker topics (env TOPIC_PREFIX)")
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", env("LOG_FORMAT", "text"), "text or json (env LOG_FORMAT)")
	fs.StringVar(&wait, "wait-timeout", env("WAIT_TIMEOUT", "5s"), "how long a command waits for the read models (env WAIT_TIMEOUT)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ordering [serve] [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["database-url"] {
		c.DatabaseURL = env("DATABASE_URL", DefaultDatabaseURL)
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return config{}, fmt.Errorf("-log-level: %w", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return config{}, fmt.Errorf("-log-format: want text or json, got %q", c.LogFormat)
	}
	d, err := time.ParseDuration(wait)
	if err != nil || d <= 0 {
		return config{}, fmt.Errorf("-wait-timeout: want a positive duration such as 5s, got %q", wait)
	}
	c.WaitTimeout = d
	if _, _, err := brokerKind(c.Broker); err != nil {
		return config{}, fmt.Errorf("-broker: %w", err)
	}
	if k := getenv("KEY_ENCRYPTION_KEY"); k != "" {
		kek, err := hex.DecodeString(k)
		if err != nil || len(kek) != 32 {
			return config{}, errors.New("KEY_ENCRYPTION_KEY: want 64 hex digits (32 bytes)")
		}
		c.KEK = kek
	} else {
		c.KEK, c.DevKEK = devKEK, true
	}
	return c, nil
}
