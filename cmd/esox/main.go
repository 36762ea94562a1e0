// Command esox operates the PostgreSQL schema of an esox service: it plans
// and applies migrations, lists and reads streams, shows events, reads and
// follows the global feed, inspects and moves forwarder consumer groups,
// inspects, rebuilds, resumes, moves and skips projections, retries and
// discards dead letters, and resets the schema after a logical restore.
// Install it with
//
//	go install github.com/esox-go/esox/cmd/esox@latest
//
// and run esox --help. The commands are in package esoxcli, over the esox
// packages' exported operations; exit codes are listed there.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/esox-go/esox/cmd/esox/esoxcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := esoxcli.Main(ctx, os.Args[1:], esoxcli.StdIO())
	stop()
	os.Exit(code)
}
