package eventstore

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
)

// Registry maps Go event types to the type names stored beside their JSON
// payloads, and decodes payloads back into the registered Go types.
//
// Register each event type once at start-up, before appending or reading.
// A Registry is safe for concurrent use.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]reflect.Type
	byType map[reflect.Type]string
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{byName: map[string]reflect.Type{}, byType: map[reflect.Type]string{}}
}

// Register adds the Go type E under name. Appends accept values of E and *E;
// reads decode payloads stored under name into a value of E (not a pointer).
//
// It returns an *InvalidArgumentError when name is empty or cannot be stored
// as PostgreSQL text (it contains a NUL byte or is not valid UTF-8, see
// CheckText), E is a pointer or interface type, or either the name or the
// type is already registered under something else. Registering the same pair
// twice is a no-op.
func Register[E any](r *Registry, name string) error {
	t := reflect.TypeFor[E]()
	if name == "" {
		return &InvalidArgumentError{Field: "event type name", Reason: "must not be empty"}
	}
	if err := CheckText(name); err != nil {
		return &InvalidArgumentError{Field: "event type name", Reason: fmt.Sprintf("%q %v", name, err)}
	}
	if t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface {
		return &InvalidArgumentError{Field: "event type " + t.String(), Reason: "register the value type, not a pointer or interface"}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.byName[name]; ok {
		if prev == t {
			return nil
		}
		return &InvalidArgumentError{Field: "event type name", Reason: fmt.Sprintf("%q is already registered for %s", name, prev)}
	}
	if prev, ok := r.byType[t]; ok {
		return &InvalidArgumentError{Field: "event type " + t.String(), Reason: fmt.Sprintf("already registered as %q", prev)}
	}
	r.byName[name] = t
	r.byType[t] = name
	return nil
}

// MustRegister is Register that panics on error, for package-level set-up.
func MustRegister[E any](r *Registry, name string) {
	if err := Register[E](r, name); err != nil {
		panic(err)
	}
}

// NameOf returns the name registered for v's type (v may be a value or a
// pointer to one), or an *UnknownEventTypeError.
func (r *Registry) NameOf(v any) (string, error) {
	t := reflect.TypeOf(v)
	if t == nil {
		return "", &UnknownEventTypeError{GoType: "<nil>"}
	}
	r.mu.RLock()
	name, ok := r.byType[t]
	if !ok && t.Kind() == reflect.Pointer {
		name, ok = r.byType[t.Elem()]
	}
	r.mu.RUnlock()
	if !ok {
		return "", &UnknownEventTypeError{GoType: t.String()}
	}
	return name, nil
}

// Has reports whether name is registered.
func (r *Registry) Has(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.byName[name]
	return ok
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Encode returns the registered name of v's type and v as JSON. Errors are an
// *UnknownEventTypeError or a *PayloadError.
func (r *Registry) Encode(v any) (name string, payload []byte, err error) {
	name, err = r.NameOf(v)
	if err != nil {
		return "", nil, err
	}
	payload, err = json.Marshal(v)
	if err != nil {
		return "", nil, &PayloadError{Type: name, Op: "encode", Err: err}
	}
	return name, payload, nil
}

// Decode decodes payload into a new value of the type registered as name and
// returns that value (not a pointer). Errors are an *UnknownEventTypeError or
// a *PayloadError.
func (r *Registry) Decode(name string, payload []byte) (any, error) {
	r.mu.RLock()
	t, ok := r.byName[name]
	r.mu.RUnlock()
	if !ok {
		return nil, &UnknownEventTypeError{Name: name}
	}
	p := reflect.New(t)
	if err := json.Unmarshal(payload, p.Interface()); err != nil {
		return nil, &PayloadError{Type: name, Op: "decode", Err: err}
	}
	return p.Elem().Interface(), nil
}
