package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
)

// NewKeyStoreFunc returns a fresh, empty key store for the personal data
// suite: the memory store's, or one in the database the store under test
// uses.
type NewKeyStoreFunc = func(t *testing.T) eventstore.KeyStore

// Event types of the personal data suite.
type (
	// signedUp has personal fields of several JSON kinds.
	signedUp struct {
		CustomerID string            `json:"customer_id" esox:"subject"`
		Name       string            `json:"name" esox:"personal"`
		Email      string            `json:"email,omitempty" esox:"personal"`
		Address    *address          `json:"address,omitempty" esox:"personal"`
		Tags       []string          `json:"tags" esox:"personal"`
		Plan       string            `json:"plan"`
		Extra      map[string]string `json:"extra,omitempty"`
	}
	address struct {
		Street string `json:"street"`
		City   string `json:"city"`
	}
	// renamedV1 is stored at version 1 with a personal "full_name" that
	// version 2 splits (an upcaster that reads the personal field).
	renamedV1 struct {
		CustomerID string `json:"customer_id" esox:"subject"`
		FullName   string `json:"full_name" esox:"personal"`
	}
	renamedV2 struct {
		CustomerID string `json:"customer_id" esox:"subject"`
		First      string `json:"first" esox:"personal"`
		Last       string `json:"last" esox:"personal"`
	}
)

const (
	signedUpType = "storetest.signed_up"
	renamedType  = "storetest.renamed"
)

// personalBundle is a subtest's store whose registry encrypts personal
// data with its Shredder.
type personalBundle struct {
	*bundle
	keys     eventstore.KeyStore
	shredder *eventstore.Shredder
	reopen   ReopenFunc
}

// RunPersonalData runs the crypto-shredding suite (docs/compliance.md) on
// a store: personal fields are stored encrypted and read back decrypted on
// every read path; forgetting a subject redacts its fields (zero values,
// Record.Redacted) everywhere while other subjects and the other fields
// read as before; a forgotten subject's later events get a new key;
// upcasters see plaintext; the hash chain (when the store has one) and a
// seal taken before still verify after Forget; a registry without a
// Shredder refuses to append personal data. newKeys returns the key store
// the suite's Shredder uses; reopen, a view of a store with another
// registry (as for RunEvolution).
func RunPersonalData(t *testing.T, newStore NewStoreFunc, reopen ReopenFunc, newKeys NewKeyStoreFunc) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, b *personalBundle)
	}{
		{"EncryptedAtRest", testEncryptedAtRest},
		{"ForgetRedacts", testForgetRedacts},
		{"ChainSurvivesForget", testChainSurvivesForget},
		{"UpcastersSeePlaintext", testUpcastersSeePlaintext},
		{"Refusals", testPersonalRefusals},
	} {
		t.Run("Personal/"+tc.name, func(t *testing.T) {
			t.Parallel()
			reg := eventstore.NewRegistry()
			eventstore.MustRegister[noted](reg, notedType)
			eventstore.MustRegister[signedUp](reg, signedUpType)
			eventstore.MustRegisterVersion[renamedV2](reg, renamedType, 2)
			if err := reg.Upcast(renamedType, 1, func(p json.RawMessage) (json.RawMessage, error) {
				var v1 renamedV1
				if err := json.Unmarshal(p, &v1); err != nil {
					return nil, err
				}
				first, last, _ := strings.Cut(v1.FullName, " ")
				return json.Marshal(renamedV2{CustomerID: v1.CustomerID, First: first, Last: last})
			}); err != nil {
				t.Fatal(err)
			}
			keys := newKeys(t)
			kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{7}, 32))
			if err != nil {
				t.Fatal(err)
			}
			sh, err := eventstore.NewShredder(keys, kek, eventstore.ShredderConfig{})
			if err != nil {
				t.Fatal(err)
			}
			reg.SetShredder(sh)
			s := newStore(t, reg)
			tc.fn(t, &personalBundle{bundle: &bundle{store: s, ctx: t.Context()}, keys: keys, shredder: sh, reopen: reopen})
		})
	}
}

func ada() signedUp {
	return signedUp{CustomerID: "cust-ada", Name: "Ada Lovelace", Email: "ada@example.com", Address: &address{Street: "12 St James's Square", City: "London"},
		Tags: []string{"vip-since-1843"}, Plan: "gold", Extra: map[string]string{"source": "web"}}
}

func bob() signedUp {
	return signedUp{CustomerID: "cust-bob", Name: "Bob Byte", Tags: []string{}, Plan: "free"}
}

