package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/tick"
)

// browserWait bounds each wait for the page. Generous: chromium under -race on two cores is slow.
const browserWait = 20 * time.Second

// browserGateway is one in-process gateway with its own broker and ticker.
type browserGateway struct {
	srv   *Server
	drain sync.Once
}

func newBrowserGateway(t *testing.T, id string, maxRetry time.Duration) *browserGateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := broker.NewMemory()
	srv := NewServer(slog.New(slog.DiscardHandler), metrics.New(), b, presence.NewMemory(),
		Options{ID: id, MaxRetryDelay: maxRetry})
	if err := srv.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		_ = tick.Run(ctx, b.Publish, tick.Options{Interval: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	}()
	g := &browserGateway{srv: srv}
	t.Cleanup(func() {
		g.Drain()
		cancel()
		<-ticked
	})
	return g
}

// Drain drains the gateway once, bounded.
func (g *browserGateway) Drain() {
	g.drain.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.srv.Drain(ctx)
	})
}

// handlerSwitch stands in for a load balancer: every request goes to the current handler.
type handlerSwitch struct{ h atomic.Pointer[http.Handler] }

func (s *handlerSwitch) set(h http.Handler) { s.h.Store(&h) }
func (s *handlerSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// TestBrowser drives index.html in headless Chromium: connect, watch ticks, ask for
// Fibonacci numbers, see an error, then follow a drain to another gateway.
func TestBrowser(t *testing.T) {
	chromium := testkit.Need(t, "chromium", "chromium-browser")
	start := time.Now()

	// Cleanups run last first: the browser quits, the gateways drain, then the listener closes.
	var lb handlerSwitch
	ts := httptest.NewUnstartedServer(&lb)
	conns := &trackingListener{Listener: ts.Listener}
	ts.Listener = conns
	ts.Start()
	t.Cleanup(ts.Close)
	a := newBrowserGateway(t, "gw-test", 300*time.Millisecond)
	b := newBrowserGateway(t, "gw-b", 0)
	lb.set(a.srv.Handler())

	br := startBrowser(t, chromium)
	bctx, run, wait := br.ctx, br.run, br.wait
	seq := func() int64 {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.TextContent(chromedp.ID("seq")))
		if err != nil {
			t.Fatalf("read #seq: %v", err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			t.Fatalf("#seq = %q, not a number", s)
		}
		return v
	}
	const seqExpr = `Number(document.getElementById("seq").textContent)`

	run("open the page and connect",
		chromedp.Navigate(ts.URL),
		chromedp.WaitVisible(chromedp.ID("user")),
		chromedp.SetValue(chromedp.ID("user"), "ana"),
		chromedp.Click(chromedp.ID("connect")),
	)
	wait("a tick", `/^\d+$/.test(document.getElementById("seq").textContent)`)
	wait("no token field without authentication", `document.getElementById("tokenrow").hidden`)
	first := seq()
	wait("a later tick", fmt.Sprintf("%s > %d", seqExpr, first))
	wait("the welcome", `document.getElementById("gateway").textContent.includes("gw-test")`)

	run("ask for F(10)",
		chromedp.SetValue(chromedp.ID("n"), "10"),
		chromedp.Click(chromedp.ID("ask")),
	)
	wait("F(10) = 55", `document.getElementById("answers").textContent.includes("F(10) = 55")`)

	run("ask for F(-1) with Enter",
		chromedp.SetValue(chromedp.ID("n"), ""),
		chromedp.SendKeys(chromedp.ID("n"), "-1"+kb.Enter),
	)
	wait("an invalid_n error", `[...document.querySelectorAll("#answers li.error")].some(li => li.textContent.startsWith("error invalid_n: "))`)

	if u := getUsers(t, ts.URL); !browserHasUser(u, "ana", "gw-test") {
		t.Fatalf("/users = %+v, want ana on gw-test", u)
	}

	// The drain: the "load balancer" sends new connections to B, then A closes its sockets
	// with 1001 and a retry_ms of at most 300 ms; the page must come back through B.
	lb.set(b.srv.Handler())
	a.Drain()
	wait("the reconnect to gw-b", `document.getElementById("gateway").textContent.includes("gw-b")`)
	wait("the status on gw-b", `document.getElementById("status").textContent === "connected to gw-b as ana"`)
	before := seq()
	wait("a tick from gw-b", fmt.Sprintf("%s > %d", seqExpr, before))
	if u := getUsers(t, ts.URL); !browserHasUser(u, "ana", "gw-b") {
		t.Fatalf("/users after the drain = %+v, want ana on gw-b", u)
	}

	// A long result is abbreviated: 40 digits, an ellipsis, 40 digits and the digit count.
	run("ask for F(1000)",
		chromedp.SetValue(chromedp.ID("n"), "1000"),
		chromedp.Click(chromedp.ID("ask")),
	)
	wait("F(1000), abbreviated", `[...document.querySelectorAll("#answers li")].some(li =>
		li.textContent.startsWith("F(1000) = 4346655768693745643568852767504062580256…") &&
		li.textContent.includes("209 digits"))`)

	run("expand F(1000)", chromedp.Click(chromedp.CSS("#answers li:last-child .actions button")))
	wait("all 209 digits", `(() => { const f = document.querySelector("#answers li:last-child .full");
		return f !== null && !f.hidden && f.textContent.length === 209 && f.textContent.endsWith("849228875"); })()`)
	browserScreenshot(bctx, t, "browser.png")

	// An outage: every TCP connection drops (the page sees 1006) and the handshakes fail for a
	// while; the page backs off, then comes back once a gateway answers again.
	lb.set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no gateway available", http.StatusServiceUnavailable)
	}))
	conns.closeAll()
	wait("the abnormal close", `document.getElementById("status").textContent.startsWith("disconnected, reconnecting in ") &&
		document.getElementById("status").textContent.includes("1006")`)
	wait("a failed handshake", `document.getElementById("status").textContent.includes("could not connect (1 failed attempt)")`)
	browserScreenshot(bctx, t, "browser-outage.png")
	// The history holds the two delays, newest first: the backoff doubles, with jitter.
	retries, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](`[...document.querySelectorAll("#events li")]
		.map(li => li.textContent.match(/retrying in ([\d.]+) s$/)).filter(m => m).map(m => Number(m[1]))`))
	if err != nil {
		t.Fatalf("read the retry delays: %v", err)
	}
	if len(retries) < 2 || retries[1] < 1 || retries[1] > 2 || retries[0] < 2 || retries[0] > 4 {
		t.Fatalf("retry delays (newest first) = %v s, want one in [1, 2] then one in [2, 4]", retries)
	}
	lb.set(b.srv.Handler())
	wait("the reconnect after the outage", `document.getElementById("status").textContent === "connected to gw-b as ana"`)

	// Disconnect: a 1000 close, and no reconnect afterwards.
	run("disconnect", chromedp.Click(chromedp.ID("disconnect")))
	wait("the disconnected status", `document.getElementById("status").textContent === "disconnected"`)
	testkit.Eventually(t, browserWait, "gw-b to lose the connection", func() bool { return b.srv.Connections() == 0 })
	time.Sleep(1500 * time.Millisecond) // longer than the shortest backoff
	if n := b.srv.Connections(); n != 0 {
		t.Fatalf("the page reconnected after Disconnect: %d connections", n)
	}

	br.checkExceptions()
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}

