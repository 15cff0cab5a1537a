package e2e

import (
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
)

// termClient is the real `client` program, reading from a pipe kept open until the test ends
// (EOF would end it), its frames and status lines in its log.
type termClient struct {
	user string
	proc *localcluster.Proc
}

// welcomeLine is how the client prints a welcome frame.
var welcomeLine = regexp.MustCompile(`connected to (\S+) as (\S+) \(conn (\S+)\)`)

func startTermClient(t *testing.T, lb, user string) *termClient {
	t.Helper()
	p := startInteractive(t, "client-"+user, bin(t, "client"), "-url", "ws://"+lb+"/ws", "-user", user)
	return &termClient{user: user, proc: p}
}

// welcomes lists every welcome the client printed, in order.
func (tc *termClient) welcomes() []connRef {
	b, _ := os.ReadFile(tc.proc.LogPath())
	var ws []connRef
	for _, m := range welcomeLine.FindAllStringSubmatch(string(b), -1) {
		ws = append(ws, connRef{Gateway: m[1], User: m[2], ID: m[3]})
	}
	return ws
}

// waitWelcomes waits until the client has printed at least n welcomes.
func (tc *termClient) waitWelcomes(t *testing.T, n int, timeout time.Duration) []connRef {
	t.Helper()
	var ws []connRef
	waitFor(t, timeout, fmt.Sprintf("client %s: %d welcome(s)", tc.user, n), func() error {
		if !tc.proc.Running() {
			return fmt.Errorf("%w: client %s exited: %v", errStop, tc.user, tc.proc.ExitErr())
		}
		if ws = tc.welcomes(); len(ws) < n {
			return fmt.Errorf("printed %d welcome(s)", len(ws))
		}
		return nil
	})
	return ws
}
