package eventstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
)

type customerRegistered struct {
	CustomerID string `json:"customer_id" esox:"subject"`
	Name       string `json:"name" esox:"personal"`
	Email      string `json:"email" esox:"personal"`
	Country    string `json:"country"`
}

func personalRegistry(t testing.TB) (*eventstore.Registry, *eventstore.Shredder, *memory.KeyStore) {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[customerRegistered](reg, "customer_registered")
	keys := memory.NewKeyStore()
	kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := eventstore.NewShredder(keys, kek, eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg.SetShredder(sh)
	return reg, sh, keys
}

// encodeOne encodes one event as EncodeAppend stores it and returns it
// as a raw record.
func encodeOne(t testing.TB, reg *eventstore.Registry, v any) eventstore.RawRecord {
	t.Helper()
	enc, err := eventstore.EncodeAppend(context.Background(), reg, "customer-1", eventstore.Any, []eventstore.Event{{Data: v}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := enc[0]
	return eventstore.RawRecord{ID: e.ID, StreamID: "customer-1", StreamVersion: 1, Type: e.Type, SchemaVersion: e.SchemaVersion, Payload: e.Payload, Metadata: e.Metadata}
}

// TestPersonalTags: the esox tags are checked at registration.
func TestPersonalTags(t *testing.T) {
	t.Parallel()
	type (
		noSubject struct {
			Name string `json:"name" esox:"personal"`
		}
		twoSubjects struct {
			A    string `esox:"subject"`
			B    string `esox:"subject"`
			Name string `esox:"personal"`
		}
		intSubject struct {
			A    int    `esox:"subject"`
			Name string `esox:"personal"`
		}
		unknownTag struct {
			A    string `esox:"subject"`
			Name string `esox:"secret"`
		}
		skipped struct {
			A    string `esox:"subject"`
			Name string `json:"-" esox:"personal"`
		}
		subjectOnly struct {
			A string `esox:"subject"`
		}
		good struct {
			A    string   `json:"a" esox:"subject"`
			Name string   `esox:"personal"`
			List []string `json:"list,omitempty" esox:"personal"`
		}
	)
	reg := eventstore.NewRegistry()
	for name, err := range map[string]error{
		"noSubject":   eventstore.Register[noSubject](reg, "noSubject"),
		"twoSubjects": eventstore.Register[twoSubjects](reg, "twoSubjects"),
		"intSubject":  eventstore.Register[intSubject](reg, "intSubject"),
		"unknownTag":  eventstore.Register[unknownTag](reg, "unknownTag"),
		"skipped":     eventstore.Register[skipped](reg, "skipped"),
		"subjectOnly": eventstore.Register[subjectOnly](reg, "subjectOnly"),
	} {
		if !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("Register %s = %v, want ErrInvalidArgument", name, err)
		}
	}
	if err := eventstore.Register[good](reg, "good"); err != nil {
		t.Fatal(err)
	}
}

// TestEncryptStage: EncodeAppend stores personal fields as envelopes,
// bound to the event, counted by MaxEventSize as stored; Decrypt restores
// them; AppendDecoded refuses a payload not passed through Decrypt.
func TestEncryptStage(t *testing.T) {
	t.Parallel()
	reg, _, _ := personalRegistry(t)
	v := customerRegistered{CustomerID: "c-1", Name: "Ada <Lovelace>", Email: "ada@example.com", Country: "UK"}
	raw := encodeOne(t, reg, v)
	var stored map[string]json.RawMessage
	if err := json.Unmarshal(raw.Payload, &stored); err != nil {
		t.Fatal(err)
	}
	if string(stored["country"]) != `"UK"` || string(stored["customer_id"]) != `"c-1"` {
		t.Errorf("plain fields changed: %s", raw.Payload)
	}
	for _, f := range []string{"name", "email"} {
		var env map[string]string
		if err := json.Unmarshal(stored[f], &env); err != nil || env["esox_enc"] == "" || uuid.Validate(env["esox_key"]) != nil || len(env) != 2 {
			t.Errorf("field %s stored as %s, want an envelope {esox_enc, esox_key}", f, stored[f])
		}
	}
	if bytes.Contains(raw.Payload, []byte("Ada")) || bytes.Contains(raw.Payload, []byte("example.com")) {
		t.Fatalf("plaintext stored: %s", raw.Payload)
	}

	// Decoding without the decryption stage is refused.
	if _, err := raw.Decode(reg); !errors.Is(err, eventstore.ErrMalformedPayload) || !strings.Contains(err.Error(), "Registry.Decrypt") {
		t.Errorf("Decode without Decrypt = %v, want a PayloadError naming Registry.Decrypt", err)
	}
	raws := []eventstore.RawRecord{raw}
	if err := reg.Decrypt(context.Background(), raws); err != nil {
		t.Fatal(err)
	}
	rec, err := raws[0].Decode(reg)
	if err != nil || rec.Data != v || rec.Redacted != nil {
		t.Fatalf("decoded = %+v, %v; want %+v", rec, err, v)
	}

	// MaxEventSize counts the stored, encrypted payload.
	limit := len(`{"customer_id":"c-1","name":"Ada <Lovelace>","email":"ada@example.com","country":"UK"}`) + 2 + 10
	_, err = eventstore.EncodeAppend(context.Background(), reg, "customer-1", eventstore.Any, []eventstore.Event{{Data: v}}, &eventstore.EncodeOpts{MaxEventSize: limit})
	if !errors.Is(err, eventstore.ErrEventTooLarge) {
		t.Errorf("EncodeAppend under a limit the plaintext fits = %v, want ErrEventTooLarge (the ciphertext does not)", err)
	}
}

// TestCiphertextBoundToEvent: an envelope copied into another event, or
// changed, does not decrypt; it is a PayloadError of that record, not of
// the batch.
func TestCiphertextBoundToEvent(t *testing.T) {
	t.Parallel()
	reg, _, _ := personalRegistry(t)
	a := encodeOne(t, reg, customerRegistered{CustomerID: "c-1", Name: "Ada", Email: "a@x", Country: "UK"})
	b := encodeOne(t, reg, customerRegistered{CustomerID: "c-1", Name: "Bob", Email: "b@x", Country: "FR"})
	var pa, pb map[string]json.RawMessage
	_ = json.Unmarshal(a.Payload, &pa)
	_ = json.Unmarshal(b.Payload, &pb)
	pb["name"] = pa["name"] // a's ciphertext into b
	moved, _ := json.Marshal(pb)
	b.Payload = moved
	changed := a
	changed.Payload = bytes.Replace(a.Payload, []byte(`"esox_enc":"`), []byte(`"esox_enc":"AAAA`), 1)
	raws := []eventstore.RawRecord{b, changed}
	if err := reg.Decrypt(context.Background(), raws); err != nil {
		t.Fatalf("Decrypt = %v: a record that does not decrypt fails alone", err)
	}
	for i, r := range raws {
		if _, err := r.Decode(reg); !errors.Is(err, eventstore.ErrMalformedPayload) {
			t.Errorf("record %d: Decode = %v, want ErrMalformedPayload", i, err)
		}
	}

	// A key the key store never held.
	other, _, _ := personalRegistry(t)
	raws = []eventstore.RawRecord{a}
	if err := other.Decrypt(context.Background(), raws); err != nil {
		t.Fatal(err)
	}
	if _, err := raws[0].Decode(other); !errors.Is(err, eventstore.ErrKeyNotFound) {
		t.Errorf("Decode with another key store = %v, want ErrKeyNotFound", err)
	}
}

// TestForgetAndNoShredder: after Forget the fields are redacted; a
// registry without a Shredder reads every encrypted field as redacted.
func TestForgetAndNoShredder(t *testing.T) {
	t.Parallel()
	reg, sh, _ := personalRegistry(t)
	raw := encodeOne(t, reg, customerRegistered{CustomerID: "c-9", Name: "Ada", Email: "a@x", Country: "UK"})
	want := customerRegistered{CustomerID: "c-9", Country: "UK"}

	plain := eventstore.NewRegistry()
	eventstore.MustRegister[customerRegistered](plain, "customer_registered")
	rec, err := raw.Decode(plain)
	if err != nil || rec.Data != want || !slices.Equal(rec.Redacted, []string{"name", "email"}) {
		t.Fatalf("without a Shredder: %+v, %v; want %+v, name and email redacted", rec, err, want)
	}
	if _, err := sh.Forget(context.Background(), "c-9"); err != nil {
		t.Fatal(err)
	}
	raws := []eventstore.RawRecord{raw}
	if err := reg.Decrypt(context.Background(), raws); err != nil {
		t.Fatal(err)
	}
	rec, err = raws[0].Decode(reg)
	if err != nil || rec.Data != want || !slices.Equal(rec.Redacted, []string{"name", "email"}) || !bytes.Contains(rec.Payload, []byte(`"name":null`)) {
		t.Fatalf("after Forget: %+v, %v", rec, err)
	}
	if _, err := sh.Forget(context.Background(), ""); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("Forget(\"\") = %v", err)
	}
}

// TestLocalKeyEncrypter: keys wrapped under a retired KEK unwrap; a KEK
// not held is an error.
func TestLocalKeyEncrypter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	oldKEK, newKEK := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	old, err := eventstore.NewLocalKeyEncrypter(oldKEK)
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{9}, 32)
	wrapped, err := old.WrapKey(ctx, key)
	if err != nil || bytes.Contains(wrapped, key) {
		t.Fatalf("WrapKey = %x, %v", wrapped, err)
	}
	rotated, err := eventstore.NewLocalKeyEncrypter(newKEK, oldKEK)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.UnwrapKey(ctx, wrapped); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("UnwrapKey with the old KEK retired = %x, %v", got, err)
	}
	onlyNew, _ := eventstore.NewLocalKeyEncrypter(newKEK)
	if _, err := onlyNew.UnwrapKey(ctx, wrapped); err == nil {
		t.Error("UnwrapKey without the KEK that wrapped it succeeded")
	}
	rewrapped, _ := rotated.WrapKey(ctx, key)
	if got, err := onlyNew.UnwrapKey(ctx, rewrapped); err != nil || !bytes.Equal(got, key) {
		t.Errorf("a key wrapped after the rotation needs only the new KEK: %x, %v", got, err)
	}
	if _, err := eventstore.NewLocalKeyEncrypter([]byte("short")); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("a short KEK: %v", err)
	}
}

