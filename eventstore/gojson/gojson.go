// Package gojson is an eventstore.Codec over github.com/goccy/go-json, a
// drop-in replacement for encoding/json that decodes event payloads with
// fewer allocations and less CPU. It writes and reads the same JSON as
// encoding/json, so stores may switch to it, and back, at any time:
//
//	reg := eventstore.NewRegistry()
//	reg.SetCodec(gojson.Codec{})
//
// The eventstore tests of decoding (upcasting, schema versions, personal
// data, the decoders' fuzz tests) and the stores' conformance suites run
// with it as with the default; see
// docs/concepts.md, "Codecs", and docs/benchmarks.md for the figures.
package gojson

import (
	json "github.com/goccy/go-json"
)

// Codec is an eventstore.Codec using github.com/goccy/go-json. The zero
// value is ready to use and safe for concurrent use.
type Codec struct{}

// Marshal is go-json's Marshal, which escapes HTML as encoding/json does.
func (Codec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal is go-json's Unmarshal.
func (Codec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
