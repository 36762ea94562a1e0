package eventstore_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
)

// TestCheckJSONBLimits checks jsonb's size limits on the check every store
// runs before writing (storetest.LargeRefusals does it through Append, but
// not under -race): a string over 2^28-1 bytes, or an array or object whose
// contents exceed that, is refused; half of it is accepted.
func TestCheckJSONBLimits(t *testing.T) {
	t.Parallel()
	const limit = 1<<28 - 1
	str := func(n int) []byte { return append(append([]byte{'"'}, bytes.Repeat([]byte{'x'}, n)...), '"') }
	doc := func(parts ...[]byte) []byte {
		return append(append([]byte{'['}, bytes.Join(parts, []byte{','})...), ']')
	}
	half := str(limit / 2)
	type tc struct {
		name string
		doc  []byte
		ok   bool
		why  string
	}
	cases := []tc{
		{"a string over the limit", doc(str(limit + 1)), false, "a string has"},
		{"a half", doc(half), true, ""},
	}
	if !raceEnabled { // each case scans 256 MiB
		cases = append(cases,
			tc{"two halves and a bit", doc(half, half, str(16)), false, "may take"},
			tc{"two halves in an object", append(append(append([]byte(`{"a":`), half...), `,"b":`...), append(half, '}')...), false, "may take"})
	}
	for _, tc := range cases {
		err := eventstore.CheckJSONB(tc.doc)
		if tc.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: CheckJSONB = %v, want ok %v (%q)", tc.name, err, tc.ok, tc.why)
		}
	}
}

// TestCheckText: what PostgreSQL text cannot hold.
func TestCheckText(t *testing.T) {
	t.Parallel()
	for s, ok := range map[string]bool{"": true, "order.placed": true, "☕ \u2028": true, "a\x00": false, "\xff": false, "\xed\xa0\x80": false} {
		if err := eventstore.CheckText(s); (err == nil) != ok {
			t.Errorf("CheckText(%q) = %v, want ok %v", s, err, ok)
		}
	}
}

// BenchmarkCheckJSONB measures the check every append runs on each payload,
// on a 1 KiB event and on a 1 MiB string.
func BenchmarkCheckJSONB(b *testing.B) {
	small := []byte(`{"order_id":"01900000-0000-7000-8000-000000000001","customer":"c-42","lines":[` +
		strings.Repeat(`{"sku":"tea-\u00e9","qty":2,"price":12.5},`, 24) + `{"sku":"x","qty":1,"price":1}],"note":"h\u00e9llo \"world\""}`)
	large := []byte(`{"s":"` + strings.Repeat("x", 1<<20) + `"}`)
	for _, bc := range []struct {
		name string
		doc  []byte
	}{{"1KiB", small}, {"1MiB", large}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.doc)))
			for b.Loop() {
				if err := eventstore.CheckJSONB(bc.doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
