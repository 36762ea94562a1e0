package order_test

import (
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/esox-go/esox/aggregate/aggregatetest"
	"github.com/esox-go/esox/examples/ordering/order"
)

const id = aggregatetest.DefaultID

var (
	reg    = order.NewRegistry()
	widget = order.Line{SKU: "widget", Quantity: 2, UnitPriceCents: 1250}
	gadget = order.Line{SKU: "gadget", Quantity: 1, UnitPriceCents: 999}
	placed = order.OrderPlaced{OrderID: id, CustomerID: "c1", Currency: "EUR", Lines: []order.Line{widget}}
	paid   = order.OrderPaid{OrderID: id, CustomerID: "c1", Amount: order.Money{Currency: "EUR", MinorUnits: 2500}}
)

func scenario(t *testing.T) *aggregatetest.Scenario[*order.Order] {
	return aggregatetest.New(t, order.New).WithRegistry(reg)
}

func TestPlace(t *testing.T) {
	t.Parallel()
	o := scenario(t).
		When(func(o *order.Order) error { return o.Place("c1", "EUR", []order.Line{widget}) }).
		Then(placed)
	if o.Status != order.StatusPlaced || o.TotalCents() != 2500 {
		t.Errorf("after Place: status %q total %d, want placed 2500", o.Status, o.TotalCents())
	}
}

func TestPlaceTwice(t *testing.T) {
	t.Parallel()
	scenario(t).Given(placed).
		When(func(o *order.Order) error { return o.Place("c1", "EUR", []order.Line{widget}) }).
		ThenError(order.ErrOrderExists)
}

func TestPlaceInvalid(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", order.MaxIDLength+1)
	many := make([]order.Line, order.MaxLines+1)
	for i := range many {
		many[i] = order.Line{SKU: "s" + strings.Repeat("1", i%50) + string(rune('a'+i%26)), Quantity: 1}
	}
	for _, tc := range []struct {
		name, customer, currency string
		lines                    []order.Line
		field                    string
	}{
		{"empty customer", "", "EUR", []order.Line{widget}, "customer_id"},
		{"long customer", long, "EUR", []order.Line{widget}, "customer_id"},
		{"customer with slash", "a/b", "EUR", []order.Line{widget}, "customer_id"},
		{"customer with space", " c1", "EUR", []order.Line{widget}, "customer_id"},
		{"customer with control", "c\x001", "EUR", []order.Line{widget}, "customer_id"},
		{"lowercase currency", "c1", "eur", []order.Line{widget}, "currency"},
		{"long currency", "c1", "EURO", []order.Line{widget}, "currency"},
		{"empty currency", "c1", "", []order.Line{widget}, "currency"},
		{"no lines", "c1", "EUR", nil, "lines"},
		{"too many lines", "c1", "EUR", many, "lines"},
		{"zero quantity", "c1", "EUR", []order.Line{{SKU: "a", Quantity: 0, UnitPriceCents: 1}}, "lines[0].quantity"},
		{"negative quantity", "c1", "EUR", []order.Line{{SKU: "a", Quantity: -1, UnitPriceCents: 1}}, "lines[0].quantity"},
		{"huge quantity", "c1", "EUR", []order.Line{{SKU: "a", Quantity: order.MaxQuantity + 1}}, "lines[0].quantity"},
		{"negative price", "c1", "EUR", []order.Line{{SKU: "a", Quantity: 1, UnitPriceCents: -1}}, "lines[0].unit_price_cents"},
		{"huge price", "c1", "EUR", []order.Line{{SKU: "a", Quantity: 1, UnitPriceCents: order.MaxUnitPriceCents + 1}}, "lines[0].unit_price_cents"},
		{"empty sku", "c1", "EUR", []order.Line{{SKU: "", Quantity: 1}}, "lines[0].sku"},
		{"sku with slash", "c1", "EUR", []order.Line{{SKU: "a/b", Quantity: 1}}, "lines[0].sku"},
		{"non-ascii sku", "c1", "EUR", []order.Line{{SKU: "é", Quantity: 1}}, "lines[0].sku"},
		{"duplicate sku", "c1", "EUR", []order.Line{widget, widget}, "lines[1].sku"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario(t).
				When(func(o *order.Order) error {
					err := o.Place(tc.customer, tc.currency, tc.lines)
					var ve *order.ValidationError
					if errors.As(err, &ve) && ve.Field != tc.field {
						t.Errorf("field %q, want %q (%v)", ve.Field, tc.field, err)
					}
					return err
				}).
				ThenError(order.ErrInvalid)
		})
	}
}

