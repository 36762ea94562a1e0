package memory_test

import (
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/eventstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		return memory.New(reg)
	})
}
