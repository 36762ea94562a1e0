package eventstore

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// mapKeyStore is a minimal KeyStore for the cache tests (the memory
// store's imports this package).
type mapKeyStore struct {
	mu    sync.Mutex
	keys  map[uuid.UUID]WrappedKey
	calls int
}

func (m *mapKeyStore) SubjectKeys(_ context.Context, subjects []string) ([]WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	var out []WrappedKey
	for _, w := range m.keys {
		for _, s := range subjects {
			if w.Subject == s && w.Wrapped != nil {
				out = append(out, w)
			}
		}
	}
	return out, nil
}

func (m *mapKeyStore) CreateKeys(ctx context.Context, keys []WrappedKey) ([]WrappedKey, error) {
	m.mu.Lock()
	var subjects []string
	for _, w := range keys {
		m.keys[w.ID] = w
		subjects = append(subjects, w.Subject)
	}
	m.mu.Unlock()
	return m.SubjectKeys(ctx, subjects)
}

func (m *mapKeyStore) Keys(_ context.Context, ids []uuid.UUID) ([]WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	var out []WrappedKey
	for _, id := range ids {
		if w, ok := m.keys[id]; ok {
			out = append(out, w)
		}
	}
	return out, nil
}

func (m *mapKeyStore) Forget(_ context.Context, subject string) ([]uuid.UUID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uuid.UUID
	for id, w := range m.keys {
		if w.Subject == subject && w.Wrapped != nil {
			w.Wrapped = nil
			m.keys[id] = w
			out = append(out, id)
		}
	}
	return out, nil
}

// TestShredderCache: a key is fetched once per CacheTTL; a Forget through
// another Shredder (another process) reaches this one when its cached key
// expires, and at once with DisableCache; the cache keeps at most
// CacheSize keys.
func TestShredderCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := &mapKeyStore{keys: map[uuid.UUID]WrappedKey{}}
	kek, err := NewLocalKeyEncrypter(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a, _ := NewShredder(store, kek, ShredderConfig{CacheTTL: time.Minute, CacheSize: 2})
	b, _ := NewShredder(store, kek, ShredderConfig{CacheTTL: time.Minute})
	direct, _ := NewShredder(store, kek, ShredderConfig{DisableCache: true})
	a.now, b.now = clock, clock

	keys, err := a.subjectKeys(ctx, []string{"s1"})
	if err != nil {
		t.Fatal(err)
	}
	id := keys["s1"].id
	read := func(s *Shredder) *dataKey {
		t.Helper()
		got, err := s.keysByID(ctx, []uuid.UUID{id})
		if err != nil {
			t.Fatal(err)
		}
		k, ok := got[id]
		if !ok {
			t.Fatal("key not found")
		}
		return k
	}
	if read(b) == nil {
		t.Fatal("b: no key")
	}
	calls := store.calls
	if read(b) == nil || store.calls != calls {
		t.Fatalf("b fetched its cached key again (%d calls, was %d)", store.calls, calls)
	}
	if _, err := a.Forget(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if read(a) != nil {
		t.Error("a reads the key it forgot")
	}
	if read(direct) != nil {
		t.Error("a Shredder without cache reads a forgotten key")
	}
	if read(b) == nil {
		t.Error("b's cached key expired before its TTL")
	}
	now = now.Add(time.Minute + time.Second)
	if read(b) != nil {
		t.Error("b reads a forgotten key after its TTL")
	}
	// A new key for the subject after Forget.
	again, err := a.subjectKeys(ctx, []string{"s1"})
	if err != nil || again["s1"].id == id {
		t.Fatalf("subjectKeys after Forget = %v, %v; want a new key", again, err)
	}
	// Bounded: CacheSize 2.
	if _, err := a.subjectKeys(ctx, []string{"s2", "s3", "s4"}); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	n := len(a.byID)
	a.mu.Unlock()
	if n > 2 {
		t.Errorf("cache holds %d keys, more than CacheSize 2", n)
	}
}