func TestPlaceFreeLine(t *testing.T) {
	t.Parallel()
	free := order.Line{SKU: "sample", Quantity: 1, UnitPriceCents: 0}
	scenario(t).
		When(func(o *order.Order) error { return o.Place("c1", "EUR", []order.Line{free}) }).
		Then(order.OrderPlaced{OrderID: id, CustomerID: "c1", Currency: "EUR", Lines: []order.Line{free}})
}

func TestAddLine(t *testing.T) {
	t.Parallel()
	o := scenario(t).Given(placed).
		When(func(o *order.Order) error { return o.AddLine(gadget, "") }).
		Then(order.LineAdded{OrderID: id, Line: gadget})
	if got := o.TotalCents(); got != 2500+999 {
		t.Errorf("total %d, want %d", got, 2500+999)
	}
	scenario(t).Given(placed).
		When(func(o *order.Order) error { return o.AddLine(gadget, "EUR") }).
		Then(order.LineAdded{OrderID: id, Line: gadget})
}

func TestAddLineRefused(t *testing.T) {
	t.Parallel()
	full := placed
	full.Lines = nil
	for i := range order.MaxLines {
		full.Lines = append(full.Lines, order.Line{SKU: "sku" + strings.Repeat("9", i%40) + string(rune('a'+i/40)), Quantity: 1})
	}
	for _, tc := range []struct {
		name  string
		given []any
		line  order.Line
		cur   string
		want  error
	}{
		{"not placed", nil, gadget, "", order.ErrNotPlaced},
		{"zero quantity", []any{placed}, order.Line{SKU: "g", Quantity: 0}, "", order.ErrInvalid},
		{"negative price", []any{placed}, order.Line{SKU: "g", Quantity: 1, UnitPriceCents: -5}, "", order.ErrInvalid},
		{"bad currency", []any{placed}, gadget, "usd", order.ErrInvalid},
		{"other currency", []any{placed}, gadget, "USD", order.ErrCurrencyMismatch},
		{"duplicate sku", []any{placed}, widget, "", order.ErrDuplicateLine},
		{"too many lines", []any{full}, gadget, "", order.ErrTooManyLines},
		{"line amount over the cap", []any{placed}, order.Line{SKU: "g", Quantity: order.MaxQuantity, UnitPriceCents: order.MaxUnitPriceCents}, "", order.ErrInvalid},
		{"subtotal over the cap", []any{bigPlaced}, order.Line{SKU: "g", Quantity: 1, UnitPriceCents: 1}, "", order.ErrSubtotalTooLarge},
		{"paid", []any{placed, paid}, gadget, "", order.ErrOrderPaid},
		{"shipped", []any{placed, paid, order.OrderShipped{OrderID: id}}, gadget, "", order.ErrOrderShipped},
		{"cancelled", []any{placed, order.OrderCancelled{OrderID: id, Reason: "r"}}, gadget, "", order.ErrOrderCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario(t).Given(tc.given...).
				When(func(o *order.Order) error { return o.AddLine(tc.line, tc.cur) }).
				ThenError(tc.want)
		})
	}
}

func TestRemoveLine(t *testing.T) {
	t.Parallel()
	o := scenario(t).Given(placed, order.LineAdded{OrderID: id, Line: gadget}).
		When(func(o *order.Order) error { return o.RemoveLine("widget") }).
		Then(order.LineRemoved{OrderID: id, SKU: "widget"})
	if len(o.Lines) != 1 || o.Lines[0] != gadget {
		t.Errorf("lines after removal: %+v, want only %+v", o.Lines, gadget)
	}
	// Removing the last line is allowed: the order is then empty and cannot be paid.
	scenario(t).Given(placed).
		When(func(o *order.Order) error { return o.RemoveLine("widget") }).
		Then(order.LineRemoved{OrderID: id, SKU: "widget"})
}

func TestRemoveLineRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		given []any
		sku   string
		want  error
	}{
		{"not placed", nil, "widget", order.ErrNotPlaced},
		{"bad sku", []any{placed}, "a b", order.ErrInvalid},
		{"unknown sku", []any{placed}, "gadget", order.ErrLineNotFound},
		{"already removed", []any{placed, order.LineRemoved{OrderID: id, SKU: "widget"}}, "widget", order.ErrLineNotFound},
		{"paid", []any{placed, paid}, "widget", order.ErrOrderPaid},
		{"cancelled", []any{placed, order.OrderCancelled{OrderID: id, Reason: "r"}}, "widget", order.ErrOrderCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario(t).Given(tc.given...).
				When(func(o *order.Order) error { return o.RemoveLine(tc.sku) }).
				ThenError(tc.want)
		})
	}
}

func TestApplyDiscount(t *testing.T) {
	t.Parallel()
	o := scenario(t).Given(placed).
		When(func(o *order.Order) error { return o.ApplyDiscount(10) }).
		Then(order.DiscountApplied{OrderID: id, Percent: 10})
	if got := o.TotalCents(); got != 2250 {
		t.Errorf("total after 10%% off 2500: %d, want 2250", got)
	}
	// The discount is rounded down to the cent: 33% of 999 is 329.67, so 329 off and 670 to pay.
	if got := order.Total([]order.Line{gadget}, 33); got != 670 {
		t.Errorf("Total(999, 33%%) = %d, want 670", got)
	}
	if got := order.Total([]order.Line{gadget}, 100); got != 0 {
		t.Errorf("Total(999, 100%%) = %d, want 0", got)
	}
}

func TestApplyDiscountRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		given   []any
		percent int64
		want    error
	}{
		{"zero", []any{placed}, 0, order.ErrInvalid},
		{"negative", []any{placed}, -5, order.ErrInvalid},
		{"over 100", []any{placed}, 101, order.ErrInvalid},
		{"not placed", nil, 10, order.ErrNotPlaced},
		{"second discount", []any{placed, order.DiscountApplied{OrderID: id, Percent: 5}}, 10, order.ErrDiscountApplied},
		{"paid", []any{placed, paid}, 10, order.ErrOrderPaid},
		{"shipped", []any{placed, paid, order.OrderShipped{OrderID: id}}, 10, order.ErrOrderShipped},
		{"cancelled", []any{placed, order.OrderCancelled{OrderID: id, Reason: "r"}}, 10, order.ErrOrderCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario(t).Given(tc.given...).
				When(func(o *order.Order) error { return o.ApplyDiscount(tc.percent) }).
				ThenError(tc.want)
		})
	}
}

func TestPay(t *testing.T) {
	t.Parallel()
	o := scenario(t).Given(placed).
		When(func(o *order.Order) error { return o.Pay(2500, "") }).
		Then(paid)
	if o.Status != order.StatusPaid {
		t.Errorf("status %q, want paid", o.Status)
	}
	scenario(t).Given(placed, order.DiscountApplied{OrderID: id, Percent: 10}).
		When(func(o *order.Order) error { return o.Pay(2250, "EUR") }).
		Then(order.OrderPaid{OrderID: id, CustomerID: "c1", Amount: order.Money{Currency: "EUR", MinorUnits: 2250}})
}

func TestPayRefused(t *testing.T) {
	t.Parallel()
	emptied := order.LineRemoved{OrderID: id, SKU: "widget"}
	for _, tc := range []struct {
		name   string
		given  []any
		amount int64
		cur    string
		want   error
	}{
		{"negative amount", []any{placed}, -1, "", order.ErrInvalid},
		{"bad currency", []any{placed}, 2500, "EURO", order.ErrInvalid},
		{"not placed", nil, 2500, "", order.ErrNotPlaced},
		{"empty order", []any{placed, emptied}, 0, "", order.ErrOrderEmpty},
		{"less than total", []any{placed}, 2499, "", order.ErrPaymentMismatch},
		{"more than total", []any{placed}, 2501, "", order.ErrPaymentMismatch},
		{"total before discount", []any{placed, order.DiscountApplied{OrderID: id, Percent: 10}}, 2500, "", order.ErrPaymentMismatch},
		{"other currency", []any{placed}, 2500, "USD", order.ErrCurrencyMismatch},
		{"paid twice", []any{placed, paid}, 2500, "", order.ErrOrderPaid},
		{"cancelled", []any{placed, order.OrderCancelled{OrderID: id, Reason: "r"}}, 2500, "", order.ErrOrderCancelled},
		{"shipped", []any{placed, paid, order.OrderShipped{OrderID: id}}, 2500, "", order.ErrOrderShipped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario(t).Given(tc.given...).
				When(func(o *order.Order) error { return o.Pay(tc.amount, tc.cur) }).
				ThenError(tc.want)
		})
	}
}