// plaintexts are the personal values of ada and bob, which must never be
// stored. Each is long enough not to turn up by chance in the base64 of a
// ciphertext beside it: "vip" did, about once in a thousand payloads.
var plaintexts = []string{"Ada Lovelace", "ada@example.com", "St James", "London", "vip-since-1843", "Bob Byte"}

// readAll returns every record of the feed (barriers included).
func (b *personalBundle) readAll(t *testing.T) []eventstore.Record {
	t.Helper()
	return b.feed(t)
}

// rawOf returns the stored payloads of streamID.
func (b *personalBundle) rawOf(t *testing.T, streamID string) []eventstore.RawRecord {
	t.Helper()
	raws, err := b.store.ReadStreamRaw(b.ctx, streamID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	return raws
}

func testEncryptedAtRest(t *testing.T, b *personalBundle) {
	res := b.append(t, "customer-ada", eventstore.NoStream, eventstore.Event{Data: ada()}, eventstore.Event{Data: &signedUp{CustomerID: "cust-ada", Name: "A. L.", Plan: "p"}})
	b.append(t, "customer-bob", eventstore.NoStream, eventstore.Event{Data: bob()})
	for _, stream := range []string{"customer-ada", "customer-bob"} {
		for _, raw := range b.rawOf(t, stream) {
			for _, p := range plaintexts {
				if bytes.Contains(raw.Payload, []byte(p)) {
					t.Fatalf("stored payload %s holds the plaintext %q", raw.Payload, p)
				}
			}
			if !bytes.Contains(raw.Payload, []byte(`esox_enc`)) || !bytes.Contains(raw.Payload, []byte(`customer_id`)) {
				t.Fatalf("stored payload %s: want envelopes beside the plaintext subject and plan", raw.Payload)
			}
		}
	}
	got := b.readStream(t, "customer-ada", 0)
	if len(got) != 2 || !equalData(got[0].Data, ada()) || got[0].Redacted != nil || got[0].ID != res.EventIDs[0] {
		t.Fatalf("ReadStream = %+v, want ada decrypted", got)
	}
	if !bytes.Contains(got[0].Payload, []byte("Ada Lovelace")) {
		t.Errorf("Record.Payload %s: want the decrypted JSON", got[0].Payload)
	}
	var seen int
	for _, r := range b.readAll(t) {
		if r.StreamID == "customer-bob" {
			seen++
			if !equalData(r.Data, bob()) {
				t.Errorf("ReadAll: bob = %+v", r.Data)
			}
		}
	}
	if seen != 1 {
		t.Errorf("ReadAll: %d records of bob, want 1", seen)
	}
}

func testForgetRedacts(t *testing.T, b *personalBundle) {
	b.append(t, "customer-ada", eventstore.NoStream, eventstore.Event{Data: ada()})
	b.append(t, "customer-bob", eventstore.NoStream, eventstore.Event{Data: bob()})
	res, err := b.shredder.Forget(b.ctx, "cust-ada")
	if err != nil || res.Subject != "cust-ada" || len(res.Keys) != 1 {
		t.Fatalf("Forget = %+v, %v; want one key destroyed", res, err)
	}
	want := signedUp{CustomerID: "cust-ada", Plan: "gold", Extra: map[string]string{"source": "web"}}
	wantRedacted := []string{"address", "email", "name", "tags"}
	check := func(where string, r eventstore.Record) {
		t.Helper()
		redacted := slices.Sorted(slices.Values(r.Redacted))
		if !equalData(r.Data, want) || !slices.Equal(redacted, wantRedacted) {
			t.Errorf("%s after Forget: Data %+v, Redacted %v; want %+v with %v redacted", where, r.Data, r.Redacted, want, wantRedacted)
		}
		for _, p := range plaintexts {
			if bytes.Contains(r.Payload, []byte(p)) {
				t.Errorf("%s after Forget: payload %s holds %q", where, r.Payload, p)
			}
		}
	}
	got := b.readStream(t, "customer-ada", 0)
	if len(got) != 1 {
		t.Fatalf("ReadStream: %d records", len(got))
	}
	check("ReadStream", got[0])
	for _, r := range b.readAll(t) {
		switch r.StreamID {
		case "customer-ada":
			check("ReadAll", r)
		case "customer-bob":
			if !equalData(r.Data, bob()) || r.Redacted != nil {
				t.Errorf("ReadAll: bob after ada's Forget = %+v, Redacted %v", r.Data, r.Redacted)
			}
		}
	}
	// Another process, its own Shredder over the same key store (its
	// cache off): the key is gone there too.
	other := eventstore.NewRegistry()
	eventstore.MustRegister[signedUp](other, signedUpType)
	kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := eventstore.NewShredder(b.keys, kek, eventstore.ShredderConfig{DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	other.SetShredder(sh)
	for r, err := range b.reopen(t, b.store, other).ReadStream(b.ctx, "customer-ada", 0) {
		if err != nil {
			t.Fatal(err)
		}
		check("another process's ReadStream", r)
	}
	// Forget again: nothing to destroy, not an error.
	if res, err := b.shredder.Forget(b.ctx, "cust-ada"); err != nil || len(res.Keys) != 0 {
		t.Errorf("second Forget = %+v, %v", res, err)
	}
	// The subject comes back: a new key, readable, the old events still
	// redacted.
	b.append(t, "customer-ada", eventstore.Exact(1), eventstore.Event{Data: ada()})
	got = b.readStream(t, "customer-ada", 0)
	if len(got) != 2 || !equalData(got[1].Data, ada()) || got[1].Redacted != nil {
		t.Fatalf("after a new append: %+v", got)
	}
	check("ReadStream (old event)", got[0])
}

func testChainSurvivesForget(t *testing.T, b *personalBundle) {
	v, ok := b.store.(eventstore.Verifier)
	if !ok {
		t.Skip("storetest: the store has no hash chain")
	}
	b.append(t, "customer-ada", eventstore.NoStream, eventstore.Event{Data: ada()}, eventstore.Event{Data: ada()})
	b.append(t, "customer-bob", eventstore.NoStream, eventstore.Event{Data: bob()})
	b.feed(t)
	seal, err := v.Seal(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := b.rawOf(t, "customer-ada")
	if _, err := b.shredder.Forget(b.ctx, "cust-ada"); err != nil {
		t.Fatal(err)
	}
	after := b.rawOf(t, "customer-ada")
	for i := range before {
		if !bytes.Equal(before[i].Payload, after[i].Payload) {
			t.Fatalf("Forget changed the stored payload of version %d", i+1)
		}
	}
	res, err := v.Verify(b.ctx, nil)
	if err != nil || !res.OK() || res.Unchained != 0 {
		t.Fatalf("Verify after Forget = %+v, %v; want every chain intact", res, err)
	}
	r, err := v.VerifySeal(b.ctx, seal)
	if err != nil || !r.OK() {
		t.Fatalf("VerifySeal after Forget = %+v, %v; want the seal taken before to match", r, err)
	}
}

func testUpcastersSeePlaintext(t *testing.T, b *personalBundle) {
	// Version 1 as an older release wrote it, with its own registry
	// sharing the Shredder.
	old := eventstore.NewRegistry()
	eventstore.MustRegister[renamedV1](old, renamedType)
	old.SetShredder(b.shredder)
	if _, err := b.reopen(t, b.store, old).Append(b.ctx, "customer-ren", eventstore.NoStream,
		[]eventstore.Event{{Data: renamedV1{CustomerID: "cust-ren", FullName: "Grace Hopper"}}}); err != nil {
		t.Fatal(err)
	}
	if raw := b.rawOf(t, "customer-ren"); bytes.Contains(raw[0].Payload, []byte("Grace")) {
		t.Fatalf("version 1 stored in the clear: %s", raw[0].Payload)
	}
	got := b.readStream(t, "customer-ren", 0)
	if want := (renamedV2{CustomerID: "cust-ren", First: "Grace", Last: "Hopper"}); len(got) != 1 || got[0].Data != want || got[0].StoredSchemaVersion != 1 {
		t.Fatalf("read = %+v, want %+v upcast from version 1", got, want)
	}
	if _, err := b.shredder.Forget(b.ctx, "cust-ren"); err != nil {
		t.Fatal(err)
	}
	got = b.readStream(t, "customer-ren", 0)
	if want := (renamedV2{CustomerID: "cust-ren"}); len(got) != 1 || got[0].Data != want || !slices.Equal(got[0].Redacted, []string{"full_name"}) {
		t.Fatalf("read after Forget = %+v, want %+v with full_name redacted", got, want)
	}
}

func testPersonalRefusals(t *testing.T, b *personalBundle) {
	_, err := b.store.Append(b.ctx, "customer-x", eventstore.NoStream, []eventstore.Event{{Data: signedUp{Name: "No Subject"}}})
	if !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("Append without a subject = %v, want ErrInvalidArgument", err)
	}
	b.store.Registry().SetShredder(nil)
	_, err = b.store.Append(b.ctx, "customer-x", eventstore.NoStream, []eventstore.Event{{Data: ada()}})
	if !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("Append of personal data without a Shredder = %v, want ErrInvalidArgument", err)
	}
	// Events without personal data need no Shredder.
	b.append(t, "note-1", eventstore.NoStream, ev("plain", 1))
	if info := b.info(t, "customer-x"); info.Exists {
		t.Errorf("a refused append wrote: %+v", info)
	}
}
