package order

import (
	"errors"
	"fmt"
)

// ErrInvalid is matched by every *ValidationError.
var ErrInvalid = errors.New("order: invalid input")

// ValidationError reports malformed command input: Field names the input
// (e.g. "lines[0].quantity"), Reason says what is wrong. It matches
// ErrInvalid.
type ValidationError struct {
	Field  string
	Reason string
}

// Error returns "invalid <field>: <reason>".
func (e *ValidationError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason) }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// RuleError is a command refused because it would break one of the order's
// invariants. Code is stable and machine-readable (the HTTP API returns it as
// the error code); Message is for people. Two RuleErrors match with
// errors.Is when their codes are equal, so compare with the Err… sentinels:
//
//	if errors.Is(err, order.ErrPaymentMismatch) { ... }
type RuleError struct {
	Code    string
	Message string
}

// Error returns the message.
func (e *RuleError) Error() string { return e.Message }

// Is reports whether target is a *RuleError with the same Code.
func (e *RuleError) Is(target error) bool {
	t, ok := target.(*RuleError)
	return ok && t.Code == e.Code
}

// with returns a copy of the sentinel e with a more specific message.
func (e *RuleError) with(format string, args ...any) error {
	return &RuleError{Code: e.Code, Message: fmt.Sprintf(format, args...)}
}

// The invariants an Order command may break. Match them with errors.Is.
var (
	// ErrOrderExists: the order was already placed.
	ErrOrderExists = &RuleError{Code: "order_exists", Message: "the order was already placed"}
	// ErrNotPlaced: the command needs a placed order.
	ErrNotPlaced = &RuleError{Code: "order_not_placed", Message: "the order was not placed"}
	// ErrOrderCancelled: the order is cancelled; nothing may change.
	ErrOrderCancelled = &RuleError{Code: "order_cancelled", Message: "the order is cancelled"}
	// ErrOrderShipped: the order has shipped; nothing may change.
	ErrOrderShipped = &RuleError{Code: "order_shipped", Message: "the order has shipped"}
	// ErrOrderPaid: the order is paid; its lines and discount are frozen.
	ErrOrderPaid = &RuleError{Code: "order_paid", Message: "the order is paid"}
	// ErrOrderEmpty: an order without lines cannot be paid.
	ErrOrderEmpty = &RuleError{Code: "order_empty", Message: "the order has no lines"}
	// ErrCurrencyMismatch: an order has one currency.
	ErrCurrencyMismatch = &RuleError{Code: "currency_mismatch", Message: "the order is in another currency"}
	// ErrPaymentMismatch: a payment must equal the order's total.
	ErrPaymentMismatch = &RuleError{Code: "payment_mismatch", Message: "the payment does not equal the total"}
	// ErrNotPaid: an order ships only once paid.
	ErrNotPaid = &RuleError{Code: "order_not_paid", Message: "the order is not paid"}
	// ErrDuplicateLine: the order already has a line for the SKU.
	ErrDuplicateLine = &RuleError{Code: "duplicate_line", Message: "the order already has a line for this SKU"}
	// ErrLineNotFound: the order has no line for the SKU.
	ErrLineNotFound = &RuleError{Code: "line_not_found", Message: "the order has no line for this SKU"}
	// ErrDiscountApplied: an order gets at most one discount.
	ErrDiscountApplied = &RuleError{Code: "discount_already_applied", Message: "the order already has a discount"}
	// ErrTooManyLines: an order has at most MaxLines lines.
	ErrTooManyLines = &RuleError{Code: "too_many_lines", Message: "the order has too many lines"}
	// ErrSubtotalTooLarge: an order's subtotal is at most MaxSubtotalCents.
	ErrSubtotalTooLarge = &RuleError{Code: "subtotal_too_large", Message: "the order's subtotal would be too large"}
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
