// Package esox wires the parts of esox for a service: the PostgreSQL event
// store, a projector runner for its read models, a forwarder to its broker,
// and its own components (a broker consumer, a process manager, its HTTP
// server), migrated together and run under one Run with graceful shutdown
// and readiness.
//
//	app, err := esox.New(db, registry, esox.Config{
//		Schema:      "orders",
//		Projections: []projector.Projection{ordersView, customerStats},
//		Publisher:   natsPublisher, // optional: the events table is the outbox
//		Inboxes:     []*projector.Inbox{shipmentsInbox}, // migrated with the rest
//		Components: []esox.Component{
//			// a Watermill router applying messages through the inbox
//			{Name: "shipments", Run: router.Run, Ready: router.Running()},
//			esox.HTTPServer(srv, ln, 10*time.Second),
//		},
//	})
//	if err != nil { … }
//	err = app.Run(ctx) // migrates, runs until ctx is cancelled, stops in order
//
// and in a handler, for read-your-writes:
//
//	res, err := orders.Update(ctx, id, func(o *Order) error { return o.Pay(amount, currency) })
//	err = app.WaitFor(ctx, res.LastPosition)
//
// # Start and stop
//
// Run starts the front components (Component.Front: the HTTP server of
// HTTPServer) first, so that a /readyz handler answers 503 (App.Ready not
// closed) while the migrations run; then it migrates everything (the store,
// the runner and its projections, the forwarder's offsets, the inboxes,
// each component's Migrate), starts the runner and the other components,
// waits until each component's Ready is closed (its broker subscription
// exists), starts the forwarder, and closes App.Ready.
//
// When ctx is cancelled (SIGTERM), Run reopens Ready and stops the parts one
// after the other: the front components (the HTTP server stops accepting
// requests and finishes those in flight, which can still append and wait
// for their read models), the forwarder (a publish in flight ends before the
// consumers it feeds stop), the other components in reverse order, and the
// runner last. A part that fails stops the App the same way, and Run
// returns its error.
//
// Each part stays usable on its own (eventstore/postgres, projector,
// forwarder); App only builds them from one Config and runs them together.
//
// After a logical restore (pg_dump/pg_restore into another cluster),
// ResetAfterRestore renumbers the restored events and moves every
// checkpoint and offset with them, before the service starts again (the
// esox command's "restore reset"; see docs/operations.md).
// Config.TracerProvider and Config.MeterProvider reach every part: esox
// reports through the OpenTelemetry API, the application installs the SDK
// (docs/observability.md).
// The guarantees each part keeps are in docs/guarantees.md; the tutorial in
// docs/tutorial.md builds a service with App from an empty module, and
// examples/ordering is the reference service.
package esox
