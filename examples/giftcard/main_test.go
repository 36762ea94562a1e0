package main

import (
	"os"
	"testing"

	"github.com/esox-go/esox/internal/leaktest"
)

// TestMain fails a green run that leaves goroutines behind (NATS
// connections closed, the pool closed).
func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }
