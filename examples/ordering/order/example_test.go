package order_test

import (
	"errors"
	"fmt"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/examples/ordering/order"
)

// An order's commands check its invariants and raise events; a refused
// command raises nothing and says why with a typed error.
func Example() {
	o := aggregate.New(order.New, "42")
	_ = o.Place("alice", "EUR", []order.Line{{SKU: "book", Quantity: 2, UnitPriceCents: 1500}})
	_ = o.ApplyDiscount(10)
	fmt.Println("total:", o.TotalCents())

	err := o.Pay(3000, "")
	var re *order.RuleError
	if errors.As(err, &re) {
		fmt.Println("refused:", re.Code, "-", re.Message)
	}
	fmt.Println("paid:", o.Pay(2700, "") == nil, o.Status)
	for _, e := range o.Pending() {
		fmt.Printf("%T\n", e)
	}
	// Output:
	// total: 2700
	// refused: payment_mismatch - the payment of 3000 cents does not equal the total of 2700 cents
	// paid: true paid
	// order.OrderPlaced
	// order.DiscountApplied
	// order.OrderPaid
}
