package memory

import (
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
)

type tampered struct {
	N int `json:"n"`
}

// chained returns a store holding stream "t-1" with 5 events and "t-2"
// with 2, and a seal of both.
func chained(t *testing.T) (*Store, eventstore.Seal) {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[tampered](reg, "tampered")
	s := New(reg)
	for i := range 5 {
		if _, err := s.Append(t.Context(), "t-1", eventstore.Any, []eventstore.Event{{Data: tampered{N: i}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(t.Context(), "t-2", eventstore.NoStream, []eventstore.Event{{Data: tampered{N: 1}}, {Data: tampered{N: 2}}}); err != nil {
		t.Fatal(err)
	}
	seal, err := s.Seal(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, seal
}

// TestVerifyDetectsTampering changes the memory store's rows the way raw
// SQL changes the PostgreSQL store's, one kind per subtest: Verify reports
// the first broken link of the right kind, VerifySeal a truncated tail.
func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	// row returns the feed index of version v of t-1.
	row := func(s *Store, v int) *stored { return &s.d.feed[s.d.streams["t-1"][v-1]] }
	for _, tc := range []struct {
		name    string
		tamper  func(s *Store)
		version int64
		kind    eventstore.BreakKind
	}{
		{"PayloadChanged", func(s *Store) { row(s, 3).payload = []byte(`{"n":99}`) }, 3, eventstore.BreakChanged},
		{"MetadataChanged", func(s *Store) { row(s, 3).metadata = []byte(`{"actor":"mallory"}`) }, 3, eventstore.BreakChanged},
		{"Deleted", func(s *Store) {
			idx := s.d.streams["t-1"]
			s.d.streams["t-1"] = append(idx[:2:2], idx[3:]...)
		}, 3, eventstore.BreakMissing},
		{"DeletedAndRenumbered", func(s *Store) {
			idx := s.d.streams["t-1"]
			s.d.streams["t-1"] = append(idx[:2:2], idx[3:]...)
			for v := 3; v <= 4; v++ {
				row(s, v).version = int64(v)
			}
		}, 3, eventstore.BreakMissing},
		{"Swapped", func(s *Store) {
			idx := s.d.streams["t-1"]
			idx[2], idx[3] = idx[3], idx[2]
			row(s, 3).version, row(s, 4).version = 3, 4
		}, 3, eventstore.BreakReordered},
		{"DigestRemoved", func(s *Store) { row(s, 3).digest = nil }, 3, eventstore.BreakUnchained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := chained(t)
			tc.tamper(s)
			res, err := s.Verify(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK() || len(res.Breaks) != 1 {
				t.Fatalf("Verify = %+v, want one broken stream", res)
			}
			if b := res.Breaks[0]; b.StreamID != "t-1" || b.StreamVersion != tc.version || b.Kind != tc.kind {
				t.Fatalf("break = %s, want t-1 version %d %s", b, tc.version, tc.kind)
			}
		})
	}
	t.Run("TailTruncated", func(t *testing.T) {
		t.Parallel()
		s, seal := chained(t)
		s.d.streams["t-1"] = s.d.streams["t-1"][:3]
		if res, err := s.Verify(t.Context(), nil); err != nil || !res.OK() {
			t.Fatalf("Verify = %+v, %v: a truncated tail leaves the chain valid", res, err)
		}
		r, err := s.VerifySeal(t.Context(), seal)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK() || !strings.Contains(r.Detail, "removed") {
			t.Fatalf("VerifySeal = %+v, want events removed", r)
		}
		if got := s.Seals(); len(got) != 1 || got[0].ID != seal.ID {
			t.Errorf("Seals = %+v", got)
		}
	})
}
