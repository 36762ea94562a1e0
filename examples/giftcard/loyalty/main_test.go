package loyalty_test

import (
	"os"
	"testing"

	"github.com/esox-go/esox/internal/leaktest"
)

// TestMain fails a green run that leaves goroutines behind.
func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }
