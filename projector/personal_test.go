package projector_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

type memberJoined struct {
	MemberID string `json:"member_id" esox:"subject"`
	Email    string `json:"email" esox:"personal"`
	Club     string `json:"club"`
}

// TestRecordsFromMessageDecrypts: a consumer decodes a message published
// as stored (personal fields encrypted) with its registry's Shredder; a
// consumer without one, or after the subject is forgotten, reads the
// fields as redacted.
func TestRecordsFromMessageDecrypts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{4}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := eventstore.NewShredder(memory.NewKeyStore(), kek, eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	newReg := func(sh *eventstore.Shredder) *eventstore.Registry {
		reg := eventstore.NewRegistry()
		eventstore.MustRegister[memberJoined](reg, "member_joined")
		reg.SetShredder(sh)
		return reg
	}
	reg, plain := newReg(sh), newReg(nil)
	store := memory.New(reg)
	want := memberJoined{MemberID: "m-1", Email: "m1@example.com", Club: "chess"}
	if _, err := store.Append(ctx, "member-m-1", eventstore.NoStream, []eventstore.Event{{Data: want}}); err != nil {
		t.Fatal(err)
	}
	raws, err := store.ReadStreamRaw(ctx, "member-m-1", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := raws[0].Record()
	if err != nil {
		t.Fatal(err)
	}
	msg := forwarder.NewMessage(stored) // what the forwarder publishes by default
	if bytes.Contains(msg.Payload, []byte("example.com")) {
		t.Fatalf("published in the clear: %s", msg.Payload)
	}
	rec, err := projector.RecordFromMessage(reg, msg)
	if err != nil || rec.Data != want || rec.Redacted != nil {
		t.Fatalf("with the Shredder: %+v, %v", rec, err)
	}
	redacted := memberJoined{MemberID: "m-1", Club: "chess"}
	rec, err = projector.RecordFromMessage(plain, msg)
	if err != nil || rec.Data != redacted || !slices.Equal(rec.Redacted, []string{"email"}) {
		t.Fatalf("without a Shredder: %+v, %v; want %+v, email redacted", rec, err, redacted)
	}
	if _, err := sh.Forget(ctx, "m-1"); err != nil {
		t.Fatal(err)
	}
	rec, err = projector.RecordFromMessage(reg, msg)
	if err != nil || rec.Data != redacted || !slices.Equal(rec.Redacted, []string{"email"}) {
		t.Fatalf("after Forget: %+v, %v", rec, err)
	}
}
