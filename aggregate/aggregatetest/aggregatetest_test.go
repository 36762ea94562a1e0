package aggregatetest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/aggregate/aggregatetest"
	"github.com/esox-go/esox/eventstore"
)

// A small account aggregate to test the scenarios with.

type Opened struct {
	Owner string `json:"owner"`
}

type Deposited struct {
	Amount int `json:"amount"`
}

type Withdrawn struct {
	Amount int `json:"amount"`
}

// Leaky has an unexported field, lost in the JSON round trip.
type Leaky struct {
	Note   string `json:"note"`
	secret string
}

var errInsufficient = errors.New("insufficient funds")

type Account struct {
	aggregate.Base
	Balance int
}

func NewAccount(string) *Account { return &Account{} }

func (a *Account) Apply(event any) {
	switch e := event.(type) {
	case Deposited:
		a.Balance += e.Amount
	case Withdrawn:
		a.Balance -= e.Amount
	}
}

func (a *Account) Withdraw(n int) error {
	if n > a.Balance {
		return errInsufficient
	}
	aggregate.Raise(a, Withdrawn{Amount: n})
	return nil
}

// recorder is an aggregatetest.TB that records what a scenario reports.
type recorder struct {
	errors []string
	fatals []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
}

func (r *recorder) messages() string { return strings.Join(append(r.errors, r.fatals...), "\n") }

func withdraw(n int) func(*Account) error { return func(a *Account) error { return a.Withdraw(n) } }

