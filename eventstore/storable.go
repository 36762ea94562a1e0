package eventstore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// What PostgreSQL can store. Every store refuses, before writing, what the
// PostgreSQL store could not store, so that the stores agree on what is bad
// input (guarantee 8 in docs/guarantees.md). The limits are PostgreSQL's
// (15 and later; src/include/utils/jsonb.h and numeric.c).
const (
	// jsonbMaxLen is JENTRY_OFFLENMASK: the largest string, and the largest
	// total size of one array's or object's contents, in a jsonb value.
	jsonbMaxLen = 0x0FFFFFFF
	// jsonbMaxElems and jsonbMaxPairs are JSONB_MAX_ELEMS and
	// JSONB_MAX_PAIRS: MaxAllocSize over the size of a JsonbValue (32
	// bytes) and a JsonbPair (72 bytes).
	jsonbMaxElems = 0x3FFFFFFF / 32
	jsonbMaxPairs = 0x3FFFFFFF / 72
	// numericMaxDScale is the largest display scale of a numeric (digits
	// after the decimal point, as written, less the exponent).
	numericMaxDScale = 0x3FFF
	// numericMaxWeight is the largest weight of a numeric, in base-10000
	// digits: the leading digit's decimal power must be below
	// 4*(numericMaxWeight+1).
	numericMaxWeight = 32767
	// numericMaxExponent is the bound numeric_in puts on a written
	// exponent (INT_MAX/2), even for zero.
	numericMaxExponent = 1<<30 - 1
)

// CheckText returns an error when PostgreSQL cannot store s as text: it
// contains a NUL byte or is not valid UTF-8. Stores apply it to event type
// names (Register) and snapshot types.
func CheckText(s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("contains a NUL byte at offset %d (PostgreSQL text cannot hold it)", i)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	return nil
}

// CheckJSONB returns an error when PostgreSQL's jsonb would refuse doc, a
// JSON text that encoding/json accepts (json.Valid). encoding/json accepts
// more than jsonb does: CheckJSONB also refuses
//
//   - bytes that are not valid UTF-8 (in strings, encoding/json passes them
//     through json.RawMessage and custom MarshalJSON output untouched);
//   - the escape \u0000 (jsonb cannot hold U+0000), in a value or a key;
//   - a \u escape of a UTF-16 surrogate that is not part of a high-low pair
//     (e.g. "\ud800" alone);
//   - numbers outside PostgreSQL's numeric range: a leading digit at 10^131072
//     or beyond, more than 16383 digits after the decimal point as written
//     (the exponent counted: 1e-16384, 0.0e-16383), or an exponent of
//     magnitude 2^30-1 or more, even on zero;
//   - a string longer than 2^28-1 bytes, an array of more than 33554431
//     elements, an object of more than 14913080 keys, or an array or
//     object whose jsonb contents may exceed 2^28-1 bytes. jsonb's size
//     depends on alignment padding, so this is computed with the most
//     padding there could be: a document within a few bytes per value of
//     the limit is refused although PostgreSQL might just store it.
//
// Documents nested deeper than encoding/json's limit of 10,000 are invalid
// JSON to begin with.
func CheckJSONB(doc []byte) error {
	if !utf8.Valid(doc) {
		return errors.New("the JSON text is not valid UTF-8")
	}
	// The frames of documents up to 32 levels deep live on the stack (run
	// keeps its stack in a local variable so that it does not escape): no
	// allocation for the check of a usual payload.
	var frames [32]jsonbFrame
	c := jsonbChecker{doc: doc}
	return c.run(frames[:0])
}

// jsonbChecker walks a JSON text once (run), keeping for each open array
// or object its count of entries and the most its jsonb contents can take.
type jsonbChecker struct {
	doc []byte
}

type jsonbFrame struct {
	object  bool
	entries int64 // values, plus keys in an object
	size    int64 // upper bound of the contents' bytes
}

// Upper bounds of the jsonb layout: a container has a 4-byte header and a
// 4-byte JEntry per element (two per object pair) and is aligned to 4 bytes;
// a numeric is aligned to 4 bytes and has a 4-byte varlena header, a 4-byte
// numeric header and 2 bytes per base-10000 digit.
const (
	jsonbAlignMax     = 3
	jsonbHeader       = 4
	jsonbEntry        = 4
	jsonbNumericFixed = jsonbAlignMax + 4 + 4
)

// run checks c.doc with stack, an empty slice to keep the open containers
// in.
func (c *jsonbChecker) run(stack []jsonbFrame) error {
	doc := c.doc
	for i := 0; i < len(doc); {
		switch b := doc[i]; b {
		case ' ', '\t', '\n', '\r', ',', ':':
			i++
		case '{', '[':
			stack = append(stack, jsonbFrame{object: b == '{'})
			i++
		case '}', ']':
			if len(stack) == 0 {
				return fmt.Errorf("unexpected %q at offset %d", b, i)
			}
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if f.object && f.entries/2 > jsonbMaxPairs {
				return fmt.Errorf("an object has %d keys, more than jsonb's maximum of %d", f.entries/2, jsonbMaxPairs)
			}
			if !f.object && f.entries > jsonbMaxElems {
				return fmt.Errorf("an array has %d elements, more than jsonb's maximum of %d", f.entries, jsonbMaxElems)
			}
			size := jsonbAlignMax + jsonbHeader + jsonbEntry*f.entries + f.size
			if size > jsonbMaxLen {
				return fmt.Errorf("an array or object may take %d bytes as jsonb, more than jsonb's maximum of %d", size, jsonbMaxLen)
			}
			jsonbAdd(stack, size)
			i++
		case '"':
			n, next, err := c.str(i)
			if err != nil {
				return err
			}
			if n > jsonbMaxLen {
				return fmt.Errorf("a string has %d bytes, more than jsonb's maximum of %d", n, jsonbMaxLen)
			}
			jsonbAdd(stack, n)
			i = next
		case 't', 'n':
			jsonbAdd(stack, 0)
			i += 4
		case 'f':
			jsonbAdd(stack, 0)
			i += 5
		default:
			if b != '-' && (b < '0' || b > '9') {
				return fmt.Errorf("unexpected %q at offset %d", b, i)
			}
			digits, next, err := c.number(i)
			if err != nil {
				return err
			}
			jsonbAdd(stack, jsonbNumericFixed+2*(int64(digits+3)/4+1))
			i = next
		}
	}
	return nil
}

