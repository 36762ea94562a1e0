package aggregate_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
)

// Patron is an aggregate whose events carry personal data.
type Patron struct {
	aggregate.Base
	Name  string
	Loans int
}

type patronJoined struct {
	PatronID string `json:"patron_id" esox:"subject"`
	Name     string `json:"name" esox:"personal"`
}

type bookLent struct {
	PatronID string `json:"patron_id"`
}

func (p *Patron) Apply(event any) {
	switch e := event.(type) {
	case patronJoined:
		p.Name = e.Name
	case bookLent:
		p.Loans++
	}
}

// TestLoadAfterForget: an aggregate whose subject was forgotten still
// loads, from every event, with the personal fields zero, and takes new
// commands.
func TestLoadAfterForget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[patronJoined](reg, "patron_joined")
	eventstore.MustRegister[bookLent](reg, "book_lent")
	kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{6}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := eventstore.NewShredder(memory.NewKeyStore(), kek, eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg.SetShredder(sh)
	repo, err := aggregate.NewRepository(memory.New(reg), "patron", func(string) *Patron { return &Patron{} }, aggregate.Config{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Create(ctx, "p-1", func(p *Patron) error {
		aggregate.Raise(p, patronJoined{PatronID: "p-1", Name: "Ada"})
		aggregate.Raise(p, bookLent{PatronID: "p-1"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p, err := repo.Load(ctx, "p-1")
	if err != nil || p.Name != "Ada" || p.Loans != 1 {
		t.Fatalf("Load = %+v, %v", p, err)
	}
	if _, err := sh.Forget(ctx, "p-1"); err != nil {
		t.Fatal(err)
	}
	p, err = repo.Load(ctx, "p-1")
	if err != nil || p.Name != "" || p.Loans != 1 || p.Version() != 2 {
		t.Fatalf("Load after Forget = %+v (version %d), %v; want the name zero, the rest intact", p, p.Version(), err)
	}
	if _, err := repo.Update(ctx, "p-1", func(p *Patron) error { aggregate.Raise(p, bookLent{PatronID: "p-1"}); return nil }); err != nil {
		t.Fatalf("Update after Forget: %v", err)
	}
}