func TestPasses(t *testing.T) {
	t.Parallel()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[Opened](reg, "opened")
	eventstore.MustRegister[Deposited](reg, "deposited")
	eventstore.MustRegister[Withdrawn](reg, "withdrawn")

	// Each passes both through the recorder (which must stay silent) and through t.
	for _, tb := range []aggregatetest.TB{&recorder{}, t} {
		a := aggregatetest.New(tb, NewAccount).WithRegistry(reg).
			Given(Opened{Owner: "ada"}, Deposited{Amount: 10}).
			When(withdraw(3)).
			Then(Withdrawn{Amount: 3})
		if a.Balance != 7 || a.Version() != 2 || a.ID() != aggregatetest.DefaultID {
			t.Fatalf("aggregate after Then: balance %d version %d id %q", a.Balance, a.Version(), a.ID())
		}
		// Expected events may be pointers.
		aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 10}).When(withdraw(3)).Then(&Withdrawn{Amount: 3})
		aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 1}).When(withdraw(2)).ThenError(errInsufficient)
		aggregatetest.New(tb, NewAccount).When(func(*Account) error { return nil }).ThenNoEvents()
		if a := aggregatetest.New(tb, NewAccount).WithID("acc-9").When(withdraw(0)).Then(Withdrawn{}); a.ID() != "acc-9" {
			t.Fatalf("WithID: id %q", a.ID())
		}
		if r, ok := tb.(*recorder); ok && r.messages() != "" {
			t.Fatalf("passing scenarios reported:\n%s", r.messages())
		}
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[Withdrawn](reg, "withdrawn")
	eventstore.MustRegister[Leaky](reg, "leaky")

	for _, tt := range []struct {
		name      string
		run       func(tb aggregatetest.TB)
		wantFatal bool
		want      []string // substrings of the report, in order
	}{
		{
			name: "other_events",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 10}).When(withdraw(3)).
					Then(Withdrawn{Amount: 4})
			},
			want: []string{
				"raised events differ (-want +got):",
				"- aggregatetest_test.Withdrawn{Amount:4}\n",
				"+ aggregatetest_test.Withdrawn{Amount:3}\n",
			},
		},
		{
			name: "missing_and_extra_events",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 10}).
					When(func(a *Account) error { return errors.Join(a.Withdraw(1), a.Withdraw(2)) }).
					Then(Withdrawn{Amount: 1}, Withdrawn{Amount: 5}, Withdrawn{Amount: 2})
			},
			want: []string{
				"  aggregatetest_test.Withdrawn{Amount:1}\n",
				"- aggregatetest_test.Withdrawn{Amount:5}\n",
				"  aggregatetest_test.Withdrawn{Amount:2}\n",
			},
		},
		{
			name: "error_instead_of_events",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).When(withdraw(3)).Then(Withdrawn{Amount: 3})
			},
			want: []string{"When returned error insufficient funds; want events:", "aggregatetest_test.Withdrawn{Amount:3}"},
		},
		{
			name: "events_instead_of_none",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 3}).When(withdraw(3)).ThenNoEvents()
			},
			want: []string{"+ aggregatetest_test.Withdrawn{Amount:3}"},
		},
		{
			name: "no_error",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 3}).When(withdraw(3)).ThenError(errInsufficient)
			},
			want: []string{"When returned no error; want error insufficient funds", "raised events:", "aggregatetest_test.Withdrawn{Amount:3}"},
		},
		{
			name: "other_error",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).When(withdraw(3)).ThenError(errors.New("account closed"))
			},
			want: []string{"When returned error insufficient funds; want an error matching account closed"},
		},
		{
			name: "error_with_events",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 3}).
					When(func(a *Account) error { _ = a.Withdraw(1); return errInsufficient }).
					ThenError(errInsufficient)
			},
			want: []string{"returned the expected error insufficient funds but raised events", "aggregatetest_test.Withdrawn{Amount:1}"},
		},
		{
			name: "unregistered_event",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).WithRegistry(reg).Given(Deposited{Amount: 3}).When(withdraw(1)).Then(Withdrawn{Amount: 1})
			},
			want: []string{"given event 0 (aggregatetest_test.Deposited) cannot be stored", "unknown event type"},
		},
		{
			name: "lossy_round_trip",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).WithRegistry(reg).
					When(func(a *Account) error { aggregate.Raise(a, Leaky{Note: "n", secret: "s"}); return nil }).
					Then(Leaky{Note: "n", secret: "s"})
			},
			want: []string{"raised event 0 (aggregatetest_test.Leaky) changes in its JSON round trip", `before: aggregatetest_test.Leaky{Note:"n", secret:"s"}`, `after:  aggregatetest_test.Leaky{Note:"n", secret:""}`},
		},
		{
			name: "no_when",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).Given(Deposited{Amount: 3}).Then()
			},
			wantFatal: true,
			want:      []string{"When was not called"},
		},
		{
			name: "run_twice",
			run: func(tb aggregatetest.TB) {
				s := aggregatetest.New(tb, NewAccount).When(withdraw(0))
				s.Then(Withdrawn{})
				s.Then(Withdrawn{})
			},
			wantFatal: true,
			want:      []string{"the scenario already ran"},
		},
		{
			name: "then_error_nil",
			run: func(tb aggregatetest.TB) {
				aggregatetest.New(tb, NewAccount).When(withdraw(0)).ThenError(nil)
			},
			wantFatal: true,
			want:      []string{"ThenError(nil)"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{}
			tt.run(r)
			if tt.wantFatal != (len(r.fatals) > 0) {
				t.Errorf("fatals = %q, want fatal %v", r.fatals, tt.wantFatal)
			}
			msg := r.messages()
			if msg == "" {
				t.Fatal("the scenario reported nothing")
			}
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("report does not contain %q (in order); report:\n%s", w, msg)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestDiff(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		want, got []any
		diff      string
	}{
		{"equal", []any{Deposited{1}}, []any{Deposited{1}},
			"  aggregatetest_test.Deposited{Amount:1}\n(the events render identically but are not reflect.DeepEqual)\n"},
		{"both_empty", nil, nil, "(the events render identically but are not reflect.DeepEqual)\n"},
		{"only_want", []any{Deposited{1}}, nil, "- aggregatetest_test.Deposited{Amount:1}\n"},
		{"only_got", nil, []any{Deposited{1}}, "+ aggregatetest_test.Deposited{Amount:1}\n"},
		{"changed_middle",
			[]any{Opened{"a"}, Deposited{1}, Withdrawn{1}},
			[]any{Opened{"a"}, Deposited{2}, Withdrawn{1}},
			"  aggregatetest_test.Opened{Owner:\"a\"}\n" +
				"- aggregatetest_test.Deposited{Amount:1}\n" +
				"+ aggregatetest_test.Deposited{Amount:2}\n" +
				"  aggregatetest_test.Withdrawn{Amount:1}\n"},
		{"pointers_rendered_as_values", []any{&Deposited{1}}, []any{Withdrawn{1}},
			"- aggregatetest_test.Deposited{Amount:1}\n+ aggregatetest_test.Withdrawn{Amount:1}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := aggregatetest.Diff(tt.want, tt.got); got != tt.diff {
				t.Fatalf("Diff =\n%s\nwant\n%s", got, tt.diff)
			}
		})
	}
}