// FuzzDecryptPayload: whatever a payload holds — envelopes, broken ones,
// invalid JSON — the decryption stage and the decoder return, never panic,
// and a payload without an envelope is left as it is.
func FuzzDecryptPayload(f *testing.F) {
	reg, _, _ := personalRegistry(f)
	raw := encodeOne(f, reg, customerRegistered{CustomerID: "c-1", Name: "Ada", Email: "a@x", Country: "UK"})
	f.Add(string(raw.Payload))
	f.Add(`{"name":{"esox_enc":"AAAA","esox_key":"01890a5d-ac96-774b-bcce-b302099a8057"}}`)
	f.Add(`{"name":{"esox_enc":"\u0041","esox_key":"x"},"esox_enc":1}`)
	f.Add(`{"esox_enc"`)
	f.Add(`[{"esox_enc":"a","esox_key":"b"}]`)
	f.Fuzz(func(t *testing.T, payload string) {
		raws := []eventstore.RawRecord{{ID: raw.ID, StreamID: "customer-1", StreamVersion: 1, Type: raw.Type, SchemaVersion: 1, Payload: []byte(payload)}}
		if err := reg.Decrypt(context.Background(), raws); err != nil {
			t.Fatalf("Decrypt: %v (only key store errors fail the batch)", err)
		}
		if !strings.Contains(payload, "esox_enc") && string(raws[0].Payload) != payload {
			t.Fatalf("a payload without an envelope changed: %q -> %q", payload, raws[0].Payload)
		}
		_, _ = raws[0].Decode(reg)
		plain := eventstore.NewRegistry()
		eventstore.MustRegister[customerRegistered](plain, "customer_registered")
		_, _ = eventstore.RawRecord{ID: raw.ID, Type: raw.Type, Payload: []byte(payload)}.Decode(plain)
	})
}
