package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"-h"}, nil, &out, &out); err != nil {
		t.Fatalf("-h: %v", err)
	}
	for _, v := range []string{"REDIS_URL", "REDIS_SENTINEL_MASTER", "REDIS_ADDRS", "REDIS_PREFIX", "GATEWAY_ADDR", "GATEWAY_ID",
		"FIB_MAX_N", "FIB_RATE", "FIB_BURST", "READ_LIMIT", "ALLOWED_ORIGINS", "PRESENCE_TTL", "SHUTDOWN_TIMEOUT", "DRAIN_DELAY",
		"TICK_INTERVAL", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_IP", "TRUSTED_PROXIES", "LOG_LEVEL", "LOG_FORMAT", ":8080", "100000", "15s", "10s"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("-h output lacks %s", v)
		}
	}
}

func TestRunBadSetting(t *testing.T) {
	for env, name := range map[string]string{
		"FIB_RATE=fast":        "FIB_RATE",
		"PRESENCE_TTL=15":      "PRESENCE_TTL",
		"READ_LIMIT=-3":        "READ_LIMIT",
		"LOG_LEVEL=loud":       "LOG_LEVEL",
		"GATEWAY_ADDR=nope":    "GATEWAY_ADDR",
		"REDIS_URL=http://x":   "REDIS_URL",
		"ALLOWED_ORIGINS=[":    "ALLOWED_ORIGINS",
		"TICK_INTERVAL=1500us": "TICK_INTERVAL",
		"FIB_MAX_N=many":       "FIB_MAX_N",
		"SHUTDOWN_TIMEOUT=-1s": "SHUTDOWN_TIMEOUT",
		"MAX_CONNECTIONS=-1":   "MAX_CONNECTIONS",
		"TRUSTED_PROXIES=x":    "TRUSTED_PROXIES",
		"DRAIN_DELAY=20s":      "DRAIN_DELAY",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := Run(ctx, nil, []string{env}, &bytes.Buffer{}, &bytes.Buffer{})
		cancel()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v, want a message naming %s", env, err, name)
		}
	}
}

// TestRunStandalone runs the real program on a free port: it serves, and on cancel (SIGTERM)
// drains with 1001 and returns nil.
func TestRunStandalone(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testkit.SyncBuffer
	done := startRun(t, ctx, addr, []string{"GATEWAY_ADDR=" + addr, "TICK_INTERVAL=100ms", "GATEWAY_ID=gw-run"}, &logs)
	if err := healthcheck(context.Background(), addr); err != nil {
		t.Fatalf("healthcheck subcommand: %v", err)
	}
	c, w := dialWelcome(t, "ws://"+addr+"/ws", "ana")
	if w.Gateway != "gw-run" {
		t.Fatalf("welcome = %+v", w)
	}
	if f := readFrame(t, c); f.Type != protocol.TypeTime {
		t.Fatalf("tick = %+v", f)
	}
	cancel()
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	var err error
	for err == nil {
		_, _, err = c.Read(dctx)
	}
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("close = %v, want 1001", err)
	}
	runReturned(t, done, "cancel")
	for _, want := range []string{"connect", "disconnect", "reason=drained", "user=ana", "duration="} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

// startRun runs the gateway program (Run) with env in the background and returns once its
// /healthz answers on addr. The channel receives what Run returns after ctx ends.
func startRun(t *testing.T, ctx context.Context, addr string, env []string, stderr io.Writer) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nil, env, &bytes.Buffer{}, stderr) }()
	testkit.Eventually(t, 5*time.Second, "/healthz", func() bool { return get(addr, "/healthz") == http.StatusOK })
	return done
}

