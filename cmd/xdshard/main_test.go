package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks no test leaves a goroutine behind: every replica a
// test serves is closed with the test, and Close waits for what it
// started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go logs through klog, whose flush daemon is the process's.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}
