package eventstore

import (
	"slices"
	"unicode/utf8"
)

// appendJSON appends m as json.Marshal(m.Map()) would write it — a flat
// object of strings, keys sorted, HTML-safe escaping — without the map and
// without reflection: appends with metadata, a trace context among it,
// encode it once per event.
func (m Metadata) appendJSON(dst []byte) []byte {
	type kv struct{ k, v string }
	var fixed [8]kv
	pairs := fixed[:0]
	for k, v := range m.Extra {
		switch k {
		case MetadataCorrelationID, MetadataCausationID, MetadataActor, MetadataOnBehalfOf, MetadataReason:
			continue // the fields win, as in Map
		}
		pairs = append(pairs, kv{k, v})
	}
	for _, p := range [...]kv{{MetadataCorrelationID, m.CorrelationID}, {MetadataCausationID, m.CausationID}, {MetadataActor, m.Actor},
		{MetadataOnBehalfOf, m.OnBehalfOf}, {MetadataReason, m.Reason}} {
		if p.v != "" {
			pairs = append(pairs, p)
		}
	}
	slices.SortFunc(pairs, func(a, b kv) int {
		switch {
		case a.k < b.k:
			return -1
		case a.k > b.k:
			return 1
		}
		return 0
	})
	dst = append(dst, '{')
	for i, p := range pairs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, p.k)
		dst = append(dst, ':')
		dst = appendJSONString(dst, p.v)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string exactly as encoding/json
// does with HTML escaping (its default): ", \ and control characters
// escaped (\b, \f, \n, \r, \t short), <, > and & as \u003c, \u003e,
// \u0026, U+2028 and U+2029 escaped, and each invalid UTF-8 byte replaced
// by \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
