package aggregatetest_test

import (
	"fmt"

	"github.com/esox-go/esox/aggregate/aggregatetest"
)

// printTB prints what a Scenario reports; in a test, pass t instead.
type printTB struct{}

func (printTB) Helper()                           {}
func (printTB) Errorf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (printTB) Fatalf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func Example() {
	var t printTB // a *testing.T in a real test

	// Passes: prints nothing.
	account := aggregatetest.New(t, NewAccount).
		Given(Deposited{Amount: 10}).
		When(func(a *Account) error { return a.Withdraw(3) }).
		Then(Withdrawn{Amount: 3})
	fmt.Println("balance", account.Balance)

	aggregatetest.New(t, NewAccount).
		Given(Deposited{Amount: 1}).
		When(func(a *Account) error { return a.Withdraw(3) }).
		ThenError(errInsufficient)

	// Fails: the report shows a diff of the events.
	aggregatetest.New(t, NewAccount).
		Given(Deposited{Amount: 10}).
		When(func(a *Account) error { return a.Withdraw(3) }).
		Then(Withdrawn{Amount: 4})
	// Output:
	// balance 7
	// aggregatetest: raised events differ (-want +got):
	// - aggregatetest_test.Withdrawn{Amount:4}
	// + aggregatetest_test.Withdrawn{Amount:3}
}
