package eventstore

import (
	"context"
	"encoding/json"
	"maps"
)

// Metadata travels with every event: who caused it and why. It is stored as a
// JSON object whose well-known keys are "correlation_id", "causation_id",
// and the audit keys "actor", "on_behalf_of" and "reason" (see
// docs/compliance.md); Extra holds the user's free keys beside them, and the
// W3C trace context ("traceparent", "tracestate") that stores record for an
// append made under an OpenTelemetry span (see SpanContext).
//
// Metadata is a value; Clone it before changing a copy's Extra map.
type Metadata struct {
	// CorrelationID ties together every event caused by one request or
	// process, usually the first command's ID.
	CorrelationID string
	// CausationID is the ID of the message or event that caused this one.
	CausationID string
	// Actor names who acted: a user ID, a service name.
	Actor string
	// OnBehalfOf names whom the actor acted for, when not for themselves:
	// the customer a support agent acts for, the user a service acts for.
	OnBehalfOf string
	// Reason says why: a ticket, a legal basis, a free text the audit
	// trail should show.
	Reason string
	// Extra holds free keys. Keys named like the well-known ones are ignored
	// when encoding.
	Extra map[string]string
}

// Well-known metadata keys, as stored in the metadata column and flattened
// into broker message metadata.
const (
	MetadataCorrelationID = "correlation_id"
	MetadataCausationID   = "causation_id"
	MetadataActor         = "actor"
	MetadataOnBehalfOf    = "on_behalf_of"
	MetadataReason        = "reason"
)

// IsZero reports whether m carries nothing.
func (m Metadata) IsZero() bool {
	return m.CorrelationID == "" && m.CausationID == "" && m.Actor == "" && m.OnBehalfOf == "" && m.Reason == "" && len(m.Extra) == 0
}

// Clone returns a copy of m that shares no map with it.
func (m Metadata) Clone() Metadata {
	m.Extra = maps.Clone(m.Extra)
	return m
}

// Merge returns m with the fields set in over replacing its own; Extra keys
// are merged, over winning.
func (m Metadata) Merge(over Metadata) Metadata {
	out := m.Clone()
	if over.CorrelationID != "" {
		out.CorrelationID = over.CorrelationID
	}
	if over.CausationID != "" {
		out.CausationID = over.CausationID
	}
	if over.Actor != "" {
		out.Actor = over.Actor
	}
	if over.OnBehalfOf != "" {
		out.OnBehalfOf = over.OnBehalfOf
	}
	if over.Reason != "" {
		out.Reason = over.Reason
	}
	if len(over.Extra) > 0 {
		if out.Extra == nil {
			out.Extra = make(map[string]string, len(over.Extra))
		}
		maps.Copy(out.Extra, over.Extra)
	}
	return out
}

// Map flattens m into one map, well-known keys included when set.
func (m Metadata) Map() map[string]string {
	out := make(map[string]string, len(m.Extra)+5)
	maps.Copy(out, m.Extra)
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		} else {
			delete(out, k)
		}
	}
	set(MetadataCorrelationID, m.CorrelationID)
	set(MetadataCausationID, m.CausationID)
	set(MetadataActor, m.Actor)
	set(MetadataOnBehalfOf, m.OnBehalfOf)
	set(MetadataReason, m.Reason)
	return out
}

// MetadataFromMap is the inverse of Metadata.Map.
func MetadataFromMap(kv map[string]string) Metadata {
	var m Metadata
	for k, v := range kv {
		m.set(k, v)
	}
	return m
}

// set stores v under key k: the field of a standard key, else Extra.
func (m *Metadata) set(k, v string) {
	switch k {
	case MetadataCorrelationID:
		m.CorrelationID = v
	case MetadataCausationID:
		m.CausationID = v
	case MetadataActor:
		m.Actor = v
	case MetadataOnBehalfOf:
		m.OnBehalfOf = v
	case MetadataReason:
		m.Reason = v
	default:
		if m.Extra == nil {
			m.Extra = make(map[string]string)
		}
		m.Extra[k] = v
	}
}

// MarshalJSON encodes m as one flat JSON object of strings, keys sorted,
// as json.Marshal encodes m.Map().
func (m Metadata) MarshalJSON() ([]byte, error) { return m.appendJSON(nil), nil }

// UnmarshalJSON decodes a flat JSON object. Values that are not strings are
// kept as their JSON text.
func (m *Metadata) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	kv := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			s = string(v)
		}
		kv[k] = s
	}
	*m = MetadataFromMap(kv)
	return nil
}

type metadataKey struct{}

// WithMetadata returns a context carrying md merged over any metadata ctx
// already carries. Stores add it to every event appended with that context.
func WithMetadata(ctx context.Context, md Metadata) context.Context {
	return context.WithValue(ctx, metadataKey{}, MetadataFrom(ctx).Merge(md))
}

// MetadataFrom returns the metadata carried by ctx, or the zero Metadata. The
// result shares no map with the context's copy.
func MetadataFrom(ctx context.Context) Metadata {
	md, _ := ctx.Value(metadataKey{}).(Metadata)
	return md.Clone()
}

// WithCorrelationID returns a context whose metadata has the correlation ID id.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return WithMetadata(ctx, Metadata{CorrelationID: id})
}

// WithCausationID returns a context whose metadata has the causation ID id.
func WithCausationID(ctx context.Context, id string) context.Context {
	return WithMetadata(ctx, Metadata{CausationID: id})
}

// WithActor returns a context whose metadata names actor: who acted (a
// user ID, a service name), for the audit trail.
func WithActor(ctx context.Context, actor string) context.Context {
	return WithMetadata(ctx, Metadata{Actor: actor})
}

// WithOnBehalfOf returns a context whose metadata names whom the actor acts
// for (MetadataOnBehalfOf), e.g. the customer a support agent acts for.
func WithOnBehalfOf(ctx context.Context, principal string) context.Context {
	return WithMetadata(ctx, Metadata{OnBehalfOf: principal})
}

// WithReason returns a context whose metadata says why the events that
// follow are appended (MetadataReason): a ticket, a legal basis, a note
// for the audit trail.
func WithReason(ctx context.Context, reason string) context.Context {
	return WithMetadata(ctx, Metadata{Reason: reason})
}