// runReturned fails the test unless Run, started by startRun, returns nil within 10 s of its
// context ending (after what).
func runReturned(t *testing.T, done <-chan error, after string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after " + after)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRunAdminAndAuth runs the program with ADMIN_ADDR and AUTH_JWT_SECRET: the operator routes
// move to the admin listener, `gateway token` makes a token the gateway accepts, a missing
// token gets 401, and the page says authentication is on.
func TestRunAdminAndAuth(t *testing.T) {
	addr, admin := freeAddr(t), freeAddr(t)
	env := []string{"GATEWAY_ADDR=" + addr, "ADMIN_ADDR=" + admin, "TICK_INTERVAL=100ms", "AUTH_JWT_SECRET=" + string(testSecret)}
	ctx, cancel := context.WithCancel(context.Background())
	done := startRun(t, ctx, addr, env, &testkit.SyncBuffer{})
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	for _, path := range []string{"/users", "/metrics", "/debug/pprof/"} {
		if code, _ := testkit.HTTPGet(t, "http://"+addr+path); code != http.StatusNotFound {
			t.Errorf("public %s: %d, want 404", path, code)
		}
		if code, _ := testkit.HTTPGet(t, "http://"+admin+path); code != http.StatusOK {
			t.Errorf("admin %s: %d, want 200", path, code)
		}
	}
	if code, body := testkit.HTTPGet(t, "http://"+addr+"/"); code != 200 || !strings.Contains(body, `<meta name="wsgw-auth" content="bearer">`) {
		t.Errorf("page does not say authentication is on (%d)", code)
	}

	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"token", "-user", "ana", "-ttl", "10m"}, env, &out, &errOut); err != nil {
		t.Fatalf("gateway token: %v %s", err, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if _, resp, err := websocket.Dial(dctx, "ws://"+addr+"/ws", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v", err)
	}
	c, _, err := websocket.Dial(dctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPHeader: bearer(tok)})
	if err != nil {
		t.Fatalf("dial with the printed token: %v", err)
	}
	defer c.CloseNow()
	w := readFrame(t, c)
	if w.Type != protocol.TypeWelcome || w.User != "ana" || w.Exp < time.Now().Add(9*time.Minute).Unix() {
		t.Fatalf("welcome = %+v", w)
	}
	if _, body := testkit.HTTPGet(t, "http://"+admin+"/users"); !strings.Contains(body, `"ana"`) {
		t.Errorf("admin /users lacks ana: %s", body)
	}
}

func TestRunHelpListsAuth(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"-h"}, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"ADMIN_ADDR", "AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY_FILE", "AUTH_JWKS_URL", "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE", "AUTH_USER_CLAIM", "token -user"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("-h output lacks %s", v)
		}
	}
}

func TestRunTokenErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"token", "-user", "ana"}, nil, "AUTH_JWT_SECRET"},
		{[]string{"token"}, []string{"AUTH_JWT_SECRET=" + string(testSecret)}, "-user"},
		{[]string{"token", "-user", "a b"}, []string{"AUTH_JWT_SECRET=" + string(testSecret)}, "user"},
		{[]string{"token", "-user", "ana", "-ttl", "-1s"}, []string{"AUTH_JWT_SECRET=" + string(testSecret)}, "-ttl"},
	} {
		err := Run(context.Background(), c.args, c.env, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: err = %v, want one naming %s", c.args, c.env, err, c.want)
		}
	}
}

// TestPageAuthMarker: without authentication the page keeps its marker off, so it shows no
// token field and offers no subprotocol.
func TestPageAuthMarker(t *testing.T) {
	if !bytes.Contains(pageFor(false), []byte(authMeta)) || !bytes.Contains(pageFor(true), []byte(`content="bearer"`)) {
		t.Fatal("index.html lacks the wsgw-auth marker pageFor rewrites")
	}
}

