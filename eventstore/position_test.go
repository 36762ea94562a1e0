package eventstore_test

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
)

// TestParsePosition: ParsePosition reads what Position.String writes, and
// refuses anything else with an *InvalidArgumentError that quotes the input.
func TestParsePosition(t *testing.T) {
	t.Parallel()
	for _, p := range []eventstore.Position{{}, {TransactionID: 845, Position: 12}, {TransactionID: math.MaxUint64, Position: math.MaxInt64}} {
		got, err := eventstore.ParsePosition(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", p.String(), got, err, p)
		}
	}
	for _, s := range []string{"", "12", "/", "845/", "/12", "845/12/1", "-1/2", "1/-2", "+1/2", " 1/2", "1/2 ", "1 /2", "0x1/2", "a/b",
		strconv.FormatUint(math.MaxUint64, 10) + "0/1", "1/" + strconv.FormatInt(math.MaxInt64, 10) + "0"} {
		_, err := eventstore.ParsePosition(s)
		var ia *eventstore.InvalidArgumentError
		if !errors.As(err, &ia) || !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("ParsePosition(%q) = %v, want an *InvalidArgumentError", s, err)
			continue
		}
		if ia.Field != "position" || !strings.Contains(err.Error(), strconv.Quote(s)) || !strings.Contains(err.Error(), "transaction_id/position") {
			t.Errorf("ParsePosition(%q): error %q should name the field, quote the input and show the form", s, err)
		}
	}
}
