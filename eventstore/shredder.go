package eventstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// This file holds crypto-shredding (docs/compliance.md): the data keys of
// subjects, kept by a KeyStore wrapped under a key-encryption key
// (KeyEncrypter), cached and used by a Shredder, and destroyed by
// Shredder.Forget.

// DataKeySize is the size of a data key: AES-256.
const DataKeySize = 32

// WrappedKey is a subject's data key as a KeyStore keeps it: encrypted
// with the key-encryption key (KeyEncrypter.WrapKey).
type WrappedKey struct {
	// ID identifies the key; encrypted fields name it.
	ID uuid.UUID
	// Subject is whose personal data the key encrypts: a pseudonymous ID
	// (a customer ID), never personal data itself, since it stays after
	// Forget.
	Subject string
	// Wrapped is the data key encrypted with the key-encryption key; nil
	// once the key was forgotten.
	Wrapped []byte
	// CreatedAt is when the key was stored; ForgottenAt when it was
	// destroyed (zero while live).
	CreatedAt, ForgottenAt time.Time
}

// KeyStore keeps the data keys of subjects, wrapped (see WrappedKey): at
// most one live key per subject, and a tombstone of every forgotten one.
// eventstore/postgres and eventstore/memory implement it; so may an
// application (a vault, a separate database). Implementations must be safe
// for concurrent use, and Forget must destroy the wrapped key for good
// (see docs/compliance.md on backups).
type KeyStore interface {
	// SubjectKeys returns the live key of each of subjects that has one.
	SubjectKeys(ctx context.Context, subjects []string) ([]WrappedKey, error)
	// CreateKeys stores keys, each for a subject without a live key, and
	// returns the live key of every subject of keys: the one given, or one
	// another process stored first (which wins).
	CreateKeys(ctx context.Context, keys []WrappedKey) ([]WrappedKey, error)
	// Keys returns the keys with the given IDs, forgotten ones with
	// Wrapped nil. IDs never stored are left out.
	Keys(ctx context.Context, ids []uuid.UUID) ([]WrappedKey, error)
	// Forget destroys the wrapped key of subject's live key, keeping a
	// tombstone (ID, subject, ForgottenAt), and returns the IDs of the
	// keys it destroyed: none when the subject has no live key.
	Forget(ctx context.Context, subject string) ([]uuid.UUID, error)
}

// KeyEncrypter wraps and unwraps data keys with a key-encryption key (KEK)
// that stays outside the database: a KMS (AWS KMS Encrypt/Decrypt, Google
// Cloud KMS, HashiCorp Vault's transit engine) or, for development,
// LocalKeyEncrypter. Implementations must be safe for concurrent use.
type KeyEncrypter interface {
	// WrapKey encrypts a data key.
	WrapKey(ctx context.Context, key []byte) ([]byte, error)
	// UnwrapKey decrypts a data key WrapKey encrypted.
	UnwrapKey(ctx context.Context, wrapped []byte) ([]byte, error)
}

// LocalKeyEncrypter is a KeyEncrypter with the key-encryption key in the
// process's memory: AES-256-GCM under a 32-byte key the application loads
// from its secrets (never from the database the keys are stored in). Meant
// for development and tests; in production prefer a KMS, so that the KEK
// never leaves it. It can hold retired KEKs besides the current one, to
// unwrap keys wrapped before a rotation (see docs/compliance.md). Safe for
// concurrent use.
type LocalKeyEncrypter struct {
	current kek
	retired []kek
}

type kek struct {
	id   [8]byte
	aead cipher.AEAD
}

// localWrapVersion starts every key LocalKeyEncrypter wraps: version byte,
// the KEK's 8-byte ID, a 12-byte nonce, the ciphertext and tag.
const localWrapVersion = 1

// NewLocalKeyEncrypter returns a LocalKeyEncrypter that wraps with key and
// unwraps with key or any of retired (all 32 bytes). It returns an
// *InvalidArgumentError for a key of another size.
func NewLocalKeyEncrypter(key []byte, retired ...[]byte) (*LocalKeyEncrypter, error) {
	newKEK := func(k []byte) (kek, error) {
		if len(k) != 32 {
			return kek{}, &InvalidArgumentError{Field: "key-encryption key", Reason: fmt.Sprintf("must be 32 bytes, got %d", len(k))}
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return kek{}, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return kek{}, err
		}
		sum := sha256.Sum256(append([]byte("esox-kek-id"), k...))
		var out kek
		copy(out.id[:], sum[:8])
		out.aead = aead
		return out, nil
	}
	cur, err := newKEK(key)
	if err != nil {
		return nil, err
	}
	l := &LocalKeyEncrypter{current: cur}
	for _, k := range retired {
		r, err := newKEK(k)
		if err != nil {
			return nil, err
		}
		l.retired = append(l.retired, r)
	}
	return l, nil
}

// WrapKey encrypts key with the current KEK.
func (l *LocalKeyEncrypter) WrapKey(_ context.Context, key []byte) ([]byte, error) {
	out := make([]byte, 1+8+12, 1+8+12+len(key)+16)
	out[0] = localWrapVersion
	copy(out[1:9], l.current.id[:])
	if _, err := rand.Read(out[9:21]); err != nil {
		return nil, err
	}
	return l.current.aead.Seal(out, out[9:21], key, out[:9]), nil
}

// UnwrapKey decrypts a key WrapKey wrapped, with the KEK it names: the
// current one or a retired one. A key wrapped by another KEK is an error.
func (l *LocalKeyEncrypter) UnwrapKey(_ context.Context, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 1+8+12+16 || wrapped[0] != localWrapVersion {
		return nil, errors.New("eventstore: unwrap key: not a key LocalKeyEncrypter wrapped")
	}
	for _, k := range append([]kek{l.current}, l.retired...) {
		if [8]byte(wrapped[1:9]) == k.id {
			return k.aead.Open(nil, wrapped[9:21], wrapped[21:], wrapped[:9])
		}
	}
	return nil, fmt.Errorf("eventstore: unwrap key: wrapped by key-encryption key %x, which this LocalKeyEncrypter does not hold", wrapped[1:9])
}

// Defaults of ShredderConfig.
const (
	// ShredderCacheSizeDefault is ShredderConfig.CacheSize's default.
	ShredderCacheSizeDefault = 10_000
	// ShredderCacheTTLDefault is ShredderConfig.CacheTTL's default.
	ShredderCacheTTLDefault = time.Minute
)

// ShredderConfig configures a Shredder. The zero value means all defaults.
type ShredderConfig struct {
	// CacheSize is the most unwrapped keys (and tombstones) a Shredder
	// keeps in memory; the oldest go first. Defaults to
	// ShredderCacheSizeDefault; must not be negative.
	CacheSize int
	// CacheTTL is how long a cached key is used before it is fetched
	// again. It bounds how long after a Forget in another process this
	// one may still read the subject's fields, and encrypt new ones with
	// the forgotten key (which then read as redacted). Defaults to
	// ShredderCacheTTLDefault; must not be negative.
	CacheTTL time.Duration
	// DisableCache fetches every key on every use: Forget in any process
	// takes effect at once everywhere, at the cost of a key store query
	// (and an unwrap) per batch read or append.
	DisableCache bool
}

// Shredder encrypts the personal fields of events with their subject's
// data key and decrypts them on reading (crypto-shredding, see
// docs/compliance.md): attach it to a Registry with Registry.SetShredder,
// and every append through that registry encrypts, every read decrypts.
// Forget destroys a subject's key: its fields read as redacted from then
// on, everywhere, while the events (and their hash chain) stay as they are.
//
// It caches unwrapped keys (ShredderConfig). Create it with NewShredder.
// Safe for concurrent use.
type Shredder struct {
	keys KeyStore
	kek  KeyEncrypter
	cfg  ShredderConfig

	mu        sync.Mutex
	byID      map[uuid.UUID]*cacheEntry
	bySubject map[string]*cacheEntry
	order     []uuid.UUID // insertion order, for eviction
	now       func() time.Time
}

type cacheEntry struct {
	key     *dataKey // nil: forgotten
	subject string
	expires time.Time
}

// NewShredder returns a Shredder over keys, wrapping data keys with kek.
// It returns an *InvalidArgumentError for a nil keys or kek or a negative
// cfg value, naming the field.
func NewShredder(keys KeyStore, kek KeyEncrypter, cfg ShredderConfig) (*Shredder, error) {
	switch {
	case keys == nil:
		return nil, &InvalidArgumentError{Field: "keys", Reason: "must not be nil"}
	case kek == nil:
		return nil, &InvalidArgumentError{Field: "kek", Reason: "must not be nil"}
	case cfg.CacheSize < 0:
		return nil, &InvalidArgumentError{Field: "CacheSize", Reason: fmt.Sprintf("must not be negative, got %d", cfg.CacheSize)}
	case cfg.CacheTTL < 0:
		return nil, &InvalidArgumentError{Field: "CacheTTL", Reason: fmt.Sprintf("must not be negative, got %s", cfg.CacheTTL)}
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = ShredderCacheSizeDefault
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = ShredderCacheTTLDefault
	}
	return &Shredder{keys: keys, kek: kek, cfg: cfg, byID: map[uuid.UUID]*cacheEntry{}, bySubject: map[string]*cacheEntry{}, now: time.Now}, nil
}