func TestShip(t *testing.T) {
	t.Parallel()
	o := scenario(t).Given(placed, paid).
		When(func(o *order.Order) error { return o.Ship() }).
		Then(order.OrderShipped{OrderID: id})
	if o.Status != order.StatusShipped {
		t.Errorf("status %q, want shipped", o.Status)
	}
}

func TestShipRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		given []any
		want  error
	}{
		{"not placed", nil, order.ErrNotPlaced},
		{"not paid", []any{placed}, order.ErrNotPaid},
		{"cancelled", []any{placed, order.OrderCancelled{OrderID: id, Reason: "r"}}, order.ErrOrderCancelled},
		{"paid then cancelled", []any{placed, paid, order.OrderCancelled{OrderID: id, Reason: "r"}}, order.ErrOrderCancelled},
		{"shipped twice", []any{placed, paid, order.OrderShipped{OrderID: id}}, order.ErrOrderShipped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario(t).Given(tc.given...).
				When(func(o *order.Order) error { return o.Ship() }).
				ThenError(tc.want)
		})
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	scenario(t).Given(placed).
		When(func(o *order.Order) error { return o.Cancel("  changed my mind ") }).
		Then(order.OrderCancelled{OrderID: id, Reason: "changed my mind"})
	// A paid order that has not shipped may still be cancelled (refunds are another service's job).
	scenario(t).Given(placed, paid).
		When(func(o *order.Order) error { return o.Cancel("out of stock") }).
		Then(order.OrderCancelled{OrderID: id, Reason: "out of stock"})
}

func TestCancelRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		given  []any
		reason string
		want   error
	}{
		{"empty reason", []any{placed}, "  ", order.ErrInvalid},
		{"long reason", []any{placed}, strings.Repeat("r", order.MaxReasonLength+1), order.ErrInvalid},
		{"control character", []any{placed}, "a\x00b", order.ErrInvalid},
		{"not placed", nil, "r", order.ErrNotPlaced},
		{"twice", []any{placed, order.OrderCancelled{OrderID: id, Reason: "r"}}, "r", order.ErrOrderCancelled},
		{"shipped", []any{placed, paid, order.OrderShipped{OrderID: id}}, "r", order.ErrOrderShipped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario(t).Given(tc.given...).
				When(func(o *order.Order) error { return o.Cancel(tc.reason) }).
				ThenError(tc.want)
		})
	}
}