// jsonbAdd counts a value of at most size bytes in the innermost container of
// stack.
func jsonbAdd(stack []jsonbFrame, size int64) {
	if len(stack) == 0 {
		return
	}
	f := &stack[len(stack)-1]
	f.entries++
	f.size += size
}

// str checks the string starting with the quote at doc[i] and returns its
// length in bytes once unescaped and the offset after its closing quote.
func (c *jsonbChecker) str(i int) (n int64, next int, err error) {
	doc := c.doc
	for j := i + 1; j < len(doc); {
		switch b := doc[j]; b {
		case '"':
			return n, j + 1, nil
		case '\\':
			if j+1 >= len(doc) {
				return 0, 0, errors.New("unterminated escape")
			}
			if doc[j+1] != 'u' {
				n++
				j += 2
				continue
			}
			r, ok := hex4(doc, j+2)
			if !ok {
				return 0, 0, fmt.Errorf("bad \\u escape at offset %d", j)
			}
			switch {
			case r == 0:
				return 0, 0, errors.New(`a string contains \u0000 (jsonb cannot hold U+0000)`)
			case r >= 0xD800 && r <= 0xDBFF:
				lo, ok := rune(0), false
				if j+7 < len(doc) && doc[j+6] == '\\' && doc[j+7] == 'u' {
					lo, ok = hex4(doc, j+8)
				}
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return 0, 0, fmt.Errorf(`a string has the escape \u%04x, a UTF-16 high surrogate not followed by a low one (jsonb refuses it)`, r)
				}
				n += 4
				j += 12
			case r >= 0xDC00 && r <= 0xDFFF:
				return 0, 0, fmt.Errorf(`a string has the escape \u%04x, a UTF-16 low surrogate without a high one before it (jsonb refuses it)`, r)
			default:
				n += int64(utf8.RuneLen(r))
				j += 6
			}
		default:
			// Plain bytes up to the next quote or backslash.
			k := bytes.IndexByte(doc[j:], '"')
			if k < 0 {
				k = len(doc) - j
			}
			if b := bytes.IndexByte(doc[j:j+k], '\\'); b >= 0 {
				k = b
			}
			n += int64(k)
			j += k
		}
	}
	return 0, 0, errors.New("unterminated string")
}

func hex4(doc []byte, at int) (rune, bool) {
	if at+4 > len(doc) {
		return 0, false
	}
	var r rune
	for _, b := range doc[at : at+4] {
		switch {
		case b >= '0' && b <= '9':
			r = r<<4 | rune(b-'0')
		case b >= 'a' && b <= 'f':
			r = r<<4 | rune(b-'a'+10)
		case b >= 'A' && b <= 'F':
			r = r<<4 | rune(b-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number checks the JSON number starting at doc[i] against PostgreSQL's
// numeric range, the way numeric_in parses it, and returns its count of
// mantissa digits and the offset after it.
func (c *jsonbChecker) number(i int) (digits, next int, err error) {
	doc := c.doc
	j := i
	if doc[j] == '-' {
		j++
	}
	var nInt, nFrac int
	firstNonZero := -1 // index among the mantissa digits
	for ; j < len(doc) && doc[j] >= '0' && doc[j] <= '9'; j++ {
		if firstNonZero < 0 && doc[j] != '0' {
			firstNonZero = nInt
		}
		nInt++
	}
	if j < len(doc) && doc[j] == '.' {
		for j++; j < len(doc) && doc[j] >= '0' && doc[j] <= '9'; j++ {
			if firstNonZero < 0 && doc[j] != '0' {
				firstNonZero = nInt + nFrac
			}
			nFrac++
		}
	}
	var exp int64
	if j < len(doc) && (doc[j] == 'e' || doc[j] == 'E') {
		j++
		neg := false
		if j < len(doc) && (doc[j] == '+' || doc[j] == '-') {
			neg = doc[j] == '-'
			j++
		}
		for ; j < len(doc) && doc[j] >= '0' && doc[j] <= '9'; j++ {
			if exp < 1<<40 {
				exp = exp*10 + int64(doc[j]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	text := doc[i:j]
	if len(text) > 40 {
		text = append(text[:37:37], "..."...)
	}
	if exp >= numericMaxExponent || exp <= -numericMaxExponent {
		return 0, 0, fmt.Errorf("the number %s is out of PostgreSQL's numeric range (exponent too large)", text)
	}
	if dscale := int64(nFrac) - exp; dscale > numericMaxDScale {
		return 0, 0, fmt.Errorf("the number %s is out of PostgreSQL's numeric range (more than %d digits after the decimal point)", text, numericMaxDScale)
	}
	if firstNonZero >= 0 {
		// The decimal power of the leading digit, and its base-10000 weight.
		p := int64(nInt-1-firstNonZero) + exp
		w := p / 4
		if p < 0 && p%4 != 0 {
			w--
		}
		if w > numericMaxWeight {
			return 0, 0, fmt.Errorf("the number %s is out of PostgreSQL's numeric range (10^%d or more)", text, 4*(numericMaxWeight+1))
		}
	}
	return nInt + nFrac, j, nil
}