// ForgetResult reports what Forget destroyed.
type ForgetResult struct {
	Subject string
	// Keys are the IDs of the data keys destroyed: none when the subject
	// had no live key (never had personal data, or was forgotten before).
	Keys []uuid.UUID
}

// Forget destroys subject's data key (KeyStore.Forget) and drops it from
// this Shredder's cache: from now on every read of the subject's personal
// fields, through any reader of this process, yields the redaction (the
// field's zero value, its name in Record.Redacted); other processes stop
// reading them once their cached key expires (ShredderConfig.CacheTTL).
// The events are not touched: their stored bytes, and the hash chain over
// them, stay as they were. A later append for the same subject gets a new
// key. Forgetting a subject without a live key does nothing and is not an
// error, so Forget may be retried.
//
// Errors: an *InvalidArgumentError for an empty subject; the key store's,
// wrapped. ctx bounds the key store call.
func (s *Shredder) Forget(ctx context.Context, subject string) (ForgetResult, error) {
	if subject == "" {
		return ForgetResult{}, &InvalidArgumentError{Field: "subject", Reason: "must not be empty"}
	}
	ids, err := s.keys.Forget(ctx, subject)
	if err != nil {
		return ForgetResult{}, fmt.Errorf("eventstore: forget %q: %w", subject, err)
	}
	s.mu.Lock()
	if e, ok := s.bySubject[subject]; ok {
		e.key = nil
		delete(s.bySubject, subject)
	}
	for _, id := range ids {
		if e, ok := s.byID[id]; ok {
			e.key = nil
		}
	}
	s.mu.Unlock()
	return ForgetResult{Subject: subject, Keys: ids}, nil
}

// lookup returns the cached entry of id, if fresh. s.mu is held.
func (s *Shredder) fresh(e *cacheEntry, ok bool, now time.Time) bool {
	return ok && !s.cfg.DisableCache && now.Before(e.expires)
}

// keyHit is a data key found for a key ID: nil when forgotten.
type keyHit struct {
	id  uuid.UUID
	key *dataKey
}

// keysFor returns the data keys the envelopes refs name, one per distinct
// key ID that is stored (nil for a forgotten one): from the cache under
// one lock, the others fetched in one call (keysByID).
func (s *Shredder) keysFor(ctx context.Context, refs []envRef) ([]keyHit, error) {
	var (
		hitBuf  [4]keyHit
		hits    = hitBuf[:0]
		missing []uuid.UUID
		seen    map[uuid.UUID]bool // for large batches; small ones search
	)
	if len(refs) > 16 {
		seen = make(map[uuid.UUID]bool, len(refs))
	}
	now := s.now()
	s.mu.Lock()
	for _, r := range refs {
		if seen != nil {
			if seen[r.keyID] {
				continue
			}
			seen[r.keyID] = true
		} else if slices.ContainsFunc(hits, func(h keyHit) bool { return h.id == r.keyID }) || slices.Contains(missing, r.keyID) {
			continue
		}
		if e, ok := s.byID[r.keyID]; s.fresh(e, ok, now) {
			hits = append(hits, keyHit{id: r.keyID, key: e.key})
		} else {
			missing = append(missing, r.keyID)
		}
	}
	s.mu.Unlock()
	if len(missing) > 0 {
		fetched, err := s.keysByID(ctx, missing)
		if err != nil {
			return nil, err
		}
		for id, k := range fetched {
			hits = append(hits, keyHit{id: id, key: k})
		}
	}
	return hits, nil
}