func TestRuleErrorMatching(t *testing.T) {
	t.Parallel()
	o := order.New("x")
	err := o.Ship()
	var re *order.RuleError
	if !errors.As(err, &re) || re.Code != "order_not_placed" {
		t.Fatalf("Ship on a new order: %v, want a RuleError with code order_not_placed", err)
	}
	if errors.Is(err, order.ErrNotPaid) {
		t.Errorf("%v matches ErrNotPaid; codes differ", err)
	}
	if errors.Is(err, order.ErrInvalid) {
		t.Errorf("a RuleError matches ErrInvalid")
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	r := order.NewRegistry()
	if err := order.Register(r); err != nil {
		t.Fatalf("registering twice into the same registry: %v", err)
	}
	for _, name := range []string{order.TypeOrderPlaced, order.TypeLineAdded, order.TypeLineRemoved, order.TypeDiscountApplied, order.TypeOrderPaid, order.TypeOrderShipped, order.TypeOrderCancelled} {
		if !r.Has(name) {
			t.Errorf("%s not registered", name)
		}
	}
}

// bigPlaced is an order whose subtotal is exactly MaxSubtotalCents.
var bigPlaced = order.OrderPlaced{OrderID: id, CustomerID: "c1", Currency: "EUR", Lines: []order.Line{
	{SKU: "a", Quantity: 1000, UnitPriceCents: order.MaxUnitPriceCents},
}}

// TestSubtotalCap: an order may reach MaxSubtotalCents but not pass it, and
// no valid order's totals overflow (before the cap, 100 lines at the
// largest quantity and price made Total's s*percent overflow int64).
func TestSubtotalCap(t *testing.T) {
	t.Parallel()
	o := scenario(t).
		When(func(o *order.Order) error { return o.Place("c1", "EUR", bigPlaced.Lines) }).
		Then(bigPlaced)
	if o.SubtotalCents() != order.MaxSubtotalCents {
		t.Fatalf("subtotal %d", o.SubtotalCents())
	}
	var max []order.Line
	for i := range order.MaxLines {
		max = append(max, order.Line{SKU: "s" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Quantity: order.MaxQuantity, UnitPriceCents: 1_000_000})
	}
	scenario(t).
		When(func(o *order.Order) error { return o.Place("c1", "EUR", max) }).
		ThenError(order.ErrInvalid)
	scenario(t).
		When(func(o *order.Order) error {
			return o.Place("c1", "EUR", []order.Line{{SKU: "x", Quantity: order.MaxQuantity, UnitPriceCents: order.MaxUnitPriceCents}})
		}).
		ThenError(order.ErrInvalid)
	// Paying the largest order with the largest discount works.
	scenario(t).Given(bigPlaced, order.DiscountApplied{OrderID: id, Percent: 99}).
		When(func(o *order.Order) error { return o.Pay(order.MaxSubtotalCents/100, "") }).
		Then(order.OrderPaid{OrderID: id, CustomerID: "c1", Amount: order.Money{Currency: "EUR", MinorUnits: order.MaxSubtotalCents / 100}})
}

// TestTotalDoesNotOverflow checks Total against exact arithmetic where the
// old s*percent/100 overflowed, and its rounding on small amounts.
func TestTotalDoesNotOverflow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lines   []order.Line
		percent int64
	}{
		{[]order.Line{{SKU: "a", Quantity: 1, UnitPriceCents: 999}}, 15},
		{[]order.Line{{SKU: "a", Quantity: 3, UnitPriceCents: 33}}, 33},
		{[]order.Line{{SKU: "a", Quantity: 1, UnitPriceCents: 1}}, 99},
		{[]order.Line{{SKU: "a", Quantity: 1, UnitPriceCents: 1}}, 100},
		{[]order.Line{{SKU: "a", Quantity: 1 << 62 / 50, UnitPriceCents: 1}}, 99},
		{[]order.Line{{SKU: "a", Quantity: 1 << 62, UnitPriceCents: 1}}, 100},
	} {
		s := big.NewInt(order.Subtotal(tc.lines))
		d := new(big.Int).Mul(s, big.NewInt(tc.percent))
		d.Quo(d, big.NewInt(100))
		want := new(big.Int).Sub(s, d)
		if got := order.Total(tc.lines, tc.percent); !want.IsInt64() || got != want.Int64() {
			t.Errorf("Total(%v, %d) = %d, want %s", tc.lines, tc.percent, got, want)
		}
	}
}

func TestPlaceForContact(t *testing.T) {
	t.Parallel()
	c := order.Contact{Name: "Ada Lovelace", Email: "ada@example.com", ShippingAddress: "12 St James's Square\nLondon"}
	want := placed
	want.Contact = &c
	o := scenario(t).
		When(func(o *order.Order) error { return o.PlaceFor("c1", c, "EUR", []order.Line{widget}) }).
		Then(want)
	if o.Contact != c {
		t.Errorf("contact = %+v, want %+v", o.Contact, c)
	}
	for _, bad := range []order.Contact{
		{Name: strings.Repeat("x", order.MaxContactLength+1)},
		{Email: "not-an-email"},
		{Name: " Ada"},
		{ShippingAddress: "a\x00b"},
		{Name: "bad\xffutf8"},
	} {
		scenario(t).
			When(func(o *order.Order) error { return o.PlaceFor("c1", bad, "EUR", []order.Line{widget}) }).
			ThenError(order.ErrInvalid)
	}
}
