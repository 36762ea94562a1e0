package aggregate_test

import (
	"os"
	"testing"

	"github.com/esox-go/esox/internal/leaktest"
)

// TestMain fails a green run that leaves goroutines behind (the PostgreSQL
// tests' pools must be closed, concurrent writers joined).
func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }
