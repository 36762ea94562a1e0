package eventstore

import "encoding/json"

// Codec encodes event payloads to JSON and decodes them into the registered
// Go types: the one place a Registry turns events into bytes and back
// (SetCodec). Everything around it stays the Registry's: type names and
// schema versions, upcasters (which read and write JSON themselves), the
// encryption and decryption of personal fields, and the checks of what
// PostgreSQL can store.
//
// A Codec must read and write the JSON encoding/json does for the same
// types — field names and tags, omitempty, json.Marshaler and
// json.Unmarshaler, unknown fields ignored, a JSON null leaving a field as
// it is — because payloads are stored as jsonb and read back by other
// code, older versions and other processes. Marshal must return valid JSON;
// Unmarshal is given a pointer to a new value of the registered type.
// Implementations must be safe for concurrent use.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is the default Codec: encoding/json.
type JSONCodec struct{}

// Marshal is json.Marshal.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal is json.Unmarshal.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// SetCodec makes r encode and decode event payloads with c; nil restores
// the default, JSONCodec. The sub-package eventstore/gojson has a faster
// one (github.com/goccy/go-json). Set it at start-up, with the event
// types. Safe for concurrent use.
func (r *Registry) SetCodec(c Codec) {
	if c == nil {
		r.codec.Store(nil)
		return
	}
	r.codec.Store(&c)
}

// Codec returns the Codec set with SetCodec, or JSONCodec.
func (r *Registry) Codec() Codec {
	if c := r.codec.Load(); c != nil {
		return *c
	}
	return defaultCodec
}

// defaultCodec is the Codec of registries without one: JSONCodec, but the
// package's tests run again with another (export_test.go).
var defaultCodec Codec = JSONCodec{}
