package httpapi

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIfMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		v    int64
		has  bool
		fail bool
	}{
		{"", 0, false, false},
		{"3", 3, true, false},
		{`"3"`, 3, true, false},
		{` W/"12" `, 12, true, false},
		{"0", 0, false, true},
		{"-1", 0, false, true},
		{"abc", 0, false, true},
		{`"3`, 0, false, true},
		{"99999999999999999999", 0, false, true},
	} {
		v, has, err := parseIfMatch(tc.in)
		if (err != nil) != tc.fail || v != tc.v || has != tc.has {
			t.Errorf("parseIfMatch(%q) = %d, %v, %v; want %d, %v, fail %v", tc.in, v, has, err, tc.v, tc.has, tc.fail)
		}
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	type body struct {
		N *int64 `json:"n"`
	}
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"n":1}`, true},
		{` {"n":1} `, true},
		{`{}`, true},
		{``, false},
		{`null`, false},
		{`{"n":1}{}`, false},
		{`{"n":1} x`, false},
		{`{"m":1}`, false},
		{`{"n":1.5}`, false},
		{`{"n":"1"}`, false},
		{`[]`, false},
		{`{"n":1`, false},
	} {
		var b body
		err := decode([]byte(tc.in), &b)
		if (err == nil) != tc.ok {
			t.Errorf("decode(%q): %v, want ok %v", tc.in, err, tc.ok)
		}
		var bad *badRequestError
		if err != nil && !errors.As(err, &bad) {
			t.Errorf("decode(%q): %T is not a *badRequestError", tc.in, err)
		}
	}
	if err := decodeEmpty(nil); err != nil {
		t.Errorf("decodeEmpty(nil): %v", err)
	}
	if err := decodeEmpty([]byte(`{"x":1}`)); err == nil {
		t.Error(`decodeEmpty({"x":1}): no error`)
	}
}

func TestValidKeyAndHash(t *testing.T) {
	t.Parallel()
	for k, ok := range map[string]bool{"a": true, "order-42 retry": true, "": false, "é": false, "a\nb": false, strings.Repeat("k", MaxIdempotencyKeyLength): true, strings.Repeat("k", MaxIdempotencyKeyLength+1): false} {
		if validKey(k) != ok {
			t.Errorf("validKey(%q) = %v, want %v", k, !ok, ok)
		}
	}
	base := requestHash("POST", "/orders", "", []byte(`{}`))
	for _, other := range []string{
		requestHash("PUT", "/orders", "", []byte(`{}`)),
		requestHash("POST", "/orders/x", "", []byte(`{}`)),
		requestHash("POST", "/orders", "1", []byte(`{}`)),
		requestHash("POST", "/orders", "", []byte(`{ }`)),
	} {
		if other == base {
			t.Error("different requests hash alike")
		}
	}
}

func TestValidOrderID(t *testing.T) {
	t.Parallel()
	for id, ok := range map[string]bool{
		"01a21cd1-b030-7d47-bc00-d820529b478d":   true,
		"01A21CD1-B030-7D47-BC00-D820529B478D":   false,
		"{01a21cd1-b030-7d47-bc00-d820529b478d}": false,
		"01a21cd1b0307d47bc00d820529b478d":       false,
		"x":                                      false,
	} {
		if validOrderID(id) != ok {
			t.Errorf("validOrderID(%q) = %v, want %v", id, !ok, ok)
		}
	}
}
