package order

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/esox-go/esox/aggregate"
)

// Limits on command input.
const (
	// MaxLines is the most lines an order may have.
	MaxLines = 100
	// MaxQuantity is the largest quantity of a line.
	MaxQuantity = 1_000_000
	// MaxUnitPriceCents is the largest unit price of a line.
	MaxUnitPriceCents = 1_000_000_000
	// MaxIDLength bounds customer IDs and SKUs.
	MaxIDLength = 64
	// MaxReasonLength bounds a cancellation reason.
	MaxReasonLength = 500
	// MaxContactLength bounds each field of a Contact, in bytes.
	MaxContactLength = 500
	// MaxSubtotalCents is the largest amount of a line (quantity × unit
	// price) and the largest subtotal of an order: 10^12 cents. It keeps
	// every sum and product of amounts, and the customer totals the read
	// models add up, far from int64 overflow.
	MaxSubtotalCents = 1_000_000_000_000
)

// Status is where an order is in its life.
type Status string

// The statuses of an order.
const (
	StatusNone      Status = ""
	StatusPlaced    Status = "placed"
	StatusPaid      Status = "paid"
	StatusShipped   Status = "shipped"
	StatusCancelled Status = "cancelled"
)

// ValidStatus reports whether s is one of the statuses of a placed order.
func ValidStatus(s string) bool {
	switch Status(s) {
	case StatusPlaced, StatusPaid, StatusShipped, StatusCancelled:
		return true
	}
	return false
}

// Order is the order aggregate. Use it through a *Order from New (or an
// aggregate.Repository built with New); its commands check the invariants
// listed in the package documentation and raise events, its fields are the
// state those events built. Not safe for concurrent use.
type Order struct {
	aggregate.Base

	CustomerID      string
	Contact         Contact
	Currency        string
	Lines           []Line
	DiscountPercent int64
	Status          Status
	CancelReason    string
}

// New returns an empty order, the new function of an
// aggregate.Repository[*Order].
func New(string) *Order { return &Order{} }

// Apply changes the order's state for one event.
func (o *Order) Apply(event any) {
	switch e := event.(type) {
	case OrderPlaced:
		o.CustomerID, o.Currency, o.Status = e.CustomerID, e.Currency, StatusPlaced
		o.Lines = slices.Clone(e.Lines)
		if e.Contact != nil {
			o.Contact = *e.Contact
		}
	case LineAdded:
		o.Lines = append(o.Lines, e.Line)
	case LineRemoved:
		o.Lines = slices.DeleteFunc(o.Lines, func(l Line) bool { return l.SKU == e.SKU })
	case DiscountApplied:
		o.DiscountPercent = e.Percent
	case OrderPaid:
		o.Status = StatusPaid
	case OrderShipped:
		o.Status = StatusShipped
	case OrderCancelled:
		o.Status, o.CancelReason = StatusCancelled, e.Reason
	}
}

// SubtotalCents returns the sum of the lines' amounts.
func (o *Order) SubtotalCents() int64 { return Subtotal(o.Lines) }

// TotalCents returns what the customer pays: the subtotal less the discount.
func (o *Order) TotalCents() int64 { return Total(o.Lines, o.DiscountPercent) }

// Subtotal returns the sum of the lines' amounts.
func Subtotal(lines []Line) int64 {
	var s int64
	for _, l := range lines {
		s += l.AmountCents()
	}
	return s
}

// Total returns the subtotal of lines less percent percent, the discount
// rounded down to the cent (so the total is rounded up).
func Total(lines []Line, percent int64) int64 {
	s := Subtotal(lines)
	// s*percent/100 without forming s*percent, which could overflow:
	// with s = 100q + r, floor(s*p/100) = q*p + floor(r*p/100).
	return s - (s/100*percent + s%100*percent/100)
}

// Place starts the order for customerID in currency (an ISO 4217 code such
// as "EUR") with at least one line, each SKU at most once. It is PlaceFor
// without a contact.
func (o *Order) Place(customerID, currency string, lines []Line) error {
	return o.PlaceFor(customerID, Contact{}, currency, lines)
}

// PlaceFor is Place with the customer's contact (personal data, each field
// optional, at most MaxContactLength bytes without control characters; an
// email, when given, has an @).
func (o *Order) PlaceFor(customerID string, contact Contact, currency string, lines []Line) error {
	if o.Status != StatusNone {
		return ErrOrderExists
	}
	if err := validID("customer_id", customerID); err != nil {
		return err
	}
	if err := validCurrency("currency", currency); err != nil {
		return err
	}
	switch {
	case len(lines) == 0:
		return invalid("lines", "an order needs at least one line")
	case len(lines) > MaxLines:
		return invalid("lines", "at most %d lines", MaxLines)
	}
	seen := make(map[string]bool, len(lines))
	for i, l := range lines {
		if err := validLine(fieldf("lines[%d]", i), l); err != nil {
			return err
		}
		if seen[l.SKU] {
			return invalid(fieldf("lines[%d].sku", i), "SKU %q appears twice", l.SKU)
		}
		seen[l.SKU] = true
	}
	if s := Subtotal(lines); s > MaxSubtotalCents {
		return invalid("lines", "the subtotal of %d cents is more than the most allowed, %d cents", s, int64(MaxSubtotalCents))
	}
	if err := validContact(contact); err != nil {
		return err
	}
	e := OrderPlaced{OrderID: o.ID(), CustomerID: customerID, Currency: currency, Lines: slices.Clone(lines)}
	if !contact.IsZero() {
		e.Contact = &contact
	}
	aggregate.Raise(o, e)
	return nil
}

