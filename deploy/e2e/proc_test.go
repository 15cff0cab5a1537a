package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// proc is one gateway or ticker this package started itself (Sentinel and Cluster tests, and
// tickers with a known TICKER_ID). It is killed by PID when the test ends.
type proc struct {
	name string
	bin  string
	env  []string
	log  string

	cmd  *exec.Cmd
	done chan struct{}
}

// startProc runs bin with exactly env (plus PATH and HOME), logging to a file in the test's
// temporary directory; the log is printed when the test fails.
func startProc(t *testing.T, name, bin string, env []string) *proc {
	t.Helper()
	p := &proc{name: name, bin: bin, env: env, log: filepath.Join(t.TempDir(), name+".log")}
	if err := p.start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() || showLogs() {
			dumpLog(t, name, p.log)
		}
	})
	return p
}

// start (re)starts the process with its settings; the log file is appended to.
func (p *proc) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL to this process (by PID) and waits for it.
func (p *proc) kill() {
	if p.cmd == nil || !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term sends SIGTERM and waits up to timeout for the exit, then kills it.
func (p *proc) term(timeout time.Duration) error {
	if !p.running() {
		return fmt.Errorf("%s: not running", p.name)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			return fmt.Errorf("%s exited with code %d after SIGTERM", p.name, code)
		}
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s still running %v after SIGTERM; killed", p.name, timeout)
	}
}

// startGateway starts a gateway on a free loopback port with id and the extra env, and waits
// for /readyz 200.
func startGateway(t *testing.T, id string, env ...string) (*proc, string) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	all := append(append([]string{}, baseEnv...), "GATEWAY_ID="+id, "GATEWAY_ADDR="+addr)
	p := startProc(t, id, bin(t, "gateway"), append(all, env...))
	waitFor(t, 20*time.Second, "gateway "+id+" /readyz 200", func() error {
		if !p.running() {
			return fmt.Errorf("%w: gateway %s exited", errStop, id)
		}
		if code := httpStatus(addr, "/readyz"); code != http.StatusOK {
			return fmt.Errorf("/readyz %d", code)
		}
		return nil
	})
	return p, addr
}

// startTicker starts a ticker with TICKER_ID id and the extra env.
func startTicker(t *testing.T, id string, env ...string) *proc {
	t.Helper()
	all := append(append([]string{}, baseEnv...), "TICKER_ID="+id)
	return startProc(t, id, bin(t, "ticker"), append(all, env...))
}

// dumpLog prints the last part of a process log into the test output.
func dumpLog(t *testing.T, name, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("log of %s: %v", name, err)
		return
	}
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	t.Logf("---- log of %s (%s) ----\n%s", name, path, b)
}

// httpStatus GETs path on addr and returns the status code, or 0 when the request failed.
func httpStatus(addr, path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// showLogs reports whether CLUSTERTEST_LOGS is set: every process log is then printed, not
// only those of failed tests.
func showLogs() bool { return os.Getenv("CLUSTERTEST_LOGS") != "" }
