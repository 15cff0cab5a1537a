package testkit

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// MainWithLeakCheck runs the tests, then fails the package if goroutines running this
// project's code are still alive a few seconds later (a leaked reader, writer, flusher or
// ticker). Call it from TestMain: `func TestMain(m *testing.M) { MainWithLeakCheck(m) }`.
func MainWithLeakCheck(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitForLeaks(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitForLeaks(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		leaked := projectGoroutines()
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// projectGoroutines returns the stacks of goroutines with a frame in this module, other than
// this check's own.
func projectGoroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/wsgw/wsgw/") && !strings.Contains(g, "projectGoroutines") &&
			!strings.Contains(g, "MainWithLeakCheck") && !strings.Contains(g, "testing.(*M).Run") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
