package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsgw/wsgw/internal/testkit"
)

// TestSocketFloodUnderFDLimit floods a real standalone gateway, started under `ulimit -n 300`,
// with WebSockets from one address (127.0.0.1), then with raw TCP connections that never send a
// request.
//
// MAX_CONNECTIONS is left at its default, derived from the open-file limit (here 300/2 = 150,
// the floor for limits under 2048; soft limit − 1024 above), so:
//   - exactly 150 upgrades succeed and every later one gets 503 with Retry-After: 1 at once;
//   - /healthz and /metrics keep answering while the gateway is full, /readyz answers 503 `full`;
//   - the raw sockets do exhaust the descriptors: the gateway logs the accept errors at warn
//     level (rate-limited) and counts them, and answers again once they are gone.
//
// Fails before admission (MAX_CONNECTIONS and the accept-error listener): every upgrade is
// accepted until accept(2) fails with EMFILE (~290 sockets), the rest hang without an answer,
// /healthz and /metrics stop answering, and nothing is logged above debug level.
func TestSocketFloodUnderFDLimit(t *testing.T) {
	const (
		nofile  = 300
		wantMax = nofile / 2
		dials   = 400
		raw     = 200
	)
	bin := binDir(t)
	port := testkit.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logPath := filepath.Join(t.TempDir(), "gateway.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// bash sets both the soft and the hard limit; exec keeps the PID, so only the gateway is signalled.
	cmd := exec.Command("bash", "-c", fmt.Sprintf("ulimit -n %d && exec \"$0\"", nofile), filepath.Join(bin, "gateway"))
	cmd.Env = append(os.Environ(), "GATEWAY_ADDR="+addr, "GATEWAY_ID=gw-flood", "LOG_LEVEL=info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("gateway log:\n%s", b)
		}
	})
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (int, string, error) {
		resp, err := hc.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	waitFor(t, 10*time.Second, "gateway answers /healthz", func() error { _, _, err := get("/healthz"); return err })

	// WebSockets from one address, 20 dialing at a time.
	var (
		mu       sync.Mutex
		conns    []*websocket.Conn
		refused  int
		badRetry int
		other    []error
	)
	t.Cleanup(func() {
		for _, c := range conns {
			c.CloseNow()
		}
	})
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range dials {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/ws?user=flood%d", addr, i), nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				conns = append(conns, c)
			case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
				refused++
				if resp.Header.Get("Retry-After") != "1" {
					badRetry++
				}
			default:
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	measure(t, "flood upgrades", "%d dials from 127.0.0.1 under ulimit -n %d: %d upgraded, %d refused with 503, %d other errors, in %v",
		dials, nofile, len(conns), refused, len(other), took.Round(time.Millisecond))
	if len(conns) != wantMax || refused != dials-wantMax || len(other) > 0 {
		t.Errorf("upgraded %d, refused %d, other errors %d (first: %v); want %d upgraded and %d refused with 503",
			len(conns), refused, len(other), errors.Join(first(other)...), wantMax, dials-wantMax)
	}
	if badRetry > 0 {
		t.Errorf("%d refusals without Retry-After: 1", badRetry)
	}

	// While full: health and metrics answer, readiness says full.
	for _, path := range []string{"/healthz", "/metrics"} {
		t0 := time.Now()
		code, body, err := get(path)
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s while full: %d %v", path, code, err)
			continue
		}
		measure(t, "flood "+path, "answered 200 in %v with %d sockets open", time.Since(t0).Round(time.Microsecond), len(conns))
		if path == "/metrics" && !strings.Contains(body, fmt.Sprintf(`ws_rejected_total{reason="full"} %d`, refused)) {
			t.Errorf("/metrics does not count the %d refusals as full", refused)
		}
	}
	if code, body, err := get("/readyz"); err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "full") {
		t.Errorf("/readyz while full: %d %q %v, want 503 full", code, body, err)
	}
	if t.Failed() {
		return
	}

	// Raw sockets that never send a request do take the remaining descriptors: the accept
	// errors must be logged (rate-limited, warn) and counted, and the gateway must come back.
	var raws []net.Conn
	for range raw {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break // the kernel's backlog is full: enough
		}
		raws = append(raws, c)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("a warn line about the accept error with %d raw sockets open", len(raws)), func() error {
		b, _ := os.ReadFile(logPath)
		if !strings.Contains(string(b), "level=WARN msg=\"accept failed") || !strings.Contains(string(b), "too many open files") {
			return errors.New("no warn line about the accept error")
		}
		return nil
	})
	for _, c := range raws {
		c.Close()
	}
	t0 := time.Now()
	waitFor(t, 10*time.Second, "/healthz after the raw sockets closed", func() error { _, _, err := get("/healthz"); return err })
	measure(t, "flood recovery", "/healthz answers %v after %d raw sockets closed", time.Since(t0).Round(time.Millisecond), len(raws))
	if _, body, err := get("/metrics"); err != nil || !strings.Contains(body, `accept_errors_total{class="emfile"}`) {
		t.Errorf("/metrics lacks the accept errors (%v)", err)
	}
	b, _ := os.ReadFile(logPath)
	if n := strings.Count(string(b), "accept failed"); n > 3 {
		t.Errorf("%d accept-failure lines in a few seconds, want at most one per 10 s", n)
	}
}

func first(errs []error) []error {
	if len(errs) > 3 {
		return errs[:3]
	}
	return errs
}
