package memory

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// KeyStore is an in-memory eventstore.KeyStore, for tests and demos: the
// wrapped data keys of subjects (docs/compliance.md), gone with the
// process. Create it with NewKeyStore. Safe for concurrent use.
type KeyStore struct {
	mu   sync.Mutex
	keys map[uuid.UUID]eventstore.WrappedKey
	live map[string]uuid.UUID // subject -> its live key
}

var _ eventstore.KeyStore = (*KeyStore)(nil)

// NewKeyStore returns an empty KeyStore.
func NewKeyStore() *KeyStore {
	return &KeyStore{keys: map[uuid.UUID]eventstore.WrappedKey{}, live: map[string]uuid.UUID{}}
}

// SubjectKeys returns the live key of each of subjects that has one.
// Errors: an error wrapping ctx.Err() when ctx is already done.
func (k *KeyStore) SubjectKeys(ctx context.Context, subjects []string) ([]eventstore.WrappedKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: subject keys: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []eventstore.WrappedKey
	for _, s := range subjects {
		if id, ok := k.live[s]; ok {
			out = append(out, k.copyOf(id))
		}
	}
	return out, nil
}

// CreateKeys stores keys for subjects without a live key and returns the
// live key of each of their subjects. Errors: an
// *eventstore.InvalidArgumentError for a key without an ID, a subject or
// a wrapped key, or whose ID is stored; an error wrapping ctx.Err() when
// ctx is already done.
func (k *KeyStore) CreateKeys(ctx context.Context, keys []eventstore.WrappedKey) ([]eventstore.WrappedKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: create keys: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range keys {
		if _, taken := k.keys[w.ID]; w.ID == uuid.Nil || w.Subject == "" || w.Wrapped == nil || taken {
			return nil, fmt.Errorf("memory: create keys: %w", &eventstore.InvalidArgumentError{Field: "keys", Reason: "each needs a new ID, a subject and a wrapped key"})
		}
	}
	now := time.Now().UTC()
	out := make([]eventstore.WrappedKey, 0, len(keys))
	for _, w := range keys {
		if _, ok := k.live[w.Subject]; !ok {
			w.Wrapped, w.CreatedAt, w.ForgottenAt = bytes.Clone(w.Wrapped), now, time.Time{}
			k.keys[w.ID] = w
			k.live[w.Subject] = w.ID
		}
		out = append(out, k.copyOf(k.live[w.Subject]))
	}
	return out, nil
}

// Keys returns the keys with the given IDs, forgotten ones with Wrapped
// nil; IDs never stored are left out. Errors: an error wrapping ctx.Err()
// when ctx is already done.
func (k *KeyStore) Keys(ctx context.Context, ids []uuid.UUID) ([]eventstore.WrappedKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: keys: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []eventstore.WrappedKey
	for _, id := range ids {
		if _, ok := k.keys[id]; ok {
			out = append(out, k.copyOf(id))
		}
	}
	return out, nil
}

// Forget destroys the wrapped key of subject's live key, keeping its
// tombstone, and returns its ID (none when there is no live key). Errors:
// an error wrapping ctx.Err() when ctx is already done.
func (k *KeyStore) Forget(ctx context.Context, subject string) ([]uuid.UUID, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: forget: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	id, ok := k.live[subject]
	if !ok {
		return nil, nil
	}
	w := k.keys[id]
	clear(w.Wrapped)
	w.Wrapped, w.ForgottenAt = nil, time.Now().UTC()
	k.keys[id] = w
	delete(k.live, subject)
	return []uuid.UUID{id}, nil
}

// copyOf returns the key id, sharing no memory with k. k.mu is held.
func (k *KeyStore) copyOf(id uuid.UUID) eventstore.WrappedKey {
	w := k.keys[id]
	w.Wrapped = bytes.Clone(w.Wrapped)
	return w
}
