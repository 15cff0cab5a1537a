package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
)

// startProc runs the program bin of binDir with args and exactly env (plus PATH and HOME),
// logging to NAME.log in the test's temporary directory, through the same localcluster.Proc a
// cluster uses; stdin may be nil. The process is killed by PID when the test ends and its log
// printed when the test fails.
func startProc(t *testing.T, name, bin string, args, env []string, stdin *os.File) *localcluster.Proc {
	t.Helper()
	env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := localcluster.NewProc(name, bin, args, env, filepath.Join(t.TempDir(), name+".log"), stdin)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Kill()
		if t.Failed() || showLogs() {
			dumpLog(t, name, p.LogPath())
		}
	})
	return p
}

// startInteractive runs bin through startProc with a stdin that stays open until the test
// ends: wscat and the client program exit as soon as their stdin reaches EOF (wscat before even
// connecting, the client after closing with 1000). Cleanups run last-in first-out, so the pipe
// is closed (Ctrl-D) only after startProc's cleanup has killed the process if it had not exited.
func startInteractive(t *testing.T, name, bin string, args ...string) *localcluster.Proc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	p := startProc(t, name, bin, args, nil, r)
	r.Close()
	return p
}

// startGateway starts a gateway outside any localcluster (Sentinel and Cluster tests) on a
// free loopback port with id and the extra env, and waits for /readyz 200.
func startGateway(t *testing.T, id string, env ...string) (*localcluster.Proc, string) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	all := append(append([]string{}, baseEnv...), "GATEWAY_ID="+id, "GATEWAY_ADDR="+addr)
	p := startProc(t, id, bin(t, "gateway"), nil, append(all, env...), nil)
	waitFor(t, 20*time.Second, "gateway "+id+" /readyz 200", func() error {
		if !p.Running() {
			return fmt.Errorf("%w: gateway %s exited", errStop, id)
		}
		return readyzIs(addr, http.StatusOK)()
	})
	return p, addr
}

// startTicker starts a ticker outside any localcluster with TICKER_ID id and the extra env.
func startTicker(t *testing.T, id string, env ...string) *localcluster.Proc {
	t.Helper()
	all := append(append([]string{}, baseEnv...), "TICKER_ID="+id)
	return startProc(t, id, bin(t, "ticker"), nil, append(all, env...), nil)
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

// readyzIs is a waitFor condition: /readyz of addr answers want.
func readyzIs(addr string, want int) func() error {
	return func() error {
		if code := httpStatus(addr, "/readyz"); code != want {
			return fmt.Errorf("/readyz %d, want %d", code, want)
		}
		return nil
	}
}

// metric reads one unlabelled sample from the gateway's /metrics (any namespace prefix), 0 when
// it is absent.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if ok && (k == name || strings.HasSuffix(k, "_"+name)) {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// logHas reports whether a process log contains s.
func logHas(t *testing.T, path, s string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	return strings.Contains(string(b), s)
}
