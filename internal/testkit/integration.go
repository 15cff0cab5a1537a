package testkit

import (
	"os"
	"os/exec"
	"testing"
)

// Required reports whether INTEGRATION=required is set.
func Required() bool { return os.Getenv("INTEGRATION") == "required" }

// Need returns the path of the first of names found in PATH. When none is found it skips the
// test, or fails it when INTEGRATION=required.
func Need(tb testing.TB, names ...string) string {
	tb.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Unavailable(tb, "%v not found in PATH (install it, or see .ci/run)", names)
	return ""
}

// Unavailable skips the test with the message, or fails it when INTEGRATION=required.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if Required() {
		tb.Fatalf("INTEGRATION=required: "+format, args...)
	}
	tb.Skipf(format, args...)
}