// validContact checks a contact's fields.
func validContact(c Contact) error {
	for _, f := range []struct{ name, v string }{{"contact.name", c.Name}, {"contact.email", c.Email}, {"contact.shipping_address", c.ShippingAddress}} {
		switch {
		case len(f.v) > MaxContactLength:
			return invalid(f.name, "at most %d bytes", MaxContactLength)
		case !utf8.ValidString(f.v):
			return invalid(f.name, "must be valid UTF-8")
		case strings.ContainsFunc(f.v, func(r rune) bool { return unicode.IsControl(r) && r != '\n' }):
			return invalid(f.name, "must not contain control characters")
		case f.v != strings.TrimSpace(f.v):
			return invalid(f.name, "must not start or end with white space")
		}
	}
	if c.Email != "" && (!strings.Contains(c.Email, "@") || strings.ContainsAny(c.Email, " \n")) {
		return invalid("contact.email", "is not an email address")
	}
	return nil
}

// AddLine adds a line for a SKU the order does not have yet. currency may
// be empty; if given it must be the order's.
func (o *Order) AddLine(l Line, currency string) error {
	if err := validLine("line", l); err != nil {
		return err
	}
	if currency != "" {
		if err := validCurrency("currency", currency); err != nil {
			return err
		}
	}
	if err := o.open(); err != nil {
		return err
	}
	switch {
	case currency != "" && currency != o.Currency:
		return ErrCurrencyMismatch.with("the order is in %s, the line in %s", o.Currency, currency)
	case o.line(l.SKU) >= 0:
		return ErrDuplicateLine.with("the order already has a line for SKU %q; remove it first", l.SKU)
	case len(o.Lines) >= MaxLines:
		return ErrTooManyLines.with("the order already has %d lines, the most allowed", MaxLines)
	case o.SubtotalCents()+l.AmountCents() > MaxSubtotalCents:
		return ErrSubtotalTooLarge.with("the subtotal would be %d cents, more than the most allowed, %d cents", o.SubtotalCents()+l.AmountCents(), int64(MaxSubtotalCents))
	}
	aggregate.Raise(o, LineAdded{OrderID: o.ID(), Line: l})
	return nil
}

// RemoveLine removes the line of sku.
func (o *Order) RemoveLine(sku string) error {
	if err := validSKU("sku", sku); err != nil {
		return err
	}
	if err := o.open(); err != nil {
		return err
	}
	if o.line(sku) < 0 {
		return ErrLineNotFound.with("the order has no line for SKU %q", sku)
	}
	aggregate.Raise(o, LineRemoved{OrderID: o.ID(), SKU: sku})
	return nil
}

// ApplyDiscount takes percent percent (1 to 100) off the subtotal. An order
// gets one discount at most.
func (o *Order) ApplyDiscount(percent int64) error {
	if percent < 1 || percent > 100 {
		return invalid("percent", "must be from 1 to 100, got %d", percent)
	}
	if err := o.open(); err != nil {
		return err
	}
	if o.DiscountPercent != 0 {
		return ErrDiscountApplied.with("the order already has a %d%% discount", o.DiscountPercent)
	}
	aggregate.Raise(o, DiscountApplied{OrderID: o.ID(), Percent: percent})
	return nil
}

// Pay records a payment of amountCents, which must equal the total.
// currency may be empty; if given it must be the order's.
func (o *Order) Pay(amountCents int64, currency string) error {
	if amountCents < 0 {
		return invalid("amount_cents", "must not be negative, got %d", amountCents)
	}
	if currency != "" {
		if err := validCurrency("currency", currency); err != nil {
			return err
		}
	}
	if err := o.open(); err != nil {
		return err
	}
	total := o.TotalCents()
	switch {
	case len(o.Lines) == 0:
		return ErrOrderEmpty.with("the order has no lines; add one before paying")
	case currency != "" && currency != o.Currency:
		return ErrCurrencyMismatch.with("the order is in %s, the payment in %s", o.Currency, currency)
	case amountCents != total:
		return ErrPaymentMismatch.with("the payment of %d cents does not equal the total of %d cents", amountCents, total)
	}
	aggregate.Raise(o, OrderPaid{OrderID: o.ID(), CustomerID: o.CustomerID, Amount: Money{Currency: o.Currency, MinorUnits: amountCents}})
	return nil
}

