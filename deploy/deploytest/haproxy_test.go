package deploytest

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsgw/wsgw/deploy/lbconfig"
	"github.com/wsgw/wsgw/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite deploy/haproxy/haproxy.cfg from deploy/lbconfig")

// composeLB is the configuration rendered into deploy/haproxy/haproxy.cfg for docker-compose.yml.
var composeLB = lbconfig.Config{Docker: true, Bind: ":8080", StatsBind: ":8404"}

// TestHAProxyGolden keeps the committed config identical to what deploy/lbconfig renders from the
// one template, so the compose stack and the local cluster cannot drift apart. -update rewrites it.
func TestHAProxyGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := lbconfig.Render(&buf, composeLB); err != nil {
		t.Fatal(err)
	}
	const rel = "deploy/haproxy/haproxy.cfg"
	if *update {
		if err := os.WriteFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)), buf.Bytes(), 0o644); err != nil {
			t.Fatalf("update %s: %v", rel, err)
		}
		return
	}
	if got := readRepoFile(t, rel); got != buf.String() {
		t.Errorf("%s differs from what deploy/lbconfig renders. Edit deploy/lbconfig/haproxy.cfg.tmpl, "+
			"then run: go test ./deploy/deploytest -run TestHAProxyGolden -update", rel)
	}
}

// haproxyCheck runs `haproxy -c` on cfg and fails on errors and on warnings, which HAProxy
// prints for settings it ignores.
func haproxyCheck(t *testing.T, bin, name, cfg string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c %s: %v\n%s\n--- config ---\n%s", name, err, out, cfg)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "[WARNING]") {
			t.Errorf("haproxy -c %s: %s", name, line)
		}
	}
}

func TestHAProxyConfigValid(t *testing.T) {
	bin := testkit.Need(t, "haproxy")
	// The committed Docker config is checked verbatim. Its hostname `gateway` and the resolver
	// 127.0.0.11 exist only inside the compose network, but `init-addr none` tells HAProxy not
	// to resolve servers at start-up and `-c` contacts no nameserver, so no stub is needed.
	haproxyCheck(t, bin, "docker.cfg", readRepoFile(t, "deploy/haproxy/haproxy.cfg"))

	var buf bytes.Buffer
	err := lbconfig.Render(&buf, lbconfig.Config{
		Servers:   []string{"127.0.0.1:18081", "127.0.0.1:18082", "localhost:18083"},
		Bind:      "127.0.0.1:18080",
		StatsBind: "127.0.0.1:18404",
		Threads:   1,
	})
	if err != nil {
		t.Fatal(err)
	}
	haproxyCheck(t, bin, "local.cfg", buf.String())
}

// backend is a stand-in gateway: / answers its name, /readyz 200 or 503, /ws echoes with its
// name prefixed.
type backend struct {
	name     string
	draining atomic.Bool
	refuseWS atomic.Bool // /ws answers 503 before upgrading, as a draining gateway does
	srv      *httptest.Server
}

func newBackend(t *testing.T, name string) *backend { return newBackendOn(t, name, nil) }

// newBackendOn serves the stand-in on ln (nil: a fresh loopback listener).
func newBackendOn(t *testing.T, name string, ln net.Listener) *backend {
	b := &backend{name: name}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if b.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		if b.refuseWS.Load() {
			http.Error(w, "gateway is draining", http.StatusServiceUnavailable)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := context.Background()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, append([]byte(name+":"), msg...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	b.srv = httptest.NewUnstartedServer(mux)
	if ln != nil {
		b.srv.Listener.Close()
		b.srv.Listener = ln
	}
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	return b
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago, for HAProxy to bind.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startHAProxy runs haproxy in the foreground on the rendered local config and stops it, by
// PID, when the test ends.
func startHAProxy(t *testing.T, bin string, c lbconfig.Config) {
	dir := t.TempDir()
	var cfg bytes.Buffer
	if err := lbconfig.Render(&cfg, c); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, cfg.Bytes(), 0o644); err != nil {
		t.Fatalf("write haproxy.cfg: %v", err)
	}
	logPath := filepath.Join(dir, "haproxy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create haproxy log: %v", err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("haproxy output:\n%s", b)
		}
	})
}