// keysByID returns the data keys with the given IDs (nil for a forgotten
// one; an ID never stored is left out), from the cache or the key store.
func (s *Shredder) keysByID(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*dataKey, error) {
	out := make(map[uuid.UUID]*dataKey, len(ids))
	var missing []uuid.UUID
	now := s.now()
	s.mu.Lock()
	for _, id := range ids {
		if e, ok := s.byID[id]; s.fresh(e, ok, now) {
			out[id] = e.key
		} else {
			missing = append(missing, id)
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	wrapped, err := s.keys.Keys(ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("eventstore: fetch data keys: %w", err)
	}
	entries := make([]*cacheEntry, 0, len(wrapped))
	for _, w := range wrapped {
		e := &cacheEntry{subject: w.Subject}
		if w.Wrapped != nil {
			if e.key, err = s.unwrap(ctx, w); err != nil {
				return nil, err
			}
		}
		out[w.ID] = e.key
		entries = append(entries, e)
	}
	s.cache(wrapped, entries, false)
	return out, nil
}

// subjectKeys returns the live data key of each subject, creating the
// keys subjects lack.
func (s *Shredder) subjectKeys(ctx context.Context, subjects []string) (map[string]*dataKey, error) {
	out := make(map[string]*dataKey, len(subjects))
	var missing []string
	now := s.now()
	s.mu.Lock()
	for _, sub := range subjects {
		if e, ok := s.bySubject[sub]; s.fresh(e, ok, now) && e.key != nil {
			out[sub] = e.key
		} else {
			missing = append(missing, sub)
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	live, err := s.keys.SubjectKeys(ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("eventstore: fetch data keys: %w", err)
	}
	var create []WrappedKey
	for _, sub := range missing {
		if slices.ContainsFunc(live, func(w WrappedKey) bool { return w.Subject == sub && w.Wrapped != nil }) {
			continue
		}
		key := make([]byte, DataKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("eventstore: generate data key: %w", err)
		}
		wrapped, err := s.kek.WrapKey(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("eventstore: wrap data key: %w", err)
		}
		create = append(create, WrappedKey{ID: uuid.New(), Subject: sub, Wrapped: wrapped})
	}
	if len(create) > 0 {
		created, err := s.keys.CreateKeys(ctx, create)
		if err != nil {
			return nil, fmt.Errorf("eventstore: store data keys: %w", err)
		}
		live = append(live, created...)
	}
	var (
		keep    []WrappedKey
		entries []*cacheEntry
	)
	for _, w := range live {
		if w.Wrapped == nil || out[w.Subject] != nil {
			continue
		}
		k, err := s.unwrap(ctx, w)
		if err != nil {
			return nil, err
		}
		out[w.Subject] = k
		keep = append(keep, w)
		entries = append(entries, &cacheEntry{key: k, subject: w.Subject})
	}
	s.cache(keep, entries, true)
	for _, sub := range subjects {
		if out[sub] == nil {
			return nil, fmt.Errorf("eventstore: the key store returned no live data key for subject %q", sub)
		}
	}
	return out, nil
}

// unwrap unwraps w and prepares its cipher.
func (s *Shredder) unwrap(ctx context.Context, w WrappedKey) (*dataKey, error) {
	raw, err := s.kek.UnwrapKey(ctx, w.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("eventstore: unwrap data key %s: %w", w.ID, err)
	}
	if len(raw) != DataKeySize {
		return nil, fmt.Errorf("eventstore: unwrap data key %s: %d bytes, want %d", w.ID, len(raw), DataKeySize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &dataKey{id: w.ID, subject: w.Subject, aead: aead}, nil
}

// cache keeps entries (of keys ws), by ID and, for live keys of
// subjects, by subject, evicting the oldest beyond CacheSize.
func (s *Shredder) cache(ws []WrappedKey, entries []*cacheEntry, bySubject bool) {
	if s.cfg.DisableCache {
		return
	}
	expires := s.now().Add(s.cfg.CacheTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range entries {
		e.expires = expires
		id := ws[i].ID
		if _, ok := s.byID[id]; !ok {
			s.order = append(s.order, id)
		}
		s.byID[id] = e
		if e.key != nil && (bySubject || s.bySubject[e.subject] == nil) {
			s.bySubject[e.subject] = e
		}
	}
	for len(s.byID) > s.cfg.CacheSize && len(s.order) > 0 {
		id := s.order[0]
		s.order = s.order[1:]
		if e, ok := s.byID[id]; ok {
			delete(s.byID, id)
			if s.bySubject[e.subject] == e {
				delete(s.bySubject, e.subject)
			}
		}
	}
}

// SetShredder makes r encrypt the personal fields of the events it
// encodes with s, and decrypt them on reading (Decrypt); nil removes it.
// Without a Shredder, appending an event with personal fields is refused,
// and encrypted fields read as redacted. Set it at start-up, with the
// event types. Safe for concurrent use.
func (r *Registry) SetShredder(s *Shredder) { r.shredder.Store(s) }

// Shredder returns the Shredder set with SetShredder, or nil.
func (r *Registry) Shredder() *Shredder { return r.shredder.Load() }