// Ship records that a paid order shipped.
func (o *Order) Ship() error {
	switch o.Status {
	case StatusNone:
		return ErrNotPlaced
	case StatusCancelled:
		return ErrOrderCancelled.with("the order is cancelled; it cannot ship")
	case StatusShipped:
		return ErrOrderShipped.with("the order has already shipped")
	case StatusPlaced:
		return ErrNotPaid.with("the order is not paid; it cannot ship yet")
	}
	aggregate.Raise(o, OrderShipped{OrderID: o.ID()})
	return nil
}

// Cancel closes an order that has not shipped, for reason (required).
func (o *Order) Cancel(reason string) error {
	reason = strings.TrimSpace(reason)
	switch {
	case reason == "":
		return invalid("reason", "must not be empty")
	case len(reason) > MaxReasonLength:
		return invalid("reason", "at most %d bytes", MaxReasonLength)
	case strings.ContainsFunc(reason, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }):
		return invalid("reason", "must not hold control characters other than newlines and tabs")
	}
	switch o.Status {
	case StatusNone:
		return ErrNotPlaced
	case StatusCancelled:
		return ErrOrderCancelled.with("the order is already cancelled")
	case StatusShipped:
		return ErrOrderShipped.with("the order has shipped; it cannot be cancelled")
	}
	aggregate.Raise(o, OrderCancelled{OrderID: o.ID(), Reason: reason})
	return nil
}

// open returns nil when the order's lines, discount and payment may change.
func (o *Order) open() error {
	switch o.Status {
	case StatusNone:
		return ErrNotPlaced
	case StatusCancelled:
		return ErrOrderCancelled.with("the order is cancelled; it cannot change")
	case StatusShipped:
		return ErrOrderShipped.with("the order has shipped; it cannot change")
	case StatusPaid:
		return ErrOrderPaid.with("the order is paid; it cannot change")
	}
	return nil
}

// line returns the index of sku's line, or -1.
func (o *Order) line(sku string) int {
	return slices.IndexFunc(o.Lines, func(l Line) bool { return l.SKU == sku })
}

func validLine(field string, l Line) error {
	if err := validSKU(field+".sku", l.SKU); err != nil {
		return err
	}
	switch {
	case l.Quantity <= 0:
		return invalid(field+".quantity", "must be greater than 0, got %d", l.Quantity)
	case l.Quantity > MaxQuantity:
		return invalid(field+".quantity", "at most %d, got %d", MaxQuantity, l.Quantity)
	case l.UnitPriceCents < 0:
		return invalid(field+".unit_price_cents", "must not be negative, got %d", l.UnitPriceCents)
	case l.UnitPriceCents > MaxUnitPriceCents:
		return invalid(field+".unit_price_cents", "at most %d, got %d", MaxUnitPriceCents, l.UnitPriceCents)
	case l.AmountCents() > MaxSubtotalCents: // both bounded above: no overflow
		return invalid(field, "quantity × unit_price_cents is %d cents, more than the most allowed, %d cents", l.AmountCents(), int64(MaxSubtotalCents))
	}
	return nil
}

// ValidSKU returns a *ValidationError unless sku is 1 to MaxIDLength
// letters, digits, '-', '_' or '.'.
func ValidSKU(sku string) error { return validSKU("sku", sku) }

func validSKU(field, sku string) error {
	if sku == "" || len(sku) > MaxIDLength {
		return invalid(field, "must be 1 to %d characters", MaxIDLength)
	}
	for _, r := range sku {
		if !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) || r == '-' || r == '_' || r == '.') {
			return invalid(field, "may only hold ASCII letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

func validID(field, id string) error {
	if id == "" || len(id) > MaxIDLength {
		return invalid(field, "must be 1 to %d characters", MaxIDLength)
	}
	if strings.TrimSpace(id) != id {
		return invalid(field, "must not start or end with white space")
	}
	for _, r := range id {
		if unicode.IsControl(r) || r == '/' || r == unicode.ReplacementChar {
			return invalid(field, "must not hold control characters or '/'")
		}
	}
	return nil
}

// ValidCustomerID returns a *ValidationError unless id is a usable customer
// ID: 1 to MaxIDLength characters, no control characters, no '/', no
// surrounding white space.
func ValidCustomerID(id string) error { return validID("customer_id", id) }

func validCurrency(field, c string) error {
	if len(c) != 3 {
		return invalid(field, "must be a three-letter ISO 4217 code such as EUR, got %q", c)
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return invalid(field, "must be a three-letter ISO 4217 code in capitals such as EUR, got %q", c)
		}
	}
	return nil
}

func fieldf(format string, args ...any) string { return sprintf(format, args...) }
