package order

import (
	"context"
	"fmt"

	"github.com/esox-go/esox/eventstore"
)

// Forget erases customerID's personal data (docs/compliance.md): it
// destroys the customer's data key with sh, so that the Contact of every
// order they placed reads as empty from then on, everywhere (events,
// aggregates, rebuilt read models, consumers), and appends CustomerForgotten
// to the customer's stream, so that the read models drop the copies they
// hold now. Events are not rewritten: their hash chain stays valid. Who
// asked and why travel in ctx's metadata (eventstore.WithActor,
// WithReason). Forget may be retried: a customer forgotten already has no
// key left to destroy, and gets another CustomerForgotten.
//
// Errors: a *ValidationError for a bad customer ID; the key store's and
// the event store's, wrapped. ctx bounds both calls.
func Forget(ctx context.Context, store eventstore.Store, sh *eventstore.Shredder, customerID string) (eventstore.ForgetResult, eventstore.AppendResult, error) {
	if err := ValidCustomerID(customerID); err != nil {
		return eventstore.ForgetResult{}, eventstore.AppendResult{}, err
	}
	fr, err := sh.Forget(ctx, customerID)
	if err != nil {
		return eventstore.ForgetResult{}, eventstore.AppendResult{}, fmt.Errorf("order: forget %s: %w", customerID, err)
	}
	res, err := store.Append(ctx, eventstore.StreamID(CustomerCategory, customerID), eventstore.Any,
		[]eventstore.Event{{Data: CustomerForgotten{CustomerID: customerID, KeysDestroyed: len(fr.Keys)}}})
	if err != nil {
		return fr, eventstore.AppendResult{}, fmt.Errorf("order: forget %s: record it: %w", customerID, err)
	}
	return fr, res, nil
}