// TestRunDrainDelay runs the real program with DRAIN_DELAY and cancels it (SIGTERM): from that
// instant /readyz answers 503 and a new upgrade gets HTTP 503 (so a load balancer retries it on
// another replica), while the open socket keeps receiving ticks for DRAIN_DELAY; only then
// does it get its 1001, and Run returns nil.
//
// Fails before DRAIN_DELAY existed ("timed out after 1s waiting for /readyz 503"): Run closed
// its listener at the first instant of the drain, so /readyz and new upgrades met a refused
// connection, and the 1001s went out at once.
func TestRunDrainDelay(t *testing.T) {
	const delay = 1500 * time.Millisecond
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startRun(t, ctx, addr, []string{"GATEWAY_ADDR=" + addr, "TICK_INTERVAL=100ms", "DRAIN_DELAY=" + delay.String(), "SHUTDOWN_TIMEOUT=6s"},
		&bytes.Buffer{})
	c, _ := dialWelcome(t, "ws://"+addr+"/ws", "ana")
	rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer rcancel()

	// The socket's frames, with their arrival times, from a reader of its own.
	type arrival struct {
		at  time.Time
		typ string
		err error
	}
	frames := make(chan arrival, 100)
	go func() {
		for {
			_, b, err := c.Read(rctx)
			if err != nil {
				frames <- arrival{at: time.Now(), err: err}
				return
			}
			f, _ := protocol.Decode(b)
			frames <- arrival{at: time.Now(), typ: f.Type}
		}
	}()

	cancel()
	start := time.Now()
	// Unready and refusing upgrades with 503 at once, during the delay.
	testkit.Eventually(t, time.Second, "/readyz 503", func() bool { return get(addr, "/readyz") == http.StatusServiceUnavailable })
	_, resp, err := websocket.Dial(rctx, "ws://"+addr+"/ws?user=bo", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("upgrade during the drain delay: err %v, status %d, want HTTP 503", err, code)
	}
	if since := time.Since(start); since > delay/2 {
		t.Fatalf("checks took %v, too slow to say anything about the delay", since)
	}

	ticks := 0
	var closed arrival
	for a := range frames {
		if a.err != nil {
			closed = a
			break
		}
		if a.typ == protocol.TypeTime {
			ticks++
		}
	}
	if got := closed.at.Sub(start); got < delay-100*time.Millisecond || got > delay+3*time.Second {
		t.Errorf("1001 came %v after SIGTERM, want about DRAIN_DELAY (%v)", got, delay)
	}
	// 100 ms ticks for 1.5 s: 15 expected; allow a loaded machine to lose many.
	if ticks < 5 {
		t.Errorf("%d ticks during the drain delay, want the socket still served (about 15)", ticks)
	}
	var ce websocket.CloseError
	if !errors.As(closed.err, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("close = %v, want 1001", closed.err)
	}
	if _, ok := protocol.ParseRetry(ce.Reason); !ok {
		t.Fatalf("1001 reason %q, want {\"retry_ms\":N}", ce.Reason)
	}
	runReturned(t, done, "the drain")
}

// TestDrainDelayBoundedByContext: SHUTDOWN_TIMEOUT bounds the whole drain, the delay included;
// a context that ends during the delay ends it.
func TestDrainDelayBoundedByContext(t *testing.T) {
	g := startGateway(t, Options{DrainDelay: time.Hour}, 50*time.Millisecond)
	c, _ := g.dial(t, "ana")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	g.srv.Drain(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Drain took %v with a 300ms context, want it bounded by the context", d)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	var err error
	for err == nil {
		_, _, err = c.Read(rctx)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("socket still open after Drain returned")
	}
}

// get answers the status of GET path on addr, 0 when the request fails.
func get(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUpgradeInOneSegment: through the program's own HTTP server, the 101 and the welcome
// reach the client together, in the first read. Fails without the cork (ConnContext unset or
// corked not called): net/http writes the 101 at the hijack and the welcome follows in a
// second segment, and some of these 50 first reads hold only the 101 (4 runs in 5 failed so
// here).
func TestUpgradeInOneSegment(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := startRun(t, ctx, addr, []string{"GATEWAY_ADDR=" + addr}, io.Discard)
	defer runReturned(t, done, "cancel")
	defer cancel()
	for i := range 50 {
		rc := rawDial(t, "ws://"+addr+"/ws?user=seg", false, 0)
		_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := rc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); !strings.HasPrefix(got, "HTTP/1.1 101") || !strings.Contains(got, `"type":"welcome"`) {
			t.Fatalf("upgrade %d: the first read holds %q, want the 101 and the welcome", i, got)
		}
		_ = rc.Close()
	}
}

// TestHandshakeCorked: corked sets TCP_CORK on the socket a request's context carries and its
// release clears it (a socket left corked holds a refused upgrade's answer for 200 ms).
func TestHandshakeCorked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	rc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}

	release := corked(withSocket(context.Background(), server))
	if on, ok := corkOf(t, rc); ok && !on {
		t.Fatal("socket not corked for the upgrade")
	}
	release()
	if on, ok := corkOf(t, rc); ok && on {
		t.Fatal("socket still corked after the release")
	}
	corked(context.Background())() // a request without a socket in its context: a no-op
}
