package aggregatetest

import (
	"fmt"
	"strings"
)

// Diff returns a line diff of two event lists, each event rendered on one
// line with %#v: lines only in want start with "-", lines only in got with
// "+", common lines with a space. It is what Then reports on a mismatch.
func Diff(want, got []any) string {
	a := renderLines(normalize(want))
	b := renderLines(normalize(got))
	// Longest common subsequence; event lists are short.
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	changed := false
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			fmt.Fprintf(&out, "  %s\n", a[i])
			i++
			j++
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&out, "- %s\n", a[i])
			i++
			changed = true
		default:
			fmt.Fprintf(&out, "+ %s\n", b[j])
			j++
			changed = true
		}
	}
	if !changed {
		out.WriteString("(the events render identically but are not reflect.DeepEqual)\n")
	}
	return out.String()
}

func renderLines(events []any) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = fmt.Sprintf("%#v", e)
	}
	return out
}
