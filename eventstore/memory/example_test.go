package memory_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int64  `json:"total"`
}

type OrderPaid struct {
	OrderID string `json:"order_id"`
}

func ExampleStore() {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[OrderPlaced](reg, "order_placed")
	eventstore.MustRegister[OrderPaid](reg, "order_paid")
	store := memory.New(reg)

	ctx := eventstore.WithCorrelationID(context.Background(), "req-1")
	res, err := store.Append(ctx, "order-42", eventstore.NoStream, []eventstore.Event{
		{Data: OrderPlaced{OrderID: "42", Total: 1250}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("appended version", res.LastVersion)

	// A second writer that still believes the stream is new loses.
	_, err = store.Append(ctx, "order-42", eventstore.NoStream, []eventstore.Event{{Data: OrderPaid{OrderID: "42"}}})
	var conflict *eventstore.ConcurrencyError
	if errors.As(err, &conflict) {
		fmt.Println("conflict: actual version", conflict.Actual)
	}

	// Retrying with the version it read wins.
	if _, err := store.Append(ctx, "order-42", eventstore.Exact(res.LastVersion), []eventstore.Event{{Data: OrderPaid{OrderID: "42"}}}); err != nil {
		panic(err)
	}
	for r, err := range store.ReadStream(ctx, "order-42", 1) {
		if err != nil {
			panic(err)
		}
		fmt.Printf("v%d %s %+v correlation_id=%s\n", r.StreamVersion, r.Type, r.Data, r.Metadata.CorrelationID)
	}
	// Output:
	// appended version 1
	// conflict: actual version 1
	// v1 order_placed {OrderID:42 Total:1250} correlation_id=req-1
	// v2 order_paid {OrderID:42} correlation_id=req-1
}
