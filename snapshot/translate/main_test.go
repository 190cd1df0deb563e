package translate

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks no test leaves a goroutine behind (the builds of a
// Compose run side by side).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
