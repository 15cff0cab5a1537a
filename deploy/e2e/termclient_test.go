package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// termClient is the real `client` program, reading from a pipe kept open (EOF would end it) and
// writing frames and status lines to one buffer.
type termClient struct {
	user   string
	out    testkit.SyncBuffer
	cmd    *exec.Cmd
	stdin  *os.File
	exited chan error
}

// welcomeLine is how the client prints a welcome frame.
var welcomeLine = regexp.MustCompile(`connected to (\S+) as (\S+) \(conn (\S+)\)`)

type termWelcome struct{ Gateway, User, ConnID string }

func startTermClient(t *testing.T, lb, user string) *termClient {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	tc := &termClient{user: user, stdin: w, exited: make(chan error, 1)}
	tc.cmd = exec.Command(filepath.Join(binaries(t), "client"), "-url", "ws://"+lb+"/ws", "-user", user)
	tc.cmd.Stdin, tc.cmd.Stdout, tc.cmd.Stderr = r, &tc.out, &tc.out
	if err := tc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	go func() { tc.exited <- tc.cmd.Wait() }()
	t.Cleanup(func() {
		w.Close() // Ctrl-D: the client closes with 1000 and exits
		select {
		case <-tc.exited:
		case <-time.After(5 * time.Second):
			_ = tc.cmd.Process.Kill()
			<-tc.exited
		}
		if t.Failed() {
			t.Logf("--- client %s output:\n%s", user, tc.out.String())
		}
	})
	return tc
}

// welcomes lists every welcome the client printed, in order.
func (tc *termClient) welcomes() []termWelcome {
	var ws []termWelcome
	for _, m := range welcomeLine.FindAllStringSubmatch(tc.out.String(), -1) {
		ws = append(ws, termWelcome{Gateway: m[1], User: m[2], ConnID: m[3]})
	}
	return ws
}

// waitWelcomes waits until the client has printed at least n welcomes.
func (tc *termClient) waitWelcomes(n int, timeout time.Duration) ([]termWelcome, error) {
	var ws []termWelcome
	err := waitFor(timeout, 20*time.Millisecond, func() error {
		select {
		case err := <-tc.exited:
			tc.exited <- err
			return fmt.Errorf("client %s exited: %v", tc.user, err)
		default:
		}
		if ws = tc.welcomes(); len(ws) < n {
			return fmt.Errorf("client %s printed %d welcome(s), want %d", tc.user, len(ws), n)
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("%w; output:\n%s", err, tc.out.String())
	}
	return ws, err
}
