// Package esox wires the parts of esox for a service: the PostgreSQL event
// store, a projector runner for its read models, a forwarder to its broker,
// and its own components (a broker consumer, a process manager), migrated
// together and run under one Run with graceful shutdown and readiness.
//
//	app, err := esox.New(db, registry, esox.Config{
//		Schema:      "orders",
//		Projections: []projector.Projection{ordersView, customerStats},
//		Publisher:   rabbitPublisher, // optional: the events table is the outbox
//	})
//	if err != nil { … }
//	go app.Run(ctx) // migrates, then runs until ctx is cancelled
//	<-app.Ready()
//	res, err := app.Store().Append(ctx, "order-7f3c", eventstore.NoStream, events)
//	err = app.WaitFor(ctx, res.LastPosition) // read your writes
//
// Each part stays usable on its own (eventstore/postgres, projector,
// forwarder); App only builds them from one Config and runs them together.
// Config.TracerProvider and Config.MeterProvider reach every part: esox
// reports through the OpenTelemetry API, the application installs the SDK
// (docs/observability.md).
// The guarantees each part keeps are in docs/guarantees.md; the tutorial in
// docs/tutorial.md builds a service with App from an empty module.
package esox
