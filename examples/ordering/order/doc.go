// Package order is the domain of the ordering example: the Order aggregate,
// its events and the errors its commands return.
//
// An Order is placed with lines (SKU, quantity, unit price in cents) in one
// currency, may gain and lose lines and get one percentage discount while it
// is open, is paid with exactly its total, then shipped; it may be cancelled
// until it ships. Every command checks its invariants before it raises an
// event; a refused command raises nothing:
//
//   - a line's quantity is > 0 and its unit price ≥ 0 (*ValidationError);
//   - a line's amount and the order's subtotal are at most MaxSubtotalCents
//     (*ValidationError for a line or for the lines of Place,
//     ErrSubtotalTooLarge for a line AddLine would push over it);
//   - an order has one currency: a line or payment in another is refused
//     (ErrCurrencyMismatch);
//   - an empty or cancelled order cannot be paid (ErrOrderEmpty,
//     ErrOrderCancelled), and a payment must equal the total
//     (ErrPaymentMismatch);
//   - an order ships only once paid (ErrNotPaid);
//   - nothing changes after shipping or cancelling (ErrOrderShipped,
//     ErrOrderCancelled), and the lines and discount are frozen once paid
//     (ErrOrderPaid).
//
// Malformed input (an empty customer ID, a bad currency code, a quantity of
// zero) is a *ValidationError matching ErrInvalid; a broken business rule
// is a *RuleError whose Code is stable, so the HTTP API maps the two to 400
// and 409 once.
//
// Register the events with Register before storing orders.
package order
