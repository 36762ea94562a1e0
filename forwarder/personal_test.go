package forwarder

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// customerNamed carries personal data.
type customerNamed struct {
	CustomerID string `json:"customer_id" esox:"subject"`
	Name       string `json:"name" esox:"personal"`
}

// TestPersonalDataOnTheBroker: by default the forwarder publishes what is
// stored, personal fields encrypted; with DecryptPersonalData it publishes
// them decrypted, and a forgotten subject's as null, listed in
// MetadataRedacted, which RecordFromMessage reads back.
func TestPersonalDataOnTheBroker(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := testRegistry()
	eventstore.MustRegister[customerNamed](reg, "customer_named")
	kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := eventstore.NewShredder(memory.NewKeyStore(), kek, eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema, Logger: testLogger(t)})
	b := &bundle{db: db, schema: schema, store: store}

	// Without a Shredder, decrypting is refused at New.
	if _, err := New(store, &recordingPublisher{}, Config{DecryptPersonalData: true}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("New(DecryptPersonalData) without a Shredder = %v, want ErrInvalidArgument", err)
	}
	reg.SetShredder(sh)
	for _, c := range []customerNamed{{"c-ada", "Ada Lovelace"}, {"c-bob", "Bob Byte"}} {
		if _, err := store.Append(testCtx(t), "customer-"+c.CustomerID, eventstore.NoStream, []eventstore.Event{{Data: c}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sh.Forget(testCtx(t), "c-bob"); err != nil {
		t.Fatal(err)
	}
	b.waitFeed(t, 2)

	stored, decrypted := &recordingPublisher{}, &recordingPublisher{}
	runForwarder(t, newForwarder(t, b, stored, Config{ConsumerGroup: "as-stored"}))
	runForwarder(t, newForwarder(t, b, decrypted, Config{ConsumerGroup: "decrypted", DecryptPersonalData: true}))
	testwait.Until(t, "both forwarders to publish both events", func() bool { return stored.len() == 2 && decrypted.len() == 2 })

	for _, d := range stored.all() {
		if bytes.Contains(d.Payload, []byte("Ada")) || bytes.Contains(d.Payload, []byte("Bob")) || !bytes.Contains(d.Payload, []byte("esox_enc")) {
			t.Errorf("published as stored: %s, want the name encrypted", d.Payload)
		}
		if d.Metadata.Get(MetadataRedacted) != "" {
			t.Errorf("published as stored with %s=%q", MetadataRedacted, d.Metadata.Get(MetadataRedacted))
		}
	}
	for _, d := range decrypted.all() {
		var p customerNamed
		if err := json.Unmarshal(d.Payload, &p); err != nil {
			t.Fatalf("decrypted payload %s: %v", d.Payload, err)
		}
		rec, err := RecordFromMessage(messageOf(d))
		if err != nil {
			t.Fatal(err)
		}
		switch p.CustomerID {
		case "c-ada":
			if p.Name != "Ada Lovelace" || d.Metadata.Get(MetadataRedacted) != "" || rec.Redacted != nil {
				t.Errorf("ada published as %s (%v)", d.Payload, d.Metadata)
			}
		case "c-bob":
			if p.Name != "" || !bytes.Contains(d.Payload, []byte(`"name": null`)) && !bytes.Contains(d.Payload, []byte(`"name":null`)) ||
				d.Metadata.Get(MetadataRedacted) != "name" || len(rec.Redacted) != 1 || rec.Redacted[0] != "name" {
				t.Errorf("forgotten bob published as %s (%v), record Redacted %v", d.Payload, d.Metadata, rec.Redacted)
			}
		default:
			t.Errorf("unexpected payload %s", d.Payload)
		}
	}
}

// messageOf rebuilds the message of a delivery.
func messageOf(d delivery) *message.Message {
	msg := message.NewMessage(d.UUID, d.Payload)
	msg.Metadata = d.Metadata
	return msg
}
