package postgres

import (
	"bytes"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// TestHeadCacheBounded: the cache holds at most its size, forgetting
// another stream to make room, and refuses heads without a digest.
func TestHeadCacheBounded(t *testing.T) {
	if newHeadCache(-1) != nil {
		t.Fatal("a negative size made a cache")
	}
	c := newHeadCache(2)
	d := bytes.Repeat([]byte{1}, eventstore.DigestSize)
	c.put("a", chainHead{version: 1, digest: d})
	c.put("b", chainHead{version: 2, digest: d})
	c.put("b", chainHead{version: 3, digest: d}) // an update takes no room
	if len(c.heads) != 2 {
		t.Fatalf("%d heads, want 2", len(c.heads))
	}
	c.put("c", chainHead{version: 4, digest: d})
	if len(c.heads) != 2 {
		t.Fatalf("%d heads after a third stream, want 2", len(c.heads))
	}
	if h, ok := c.get("c"); !ok || h.version != 4 {
		t.Fatalf("get(c) = %v, %v; want version 4", h, ok)
	}
	c.put("d", chainHead{version: 5}) // no digest: chaining off
	if _, ok := c.get("d"); ok {
		t.Fatal("a head without a digest was kept")
	}
	c.forget("c")
	if _, ok := c.get("c"); ok {
		t.Fatal("forget(c) kept it")
	}
}

// TestClientChainLeavesToServer: an append with a value jsonbText does not
// render gets no digests from the store.
func TestClientChainLeavesToServer(t *testing.T) {
	enc := []eventstore.EncodedEvent{
		{ID: uuid.New(), Type: "t", SchemaVersion: 1, Payload: []byte(`{"a":1}`), Metadata: []byte(`{}`)},
		{ID: uuid.New(), Type: "t", SchemaVersion: 1, Payload: []byte(`{"a":1,"a":2}`), Metadata: []byte(`{}`)},
	}
	if _, ok := clientChain(nil, "s-1", 0, enc[:1]); !ok {
		t.Fatal("a plain payload was left to the server")
	}
	if d, ok := clientChain(nil, "s-1", 0, enc); ok {
		t.Fatalf("duplicate keys got digests %x", d)
	}
}