// browser is a headless Chromium tab for one test, closed when the test ends (register it
// after the gateways it talks to, so it quits before they drain).
type browser struct {
	t          *testing.T
	ctx        context.Context
	exceptions pageLog
}

func startBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	// The browser lives as long as this context: no timeout on it (see chromedp.Run).
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		_ = chromedp.Cancel(bctx) // close the browser before the gateways drain
		cancelBrowser()
	})

	br := &browser{t: t, ctx: bctx}
	if err := chromedp.Do(bctx); err != nil { // start the browser and open the tab
		t.Fatalf("start chromium: %v", err)
	}
	console := chromedp.Console(bctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() {
				br.exceptions.add(m.String())
			}
		}
	}()

	return br
}

func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v\n%s", what, err, pageState(b.ctx))
	}
}

// wait polls the page until the JavaScript expression expr is true.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	wctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(browserWait))); err != nil {
		b.t.Fatalf("waiting for %s: %v\n%s", what, err, pageState(b.ctx))
	}
}

// checkExceptions fails the test when the page threw.
func (b *browser) checkExceptions() {
	b.t.Helper()
	if e := b.exceptions.all(); len(e) > 0 {
		b.t.Fatalf("uncaught exceptions in the page:\n%s", strings.Join(e, "\n"))
	}
}

