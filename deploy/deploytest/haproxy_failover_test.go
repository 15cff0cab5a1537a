package deploytest

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/deploy/lbconfig"
	"github.com/wsgw/wsgw/internal/testkit"
)

// dialThrough opens a WebSocket through HAProxy, says hi, and returns the echo (the backend's
// name prefixed) and how long the handshake took. The socket stays open until the test ends.
func dialThrough(t *testing.T, bind string) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	c, _, err := websocket.Dial(ctx, "ws://"+bind+"/ws", nil)
	took := time.Since(start)
	if err != nil {
		return "", took, err
	}
	t.Cleanup(func() { c.CloseNow() })
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		return "", took, err
	}
	_, msg, err := c.Read(ctx)
	return string(msg), took, err
}

// waitListening polls until HAProxy accepts on bind.
func waitListening(t *testing.T, bind string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", bind, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy not listening on %s: %v", bind, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxyTo starts HAProxy (1000 connections at most) in front of the backends, in that order,
// and returns its bind address once it listens.
func proxyTo(t *testing.T, bin string, backends ...*backend) string {
	t.Helper()
	var servers []string
	for _, b := range backends {
		servers = append(servers, b.srv.Listener.Addr().String())
	}
	bind := freeAddr(t)
	startHAProxy(t, bin, lbconfig.Config{Servers: servers, Bind: bind, MaxConn: 1000})
	waitListening(t, bind)
	return bind
}

// TestHAProxyRetriesDrainingUpgrade: a gateway that has begun draining answers new upgrades
// with 503 while HAProxy's checks still count it as up (DRAIN_DELAY covers those 2 s). HAProxy
// retries such an upgrade on another server, so no client sees the 503.
//
// Fails before `retry-on conn-failure empty-response 503`: about half the upgrades (leastconn
// alternates between the two idle servers) got the draining server's 503.
func TestHAProxyRetriesDrainingUpgrade(t *testing.T) {
	bin := testkit.Need(t, "haproxy")
	a, b := newBackend(t, "a"), newBackend(t, "b")
	b.refuseWS.Store(true) // /readyz still 200: HAProxy keeps it in rotation
	bind := proxyTo(t, bin, a, b)
	for i := range 10 {
		got, _, err := dialThrough(t, bind)
		if err != nil {
			t.Fatalf("upgrade %d through haproxy while b refuses with 503: %v", i, err)
		}
		if got != "a:hi" {
			t.Fatalf("upgrade %d echoed %q, want a:hi", i, got)
		}
	}
}

// holeListener is a loopback listener that can turn into a black hole, as a stopped or killed
// container's address is in Docker (loopback otherwise refuses at once and hides the problem):
// after stop, Accept blocks forever, the kernel's accept queue (backlog 0) fills, and further
// SYNs are dropped.
type holeListener struct {
	net.Listener
	stopped chan struct{} // closed by stop
	closed  chan struct{} // closed by Close: a blocked Accept returns
	once    sync.Once
}

func newHoleListener(t *testing.T) *holeListener {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "hole")
	ln, err := net.FileListener(f) // dups fd
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return &holeListener{Listener: ln, stopped: make(chan struct{}), closed: make(chan struct{})}
}

func (h *holeListener) Accept() (net.Conn, error) {
	select {
	case <-h.stopped:
		<-h.closed // never again: the queue fills
		return nil, net.ErrClosed
	default:
	}
	c, err := h.Listener.Accept()
	select {
	case <-h.stopped:
		if c != nil {
			c.Close()
		}
		<-h.closed
		return nil, net.ErrClosed
	default:
	}
	return c, err
}

func (h *holeListener) Close() error {
	h.once.Do(func() { close(h.closed) })
	return h.Listener.Close()
}

// stop turns the address into a black hole and fills the accept queue until a connect times
// out.
func (h *holeListener) stop(t *testing.T) {
	t.Helper()
	close(h.stopped)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", h.Addr().String(), 300*time.Millisecond)
		if err != nil {
			return // SYNs are dropped now
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Fatal("the accept queue never filled; cannot make a black hole")
		}
	}
}

// TestHAProxyBlackHoledServer: a server whose address drops SYNs (a replica just stopped or
// killed, in Docker) and that HAProxy still counts as up costs a client at most one `timeout
// connect` (1 s) before the retry on another server, and after the first such failure
// `observe layer4 … mark-down` takes it out of rotation, so the next clients wait for nothing.
// The sockets stay open, so leastconn prefers the empty black hole each time it can, as it
// prefers a replica whose clients all just dropped.
//
// Fails before `timeout connect 1s`: the first upgrade took 5.0 s (the old timeout connect).
// Fails with `timeout connect 1s` but without observe layer4: the upgrades kept going to the
// black hole, 1 s each, until two health checks had failed.
func TestHAProxyBlackHoledServer(t *testing.T) {
	bin := testkit.Need(t, "haproxy")
	a := newBackend(t, "a")
	hl := newHoleListener(t)
	h := newBackendOn(t, "h", hl)
	bind := proxyTo(t, bin, h, a)
	// Past HAProxy's start-up state (where one failed check marks a server down): both have
	// passed checks for a while, as replicas of a running stack have.
	time.Sleep(3 * time.Second)
	hl.stop(t)
	var slow []time.Duration
	stuck := 0
	for i := range 6 {
		got, took, err := dialThrough(t, bind)
		if err != nil && stuck == 0 && errors.Is(err, context.DeadlineExceeded) {
			// The black hole is a full accept queue, which a connection whose handshake was
			// already under way when it filled can slip into: HAProxy then sees a server that
			// accepted and never answers (seen once in a CI run). A real dropped SYN does not do
			// that; allow it once, never twice.
			stuck++
			t.Logf("upgrade %d: %v (a connection the emulated black hole let in; allowed once)", i, err)
			continue
		}
		if err != nil || got != "a:hi" {
			t.Fatalf("upgrade %d: %q, %v; want a:hi", i, got, err)
		}
		t.Logf("upgrade %d: %v", i, took.Round(time.Millisecond))
		// One timeout connect (1 s) at most, with a generous margin for a loaded machine.
		if took > 2500*time.Millisecond {
			t.Errorf("upgrade %d took %v, want at most about timeout connect (1s)", i, took)
		}
		if took > 500*time.Millisecond {
			slow = append(slow, took)
		}
	}
	if len(slow) > 1 {
		t.Errorf("%d upgrades waited for the black hole (%v), want at most the first: observe layer4 marks it down", len(slow), slow)
	}
}
