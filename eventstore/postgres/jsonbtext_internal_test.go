package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/internal/pgtest"
)

// jsonbTextCases are documents whose rendering differs from their text in
// every way jsonb normalises one: key order, duplicate keys, whitespace,
// escapes, number forms.
var jsonbTextCases = []string{
	`{}`, `[]`, `null`, `true`, `false`, `0`, `-0`, `"x"`, ` { } `, `[ [ ] , { } ]`,
	`{"b":1,"a":2}`, `{"bb":1,"a":2,"ab":3,"c":{"z":[1,2,{"y":null,"x":true}]}}`,
	`{"sku":"sku","n":3}`, `{"é":1,"e":2,"ee":3,"z":4}`, `{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`,
	`"\u00e9\u0041\ud83d\ude00\/\"\\\b\f\n\r\t\u001f\u007f\u2028"`, `"\u0000"`, `"\ud800"`, `"\udc00x"`,
	`{"\n":1,"\u0001":2,"\"":3}`, `"<>&'"`, `"` + "\x7f\u00a0\U0001F600" + `"`,
	`1.0`, `1.50`, `-1.50`, `1e2`, `1E+2`, `1.5e1`, `1.50e1`, `1e-2`, `-1e-2`, `0.0`, `-0.0`, `0e5`, `0.000e5`, `-0.000e-5`,
	`123456789012345678901234567890`, `1.23456789012345678901234567890`, `12.5e-3`, `5e-324`, `1.7976931348623157e308`,
	`0.1e1`, `100e-2`, `100.00e-2`, `1e02`, `1e-07`, `-12.345e+3`, `9.999999e-9`, `1e300`, `1e301`, `1e400`, `-1.5e-400`, `1e401`, `1e1001`,
	`[1,-0,0.5,-0.5e0,2E0]`, `{"a":[],"b":{},"":0}`, `{"":1,"a":2," ":3}`,
	`01`, `1.`, `.5`, `+1`, `1e`, `[1,]`, `{"a":1,}`, `{"a"}`, `nul`, `"\x"`, `"abc`, `{"a":1}x`,
}

func renderInPostgres(t testing.TB, db *sqlx.DB, docs []string) []string {
	t.Helper()
	var out []string
	// One document per query: a refused one fails alone.
	for _, d := range docs {
		var s string
		if err := db.QueryRowContext(context.Background(), `SELECT $1::text::jsonb::text`, d).Scan(&s); err != nil {
			s = "ERROR"
		}
		out = append(out, s)
	}
	return out
}

// checkJSONBText compares jsonbText with PostgreSQL on docs: where jsonbText
// renders a document it must render it as PostgreSQL does, and it must
// render every document PostgreSQL accepts that has none of the features it
// leaves to the server.
func checkJSONBText(t *testing.T, db *sqlx.DB, docs []string, mustRender func(string) bool) {
	t.Helper()
	want := renderInPostgres(t, db, docs)
	for i, d := range docs {
		got, ok := jsonbText(nil, []byte(d))
		switch {
		case ok && want[i] == "ERROR":
			t.Errorf("jsonbText(%q) = %q, PostgreSQL refuses it", d, got)
		case ok && string(got) != want[i]:
			t.Errorf("jsonbText(%q) = %q, PostgreSQL renders %q", d, got, want[i])
		case !ok && want[i] != "ERROR" && mustRender(d):
			t.Errorf("jsonbText(%q) renders nothing, PostgreSQL renders %q", d, want[i])
		}
	}
}

func TestJSONBTextMatchesPostgres(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	checkJSONBText(t, db, jsonbTextCases, func(d string) bool {
		// The cases it leaves to the server: duplicate keys and exponents
		// beyond ±jsonbTextMaxExponent; the rest is invalid for jsonb.
		return !strings.Contains(d, `"a":1,"a"`) && !strings.Contains(d, `"b":1,"b"`) && d != `1e401` && d != `1e1001`
	})
	rng := rand.New(rand.NewPCG(1, 2))
	docs := make([]string, 3000)
	for i := range docs {
		docs[i] = randomJSON(rng, 0)
	}
	checkJSONBText(t, db, docs, func(string) bool { return true })
}

// randomJSON is a random JSON document: objects with keys of varied length
// and characters (no duplicates), arrays, strings with every kind of
// escape, numbers in every notation, with random whitespace.
func randomJSON(rng *rand.Rand, depth int) string {
	ws := func() string { return []string{"", "", " ", "\n\t "}[rng.IntN(4)] }
	k := rng.IntN(10)
	if depth > 3 {
		k = 4 + rng.IntN(6)
	}
	switch k {
	case 0, 1:
		n := rng.IntN(6)
		seen := map[string]bool{}
		var b strings.Builder
		b.WriteString("{" + ws())
		first := true
		for range n {
			key := randomString(rng)
			var dec string
			if err := json.Unmarshal([]byte(key), &dec); err != nil || seen[dec] {
				continue
			}
			seen[dec] = true
			if !first {
				b.WriteString("," + ws())
			}
			first = false
			b.WriteString(key + ws() + ":" + ws() + randomJSON(rng, depth+1))
		}
		b.WriteString(ws() + "}")
		return b.String()
	case 2, 3:
		n := rng.IntN(5)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = ws() + randomJSON(rng, depth+1) + ws()
		}
		return "[" + strings.Join(parts, ",") + "]"
	case 4, 5:
		return randomString(rng)
	case 6, 7:
		return randomNumber(rng)
	case 8:
		return []string{"true", "false", "null"}[rng.IntN(3)]
	}
	return fmt.Sprint(rng.IntN(1000) - 500)
}

func randomString(rng *rand.Rand) string {
	pieces := []string{"a", "b", "ab", "Z", "é", "日本", "😀", `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
		`\u0001`, `\u001F`, `\u00e9`, `\u00E9`, `\ud83d\ude00`, `\u2028`, "\u2028", "\x7f", `\u007f`, " ", "<", "&", "'"}
	n := rng.IntN(5)
	var b strings.Builder
	b.WriteByte('"')
	for range n {
		b.WriteString(pieces[rng.IntN(len(pieces))])
	}
	b.WriteByte('"')
	return b.String()
}

func randomNumber(rng *rand.Rand) string {
	digits := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(byte('0' + rng.IntN(10)))
		}
		return b.String()
	}
	var b strings.Builder
	if rng.IntN(3) == 0 {
		b.WriteByte('-')
	}
	if rng.IntN(4) == 0 {
		b.WriteByte('0')
	} else {
		b.WriteByte(byte('1' + rng.IntN(9)))
		b.WriteString(digits(rng.IntN(25)))
	}
	if rng.IntN(2) == 0 {
		b.WriteString("." + digits(1+rng.IntN(20)))
	}
	if rng.IntN(2) == 0 {
		b.WriteString([]string{"e", "E"}[rng.IntN(2)] + []string{"", "+", "-"}[rng.IntN(3)] + fmt.Sprint(rng.IntN(40)))
	}
	return b.String()
}

// FuzzJSONBText compares jsonbText with PostgreSQL on arbitrary input:
// whatever it renders, PostgreSQL renders alike.
func FuzzJSONBText(f *testing.F) {
	for _, c := range jsonbTextCases {
		f.Add(c)
	}
	db := pgtest.Open(f)
	f.Fuzz(func(t *testing.T, doc string) {
		got, ok := jsonbText(nil, []byte(doc))
		if !ok {
			return
		}
		want := renderInPostgres(t, db, []string{doc})[0]
		if string(got) != want {
			t.Fatalf("jsonbText(%q) = %q, PostgreSQL renders %q", doc, got, want)
		}
	})
}