// trackingListener remembers every accepted connection, so a test can drop them all, hijacked
// WebSockets included, the way a crashed gateway or a broken network would.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
}

// pageLog collects console messages from chromedp's goroutine.
type pageLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *pageLog) add(m string) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
}

func (l *pageLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// pageState describes the page for a failure message.
func pageState(bctx context.Context) string {
	ctx, cancel := context.WithTimeout(bctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`["status", "gateway", "clock", "seq", "answers"]
		.map(id => id + ": " + JSON.stringify(document.getElementById(id).textContent)).join("\n")`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return s
}

func browserHasUser(u protocol.Users, user, gateway string) bool {
	for _, c := range u.Users {
		if c.User == user && c.Gateway == gateway {
			return true
		}
	}
	return false
}

// browserScreenshot writes a PNG of the whole page to the test's temporary directory and, when
// SCREENSHOT_DIR is set, there too.
func browserScreenshot(bctx context.Context, t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Errorf("screenshot: %v", err)
		} else {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Errorf("screenshot: %v", errors.Join(fmt.Errorf("write %s", p), err))
			continue
		}
		t.Logf("screenshot: %s", p)
	}
}

// TestBrowserToken drives index.html in headless Chromium against a gateway that requires a
// token: the token field appears, the page connects with the token in the wsgw.bearer
// subprotocol, refreshes in-band, and says clearly when the token expired (4001).
func TestBrowserToken(t *testing.T) {
	chromium := testkit.Need(t, "chromium", "chromium-browser")
	g := startAuthGateway(t, auth.Options{Secret: testSecret}, Options{})
	br := startBrowser(t, chromium)

	br.run("open the page", chromedp.Navigate(g.http.URL), chromedp.WaitVisible(chromedp.ID("token")))
	br.wait("the name field hidden (the token names the user)", `document.getElementById("namerow").hidden`)
	br.run("connect without a token", chromedp.Click(chromedp.ID("connect")))
	br.wait("the page to ask for a token", `document.getElementById("status").textContent.includes("requires a token")`)

	br.run("connect with a token",
		chromedp.SetValue(chromedp.ID("token"), token(t, "ana", 2*time.Second)),
		chromedp.Click(chromedp.ID("connect")),
	)
	br.wait("the welcome", `document.getElementById("status").textContent === "connected to gw-test as ana" &&
		document.getElementById("gateway").textContent.includes("token expires")`)
	br.run("ask for F(10)", chromedp.SetValue(chromedp.ID("n"), "10"), chromedp.Click(chromedp.ID("ask")))
	br.wait("F(10) = 55", `document.getElementById("answers").textContent.includes("F(10) = 55")`)
	if u := getUsers(t, g.http.URL); !browserHasUser(u, "ana", "gw-test") {
		t.Fatalf("/users = %+v, want ana", u)
	}

	br.run("refresh with a longer token",
		chromedp.SetValue(chromedp.ID("token"), token(t, "ana", 4*time.Second)),
		chromedp.Click(chromedp.ID("refresh")),
	)
	br.wait("the refresh", `document.getElementById("events").textContent.includes("token refreshed")`)
	br.wait("the 4001 at the refreshed expiry", `document.getElementById("status").textContent.includes("token expired (4001)")`)
	browserScreenshot(br.ctx, t, "browser-token-expired.png")
	testkit.Eventually(t, browserWait, "the gateway to drop the connection", func() bool { return g.srv.Connections() == 0 })
	time.Sleep(1500 * time.Millisecond) // longer than the shortest backoff: no reconnect with a dead token
	if n := g.srv.Connections(); n != 0 {
		t.Fatalf("the page reconnected with an expired token: %d connections", n)
	}
	br.checkExceptions()
}
