package testkit

import (
	"testing"
	"time"
)

// Eventually polls cond every 10 ms until it holds, failing the test after within with what it
// was waiting for. It is the poll loop of the package tests (deploy/e2e has its own waitFor,
// which also returns how long the wait took).
func Eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
