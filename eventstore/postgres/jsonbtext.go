package postgres

import (
	"bytes"
	"encoding/hex"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonbText appends to dst the text PostgreSQL's jsonb output gives for the
// JSON text doc, what doc::jsonb::text returns: keys sorted shorter first
// then bytewise, ", " and ": " between entries, strings re-escaped as
// escape_json does, numbers as numeric_out prints them. An event's digest
// covers that text of its payload and metadata (eventstore.ChainDigest), so
// with it the store computes digests itself, without the server rendering
// the values (clientChain).
//
// ok is false for a document it does not render, or might not render,
// exactly as PostgreSQL does: invalid JSON, duplicate keys (jsonb keeps the
// last), \u0000 (jsonb refuses it), lone surrogates, nesting beyond
// jsonbTextMaxDepth, numbers with more than jsonbTextMaxDigits digits or
// an exponent beyond ±jsonbTextMaxExponent. The caller then leaves the
// digest to the server. TestJSONBTextMatchesPostgres and FuzzJSONBText
// compare it with PostgreSQL's.
func jsonbText(dst, doc []byte) (out []byte, ok bool) {
	var r jsonbRenderer
	return r.render(dst, doc)
}

// render is jsonbText reusing r's buffers from an earlier document.
func (r *jsonbRenderer) render(dst, doc []byte) (out []byte, ok bool) {
	r.doc, r.i, r.out = doc, 0, dst
	r.keys, r.members = r.keys[:0], r.members[:0]
	r.ws()
	ok = r.value(0)
	if ok {
		r.ws()
		ok = r.i == len(r.doc)
	}
	out, r.doc, r.out = r.out, nil, nil
	if cap(r.keys) > 64<<10 || cap(r.tmp) > 64<<10 {
		r.keys, r.tmp = nil, nil // a large document's buffers are not kept
	}
	if !ok {
		return dst, false
	}
	return out, true
}

const (
	jsonbTextMaxDepth    = 256
	jsonbTextMaxDigits   = 300
	jsonbTextMaxExponent = 400
)

// jsonbRenderer renders one document: out is the text so far; keys holds
// the decoded keys of the open objects (and, past them, a string value
// while it is decoded and re-escaped), members their entries' places in
// out, tmp the copy an object's entries are sorted from.
type jsonbRenderer struct {
	doc     []byte
	i       int
	out     []byte
	keys    []byte
	members []jsonbMember
	tmp     []byte
}

// jsonbMember is one entry of an object: its decoded key in keys[ks:ke],
// its rendered text (`"key": value`) in out[start:end].
type jsonbMember struct {
	ks, ke, start, end int
}

func (r *jsonbRenderer) ws() {
	for r.i < len(r.doc) {
		switch r.doc[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *jsonbRenderer) literal(word string) bool {
	if !bytes.HasPrefix(r.doc[r.i:], []byte(word)) {
		return false
	}
	r.i += len(word)
	r.out = append(r.out, word...)
	return true
}

func (r *jsonbRenderer) value(depth int) bool {
	if r.i >= len(r.doc) || depth > jsonbTextMaxDepth {
		return false
	}
	switch c := r.doc[r.i]; {
	case c == '{':
		return r.object(depth)
	case c == '[':
		return r.array(depth)
	case c == '"':
		start := len(r.keys)
		if !r.str() {
			return false
		}
		r.out = appendJSONBString(r.out, r.keys[start:])
		r.keys = r.keys[:start]
		return true
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return r.number()
	}
	return false
}

func (r *jsonbRenderer) array(depth int) bool {
	r.i++ // [
	r.out = append(r.out, '[')
	r.ws()
	if r.i < len(r.doc) && r.doc[r.i] == ']' {
		r.i++
		r.out = append(r.out, ']')
		return true
	}
	for first := true; ; first = false {
		if !first {
			r.out = append(r.out, ", "...)
		}
		r.ws()
		if !r.value(depth + 1) {
			return false
		}
		r.ws()
		if r.i >= len(r.doc) {
			return false
		}
		switch r.doc[r.i] {
		case ',':
			r.i++
		case ']':
			r.i++
			r.out = append(r.out, ']')
			return true
		default:
			return false
		}
	}
}

func (r *jsonbRenderer) object(depth int) bool {
	r.i++ // {
	open := len(r.out)
	r.out = append(r.out, '{')
	r.ws()
	if r.i < len(r.doc) && r.doc[r.i] == '}' {
		r.i++
		r.out = append(r.out, '}')
		return true
	}
	base, kbase := len(r.members), len(r.keys)
	for {
		r.ws()
		if r.i >= len(r.doc) || r.doc[r.i] != '"' {
			return false
		}
		m := jsonbMember{ks: len(r.keys)}
		if !r.str() {
			return false
		}
		m.ke, m.start = len(r.keys), len(r.out)
		r.out = appendJSONBString(r.out, r.keys[m.ks:m.ke])
		r.out = append(r.out, ": "...)
		r.ws()
		if r.i >= len(r.doc) || r.doc[r.i] != ':' {
			return false
		}
		r.i++
		r.ws()
		if !r.value(depth + 1) {
			return false
		}
		m.end = len(r.out)
		r.members = append(r.members, m)
		r.ws()
		if r.i >= len(r.doc) {
			return false
		}
		if r.doc[r.i] == ',' {
			r.i++
			continue
		}
		if r.doc[r.i] != '}' {
			return false
		}
		r.i++
		break
	}
	ms := r.members[base:]
	key := func(m jsonbMember) []byte { return r.keys[m.ks:m.ke] }
	// jsonb orders keys by length, then bytewise (lengthCompareJsonbString).
	cmp := func(a, b jsonbMember) int {
		ka, kb := key(a), key(b)
		if len(ka) != len(kb) {
			return len(ka) - len(kb)
		}
		return bytes.Compare(ka, kb)
	}
	if !slices.IsSortedFunc(ms, cmp) {
		slices.SortStableFunc(ms, cmp)
	}
	for j := 1; j < len(ms); j++ {
		if cmp(ms[j-1], ms[j]) == 0 {
			return false // jsonb keeps the last of duplicate keys: let the server render it
		}
	}
	r.tmp = append(r.tmp[:0], r.out[open:]...)
	r.out = append(r.out[:open], '{')
	for j, m := range ms {
		if j > 0 {
			r.out = append(r.out, ", "...)
		}
		r.out = append(r.out, r.tmp[m.start-open:m.end-open]...)
	}
	r.out = append(r.out, '}')
	r.members, r.keys = r.members[:base], r.keys[:kbase]
	return true
}

// jsonbPlain marks the bytes that a JSON string holds as they are and that
// escape_json writes as they are: not '"', '\\' or a control character.
// Bytes of multi-byte UTF-8 sequences are plain too; str checks them.
var jsonbPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str decodes the JSON string at r.i onto r.keys.
func (r *jsonbRenderer) str() bool {
	r.i++ // "
	for r.i < len(r.doc) {
		if s := r.i; jsonbPlain[r.doc[s]] {
			ascii := true
			for r.i < len(r.doc) && jsonbPlain[r.doc[r.i]] {
				ascii = ascii && r.doc[r.i] < utf8.RuneSelf
				r.i++
			}
			if !ascii && !utf8.Valid(r.doc[s:r.i]) {
				return false
			}
			r.keys = append(r.keys, r.doc[s:r.i]...)
			continue
		}
		c := r.doc[r.i]
		switch {
		case c == '"':
			r.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if r.i+1 >= len(r.doc) {
				return false
			}
			e := r.doc[r.i+1]
			r.i += 2
			switch e {
			case '"', '\\', '/':
				r.keys = append(r.keys, e)
			case 'b':
				r.keys = append(r.keys, '\b')
			case 'f':
				r.keys = append(r.keys, '\f')
			case 'n':
				r.keys = append(r.keys, '\n')
			case 'r':
				r.keys = append(r.keys, '\r')
			case 't':
				r.keys = append(r.keys, '\t')
			case 'u':
				c1, ok := r.hex4()
				if !ok || c1 == 0 {
					return false
				}
				if utf16.IsSurrogate(c1) {
					if c1 >= 0xDC00 || r.i+1 >= len(r.doc) || r.doc[r.i] != '\\' || r.doc[r.i+1] != 'u' {
						return false
					}
					r.i += 2
					c2, ok := r.hex4()
					if !ok {
						return false
					}
					c1 = utf16.DecodeRune(c1, c2)
					if c1 == utf8.RuneError {
						return false
					}
				}
				r.keys = utf8.AppendRune(r.keys, c1)
			default:
				return false
			}
		default:
			return false // cannot happen: the plain bytes are consumed above
		}
	}
	return false
}

func (r *jsonbRenderer) hex4() (rune, bool) {
	var v [2]byte
	if r.i+4 > len(r.doc) {
		return 0, false
	}
	if _, err := hex.Decode(v[:], r.doc[r.i:r.i+4]); err != nil {
		return 0, false
	}
	r.i += 4
	return rune(v[0])<<8 | rune(v[1]), true
}

// appendJSONBString appends s quoted as PostgreSQL's escape_json does:
// the two-character escapes for \b \f \n \r \t " and \, \u00xx (lower-case
// hex) for the other control characters, every other byte as it is.
func appendJSONBString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if jsonbPlain[s[i]] {
			j := i + 1
			for j < len(s) && jsonbPlain[s[j]] {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j - 1
			continue
		}
		switch c := s[i]; c {
		case '\b':
			dst = append(dst, `\b`...)
		case '\f':
			dst = append(dst, `\f`...)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		case '"':
			dst = append(dst, `\"`...)
		case '\\':
			dst = append(dst, `\\`...)
		default:
			if c < 0x20 {
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			} else {
				dst = append(dst, c)
			}
		}
	}
	return append(dst, '"')
}

// number renders the JSON number at r.i as numeric_out prints the numeric
// numeric_in makes of it: plain decimal notation, as many fraction digits
// as the text had less its exponent (at least none), no sign for zero.
func (r *jsonbRenderer) number() bool {
	neg := false
	if r.doc[r.i] == '-' {
		neg = true
		r.i++
	}
	intStart := r.i
	if r.i < len(r.doc) && r.doc[r.i] == '0' {
		r.i++
	} else {
		for r.i < len(r.doc) && r.doc[r.i] >= '0' && r.doc[r.i] <= '9' {
			r.i++
		}
	}
	intDigits := r.doc[intStart:r.i]
	if len(intDigits) == 0 {
		return false
	}
	var frac []byte
	if r.i < len(r.doc) && r.doc[r.i] == '.' {
		r.i++
		s := r.i
		for r.i < len(r.doc) && r.doc[r.i] >= '0' && r.doc[r.i] <= '9' {
			r.i++
		}
		frac = r.doc[s:r.i]
		if len(frac) == 0 {
			return false
		}
	}
	exp := 0
	if r.i < len(r.doc) && (r.doc[r.i] == 'e' || r.doc[r.i] == 'E') {
		r.i++
		s := r.i
		if r.i < len(r.doc) && (r.doc[r.i] == '+' || r.doc[r.i] == '-') {
			r.i++
		}
		d := r.i
		for r.i < len(r.doc) && r.doc[r.i] >= '0' && r.doc[r.i] <= '9' {
			r.i++
		}
		if r.i == d || r.i-d > 6 {
			return false
		}
		e, err := strconv.Atoi(string(r.doc[s:r.i]))
		if err != nil {
			return false
		}
		exp = e
	}
	if len(intDigits)+len(frac) > jsonbTextMaxDigits || exp > jsonbTextMaxExponent || exp < -jsonbTextMaxExponent {
		return false
	}
	if len(frac) == 0 && exp == 0 {
		// An integer: its text, but "-0" is "0".
		if neg && !(len(intDigits) == 1 && intDigits[0] == '0') {
			r.out = append(r.out, '-')
		}
		r.out = append(r.out, intDigits...)
		return true
	}
	// The digits d = intDigits+frac with the decimal point after point of
	// them (point may be outside d), and scale digits after the point.
	digit := func(k int) byte { // the k-th digit of d, 0 outside it
		switch {
		case k < 0 || k >= len(intDigits)+len(frac):
			return '0'
		case k < len(intDigits):
			return intDigits[k]
		}
		return frac[k-len(intDigits)]
	}
	point := len(intDigits) + exp
	scale := max(len(frac)-exp, 0)
	zero := true
	for k := range len(intDigits) + len(frac) {
		if digit(k) != '0' {
			zero = false
			break
		}
	}
	if neg && !zero {
		r.out = append(r.out, '-')
	}
	// The integer part without leading zeros, "0" when it has none left.
	lead := 0
	for lead < point && digit(lead) == '0' {
		lead++
	}
	if lead >= point {
		r.out = append(r.out, '0')
	} else {
		for k := lead; k < point; k++ {
			r.out = append(r.out, digit(k))
		}
	}
	if scale > 0 {
		r.out = append(r.out, '.')
		for k := point; k < point+scale; k++ {
			r.out = append(r.out, digit(k))
		}
	}
	return true
}
