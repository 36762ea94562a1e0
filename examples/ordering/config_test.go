package main

import (
	"bytes"
	"encoding/hex"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8080" || c.DatabaseURL != DefaultDatabaseURL || c.Schema != "ordering" || c.Broker != "gochannel" ||
		c.LogLevel != slog.LevelInfo || c.LogFormat != "text" || c.WaitTimeout != 5*time.Second || !c.DevKEK || !bytes.Equal(c.KEK, devKEK) {
		t.Errorf("defaults: %+v", c)
	}
	kek := strings.Repeat("ab", 32)
	if c, err := parseConfig(nil, env(map[string]string{"KEY_ENCRYPTION_KEY": kek}), io.Discard); err != nil || c.DevKEK || hex.EncodeToString(c.KEK) != kek {
		t.Errorf("KEY_ENCRYPTION_KEY: %+v, %v", c, err)
	}
	for _, bad := range []string{"abc", strings.Repeat("ab", 31), strings.Repeat("zz", 32)} {
		if _, err := parseConfig(nil, env(map[string]string{"KEY_ENCRYPTION_KEY": bad}), io.Discard); err == nil {
			t.Errorf("KEY_ENCRYPTION_KEY %q: no error", bad)
		}
	}

	e := env(map[string]string{"ADDR": "127.0.0.1:9000", "DATABASE_URL": "postgres://x/y", "SCHEMA": "shop", "BROKER_URL": "amqp://guest:guest@h:5672/", "LOG_LEVEL": "debug", "WAIT_TIMEOUT": "2s"})
	c, err = parseConfig(nil, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9000" || c.DatabaseURL != "postgres://x/y" || c.Schema != "shop" || c.Broker != "amqp://guest:guest@h:5672/" || c.LogLevel != slog.LevelDebug || c.WaitTimeout != 2*time.Second {
		t.Errorf("from the environment: %+v", c)
	}

	c, err = parseConfig([]string{"-addr", ":1", "-database-url", "postgres://flag/db", "-broker", "nats://h:4222"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":1" || c.DatabaseURL != "postgres://flag/db" || c.Broker != "nats://h:4222" || c.Schema != "shop" {
		t.Errorf("flags over the environment: %+v", c)
	}

	for _, args := range [][]string{
		{"-broker", "kafka://h"}, {"-log-level", "loud"}, {"-log-format", "xml"}, {"-wait-timeout", "0s"},
		{"-wait-timeout", "soon"}, {"extra"}, {"-nope"},
	} {
		if _, err := parseConfig(args, env(nil), io.Discard); err == nil {
			t.Errorf("parseConfig(%q): no error", args)
		}
	}
}

func TestBrokerKind(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "gochannel", "gochannel": "gochannel", "amqp://guest:secret@h:5672/": "amqp", "amqps://h": "amqp", "nats://h:4222": "nats"} {
		kind, redacted, err := brokerKind(in)
		if err != nil || kind != want {
			t.Errorf("brokerKind(%q) = %q, %v; want %q", in, kind, err, want)
		}
		if in == "amqp://guest:secret@h:5672/" && redacted != "amqp://guest:xxxxx@h:5672/" {
			t.Errorf("redacted %q", redacted)
		}
	}
	if _, _, err := brokerKind("kafka://h"); err == nil {
		t.Error("kafka: no error")
	}
}

// TestWriteTimeoutCoversWait: the server never cuts off a command that is
// still waiting for the read models (WriteTimeout was a fixed 30 s, below a
// -wait-timeout of 60 s).
func TestWriteTimeoutCoversWait(t *testing.T) {
	t.Parallel()
	for _, wait := range []time.Duration{time.Millisecond, 5 * time.Second, 30 * time.Second, time.Minute, time.Hour} {
		if wt := writeTimeout(wait); wt < wait+10*time.Second {
			t.Errorf("writeTimeout(%v) = %v, want at least the wait plus 10 s", wait, wt)
		}
	}
}