// TestHAProxyBalancesAndDrains runs the local-cluster rendering of the template in front of two
// stand-in gateways: requests spread over both; a replica whose /readyz turns 503 leaves rotation
// within ~3 s while its open WebSockets stay up (the gateway, not HAProxy, closes them); and it
// comes back once ready.
func TestHAProxyBalancesAndDrains(t *testing.T) {
	bin := testkit.Need(t, "haproxy")
	a, b := newBackend(t, "a"), newBackend(t, "b")
	bind := freeAddr(t)
	startHAProxy(t, bin, lbconfig.Config{
		Servers: []string{a.srv.Listener.Addr().String(), b.srv.Listener.Addr().String()},
		Bind:    bind,
		MaxConn: 1000, // the default needs ~200k open files; test hosts may allow far fewer.
		// Every request below is a new connection from 127.0.0.1: lift the per-source rate.
		PerSourceConns: lbconfig.LoopbackPerSource, PerSourceRate: lbconfig.LoopbackPerSource,
	})

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (string, error) {
		resp, err := client.Get("http://" + bind + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET /: %s %s", resp.Status, body)
		}
		return string(body), err
	}
	// waitFor sends requests until the last n all satisfy ok, or fails after limit.
	waitFor := func(what string, limit time.Duration, n int, ok func(seen map[string]int) bool) time.Duration {
		t.Helper()
		start := time.Now()
		seen := map[string]int{}
		for total := 0; ; total++ {
			if time.Since(start) > limit {
				t.Fatalf("%s: not within %v; last %d answers: %v", what, limit, n, seen)
			}
			name, err := get()
			if err != nil {
				seen["error"]++
			} else {
				seen[name]++
			}
			if total >= n-1 && ok(seen) {
				return time.Since(start)
			}
			if total%n == n-1 {
				seen = map[string]int{}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	both := func(seen map[string]int) bool { return seen["a"] > 0 && seen["b"] > 0 && seen["error"] == 0 }
	waitFor("both replicas serve", 5*time.Second, 10, both)
	seen := map[string]int{}
	for range 20 {
		name, err := get()
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if seen["a"] < 5 || seen["b"] < 5 {
		t.Errorf("20 requests split %v, want both replicas used (leastconn rotates among equals)", seen)
	}

	// One WebSocket on each replica (leastconn sends the second to the idle one).
	ctx := context.Background()
	var conns []*websocket.Conn
	for range 2 {
		c, _, err := websocket.Dial(ctx, "ws://"+bind+"/ws", nil)
		if err != nil {
			t.Fatalf("websocket through haproxy: %v", err)
		}
		t.Cleanup(func() { c.CloseNow() })
		conns = append(conns, c)
	}
	echo := func(c *websocket.Conn) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
			t.Fatalf("websocket write: %v", err)
		}
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("websocket read: %v", err)
		}
		return string(msg)
	}
	wsOn := map[string]bool{}
	for _, c := range conns {
		wsOn[echo(c)] = true
	}
	if !wsOn["a:hi"] || !wsOn["b:hi"] {
		t.Errorf("two WebSockets landed on %v, want one per replica", wsOn)
	}

	// A server that has just come up leaves after one failed check, one that has been up a while
	// after two (fall 2, inter 1s): ~2 s at most, plus the first check's phase.
	b.draining.Store(true)
	onlyA := func(seen map[string]int) bool { return seen["a"] == 10 }
	took := waitFor("draining replica leaves rotation", 4*time.Second, 10, onlyA)
	t.Logf("draining replica out of rotation after %v", took.Round(100*time.Millisecond))
	for _, c := range conns {
		if got := echo(c); !strings.HasSuffix(got, ":hi") {
			t.Errorf("websocket after drain: %q", got)
		}
	}

	b.draining.Store(false)
	took = waitFor("ready replica rejoins", 4*time.Second, 10, both)
	t.Logf("replica back in rotation after %v", took.Round(100*time.Millisecond))
}
