package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/tick"
)

// testGateway is a standalone gateway on a real socket with its own in-process ticker.
type testGateway struct {
	srv    *Server
	m      *metrics.Metrics
	http   *httptest.Server
	url    string // ws://…/ws
	broker *broker.Memory

	pubMu     sync.Mutex
	published map[int64]time.Time // seq → when the test ticker published it
}

// publishedAt returns when seq was published (zero if it was not).
func (g *testGateway) publishedAt(seq int64) time.Time {
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	return g.published[seq]
}

// startGateway starts a gateway; interval 0 means no ticker (the test publishes itself).
// setup functions run on the HTTP server before it starts.
func startGateway(t testing.TB, opts Options, interval time.Duration, setup ...func(*httptest.Server)) *testGateway {
	t.Helper()
	m := metrics.New()
	b := broker.NewMemory()
	if opts.ID == "" {
		opts.ID = "gw-test"
	}
	srv := NewServer(slog.New(slog.DiscardHandler), m, b, presence.NewMemory(), opts)
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	for _, f := range setup {
		f(hs)
	}
	hs.Start()
	g := &testGateway{srv: srv, m: m, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", broker: b, published: map[int64]time.Time{}}
	publish := func(ctx context.Context, frame []byte) error {
		seq, _ := protocol.TickSeqOf(frame)
		g.pubMu.Lock()
		g.published[seq] = time.Now()
		g.pubMu.Unlock()
		return b.Publish(ctx, frame)
	}
	tickDone := make(chan struct{})
	if interval > 0 {
		go func() {
			defer close(tickDone)
			_ = tick.Run(ctx, publish, tick.Options{Interval: interval, Logger: slog.New(slog.DiscardHandler)})
		}()
	} else {
		close(tickDone)
	}
	t.Cleanup(func() {
		cancel()
		<-tickDone
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		srv.draining.Store(true)
		hs.Close()
		srv.Drain(dctx)
	})
	return g
}

// serve serves srv's handler on a real socket; when the test ends the listener closes and srv
// drains. Cleanups registered before serve run after the drain.
func serve(t testing.TB, srv *Server) *httptest.Server {
	t.Helper()
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Drain(ctx) // also stops the worker pool NewServer started
	})
	return hs
}

// dial connects as user (empty: no user parameter) and returns the connection and its welcome.
func (g *testGateway) dial(t testing.TB, user string) (*websocket.Conn, protocol.Frame) {
	t.Helper()
	return dialWelcome(t, g.url, user)
}

// dialWelcome connects to the WebSocket URL u as user ("": a guest) and reads the welcome; the
// connection is closed when the test ends.
func dialWelcome(t testing.TB, u, user string) (*websocket.Conn, protocol.Frame) {
	t.Helper()
	if user != "" {
		u += "?user=" + user
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	c.SetReadLimit(1 << 24)
	t.Cleanup(func() { c.CloseNow() })
	w := readFrame(t, c)
	if w.Type != protocol.TypeWelcome {
		t.Fatalf("first frame = %+v, want welcome", w)
	}
	return c, w
}

func readFrame(t testing.TB, c *websocket.Conn) protocol.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a %v frame, want text", typ)
	}
	f, err := protocol.Decode(b)
	if err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return f
}

// readReply reads frames until one that is not a tick.
func readReply(t testing.TB, c *websocket.Conn) protocol.Frame {
	t.Helper()
	for {
		if f := readFrame(t, c); f.Type != protocol.TypeTime {
			return f
		}
	}
}

func write(t testing.TB, c *websocket.Conn, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// smallBuffers makes the server's accepted sockets use a 16 KiB send buffer, so a client that
// stops reading fills it after a few frames instead of megabytes. Pass it to startGateway.
func smallBuffers(hs *httptest.Server) {
	hs.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetWriteBuffer(16 << 10)
			}
		}
	}
}

// dialSmallBuffer dials with a 16 KiB receive buffer and never reads beyond the welcome.
func (g *testGateway) dialSmallBuffer(t testing.TB, user string) *websocket.Conn {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		})
		return errors.Join(err, serr)
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, g.url+"?user="+user, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	readFrame(t, c) // welcome
	return c
}

// readyz GETs g's /readyz: its status and body.
func readyz(t *testing.T, g *testGateway) (int, string) {
	t.Helper()
	resp, err := http.Get(g.http.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
