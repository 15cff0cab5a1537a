package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// frame is one server frame as a client received it (welcomes are in conn instead).
type frame struct {
	protocol.Frame
	At   time.Time
	Conn string // the conn_id of the connection it came on
}

// conn is one WebSocket connection a client held: what its welcome said and when it began and
// ended.
type conn struct {
	ID, Gateway string
	Welcomed    time.Time // when the welcome arrived
	Closed      time.Time // zero while open
	CloseCode   websocket.StatusCode
	Retry       time.Duration // the retry_ms of a 1001 close
}

// client is the package's in-process WebSocket client. It reads every frame from one goroutine
// with one long-lived context (a read deadline would close the socket) and records them all.
// With redial it behaves like the terminal client: after a 1001 it waits the retry_ms the
// gateway asked for, after any other drop a short backoff, then connects again.
type client struct {
	t      *testing.T
	user   string
	url    string
	redial bool

	// welcome is the first welcome; written before welcomed is closed, read after.
	welcome protocol.Frame

	mu     sync.Mutex
	ws     *websocket.Conn // the open socket; nil between connections
	conns  []*conn         // every connection, in order; the last one is current
	frames []frame         // every frame but the welcomes, across connections
	dupes  int             // ticks received twice in a row on the same connection
	err    error           // why the last connection (or dial) ended; nil while the first is open

	welcomed    chan struct{} // closed at the first welcome
	welcomeOnce sync.Once
	done        chan struct{}
	cancel      context.CancelFunc
}

// fibRequest is the client → server request of PROTOCOL.md.
type fibRequest struct {
	Type string `json:"type"`
	N    int    `json:"n"`
	ID   string `json:"id,omitempty"`
}

// newClient returns a client of the gateway or load balancer at addr (host:port) as user; start
// runs it.
func newClient(t *testing.T, addr, user string, redial bool) *client {
	addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "ws://")
	return &client{
		t: t, user: user, url: "ws://" + addr + "/ws?user=" + url.QueryEscape(user), redial: redial,
		welcomed: make(chan struct{}), done: make(chan struct{}),
	}
}

// dial connects one client (no redial) to addr as user and waits for its welcome.
func dial(t *testing.T, addr, user string) *client {
	t.Helper()
	c := newClient(t, addr, user, false)
	c.start()
	select {
	case <-c.welcomed:
	case <-c.done:
		t.Fatalf("dial %s as %s: %v", addr, user, c.lastErr())
	case <-time.After(10 * time.Second):
		t.Fatalf("dial %s as %s: no welcome within 10s", addr, user)
	}
	w := c.welcome
	if w.ConnID == "" || w.User != user || w.Gateway == "" {
		t.Fatalf("welcome from %s: %+v", addr, w)
	}
	return c
}

// startClients starts n clients of addr named prefix0..prefixN-1, at most 100 dialing at once,
// and waits until each has its welcome (or timeout passes).
func startClients(t *testing.T, addr, prefix string, n int, redial bool, timeout time.Duration) []*client {
	t.Helper()
	cs := make([]*client, n)
	for i := range cs {
		cs[i] = newClient(t, addr, fmt.Sprintf("%s%d", prefix, i), redial)
	}
	sem := make(chan struct{}, 100)
	deadline := time.After(timeout)
	for _, c := range cs {
		select {
		case sem <- struct{}{}:
		case <-deadline:
			t.Fatalf("clients not connected within %v", timeout)
		}
		c.start()
		go func() {
			select {
			case <-c.welcomed:
			case <-c.done:
			}
			<-sem
		}()
	}
	for _, c := range cs {
		select {
		case <-c.welcomed:
		case <-c.done:
			t.Fatalf("client %s ended before its welcome: %v", c.user, c.lastErr())
		case <-deadline:
			t.Fatalf("client %s not welcomed within %v (last error %v)", c.user, timeout, c.lastErr())
		}
	}
	return cs
}

// start runs the client until close; t.Cleanup closes it.
func (c *client) start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.t.Cleanup(c.close)
	go c.run(ctx)
}

// close drops the socket at once (no close handshake) and stops redialing.
func (c *client) close() {
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.t.Errorf("client %s: reader still running 5s after close", c.user)
	}
}

func (c *client) run(ctx context.Context) {
	defer close(c.done)
	failures := 0
	for ctx.Err() == nil {
		wait, err := c.session(ctx)
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		if !c.redial || ctx.Err() != nil {
			return
		}
		if wait < 0 { // not a drain: back off like the terminal client, from 100 ms
			failures++
			wait = time.Duration(rand.Int64N(int64(min(100*time.Millisecond<<failures, 2*time.Second))))
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session holds one connection until it ends; it returns the retry delay of a 1001 close, or -1.
func (c *client) session(ctx context.Context) (time.Duration, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ws, _, err := websocket.Dial(dctx, c.url, nil)
	cancel()
	if err != nil {
		return -1, fmt.Errorf("dial: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	c.mu.Lock()
	c.ws = ws
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.ws = nil
		c.mu.Unlock()
	}()
	var cur *conn
	lastSeq := int64(-1)
	for {
		typ, data, err := ws.Read(ctx)
		at := time.Now()
		if err != nil {
			retry := time.Duration(-1)
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.StatusGoingAway {
				if d, ok := protocol.ParseRetry(ce.Reason); ok {
					retry = d
				}
			}
			if cur != nil {
				c.mu.Lock()
				cur.Closed, cur.CloseCode = at, websocket.CloseStatus(err)
				cur.Retry = max(retry, 0)
				c.mu.Unlock()
			}
			return retry, fmt.Errorf("read: %w", err)
		}
		f, derr := protocol.Decode(data)
		if typ != websocket.MessageText || derr != nil {
			f = protocol.Frame{Type: "invalid", Message: fmt.Sprintf("%v %q %v", typ, data, derr)}
		}
		if f.Type == protocol.TypeWelcome {
			cur = &conn{ID: f.ConnID, Gateway: f.Gateway, Welcomed: at}
			c.mu.Lock()
			c.conns = append(c.conns, cur)
			c.mu.Unlock()
			c.welcomeOnce.Do(func() {
				c.welcome = f
				close(c.welcomed)
			})
			continue
		}
		c.mu.Lock()
		if f.Type == protocol.TypeTime {
			if f.Seq == lastSeq {
				c.dupes++
			}
			lastSeq = f.Seq
		}
		id := ""
		if cur != nil {
			id = cur.ID
		}
		c.frames = append(c.frames, frame{Frame: f, At: at, Conn: id})
		c.mu.Unlock()
	}
}

// current returns the open connection, or nil between connections.
func (c *client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.conns) == 0 {
		return nil
	}
	last := *c.conns[len(c.conns)-1]
	if !last.Closed.IsZero() {
		return nil
	}
	return &last
}

// history returns a copy of every connection the client held.
func (c *client) history() []conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := make([]conn, len(c.conns))
	for i, p := range c.conns {
		h[i] = *p
	}
	return h
}

// snapshot returns a copy of the frames received so far and the error that ended the last
// connection, if any.
func (c *client) snapshot() ([]frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...), c.err
}

// lastErr is why the last connection (or dial) ended: nil while the first connection is open.
func (c *client) lastErr() error {
	_, err := c.snapshot()
	return err
}

// duplicates counts the ticks received twice in a row on one connection.
func (c *client) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dupes
}

// ticks returns the time frames received so far, in order of arrival.
func (c *client) ticks() []frame {
	fs, _ := c.snapshot()
	var out []frame
	for _, f := range fs {
		if f.Type == protocol.TypeTime {
			out = append(out, f)
		}
	}
	return out
}

// tick returns the tick with seq, if it arrived.
func (c *client) tick(seq int64) (frame, bool) {
	for _, f := range c.ticks() {
		if f.Seq == seq {
			return f, true
		}
	}
	return frame{}, false
}

// lastSeq is the largest seq received, 0 before any tick.
func (c *client) lastSeq() int64 {
	var m int64
	for _, f := range c.ticks() {
		m = max(m, f.Seq)
	}
	return m
}

// waitClosed waits until the socket has been closed (by the server or the network).
func (c *client) waitClosed(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "socket of "+c.user+" closed", func() error {
		if c.lastErr() == nil {
			return errors.New("still open")
		}
		return nil
	})
}

// send writes one request on the open socket under a write deadline.
func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws == nil {
		c.t.Fatalf("client %s: send: no open socket", c.user)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("client %s: write: %v", c.user, err)
	}
}

// waitTick waits until a tick with seq > after arrives and returns it.
func (c *client) waitTick(timeout time.Duration, after int64) frame {
	c.t.Helper()
	var got frame
	waitFor(c.t, timeout, fmt.Sprintf("client %s: a tick with seq > %d", c.user, after), func() error {
		for _, f := range c.ticks() {
			if f.Seq > after {
				got = f
				return nil
			}
		}
		if err := c.lastErr(); err != nil && !c.redial {
			return fmt.Errorf("%w: socket closed: %v", errStop, err)
		}
		return errors.New("none yet")
	})
	return got
}

// waitTicks waits until n ticks have arrived in total.
func (c *client) waitTicks(timeout time.Duration, n int) {
	c.t.Helper()
	waitFor(c.t, timeout, fmt.Sprintf("client %s: %d ticks", c.user, n), func() error {
		if got := len(c.ticks()); got < n {
			if err := c.lastErr(); err != nil && !c.redial {
				return fmt.Errorf("%w: socket closed: %v", errStop, err)
			}
			return fmt.Errorf("%d ticks", got)
		}
		return nil
	})
}

// fibRoundTrip asks F(n) with id and waits for the answer.
func (c *client) fibRoundTrip(timeout time.Duration, n int, id string) {
	c.t.Helper()
	c.send(fibRequest{Type: protocol.TypeFib, N: n, ID: id})
	waitFor(c.t, timeout, "fib answer "+id, func() error {
		fs, err := c.snapshot()
		for _, f := range fs {
			if f.ID == id {
				if f.Type != protocol.TypeFib || f.Result != testkit.Fib(n).String() {
					return fmt.Errorf("%w: answer %+v", errStop, f.Frame)
				}
				return nil
			}
		}
		if err != nil {
			return fmt.Errorf("%w: socket closed: %v", errStop, err)
		}
		return errors.New("no answer yet")
	})
}

// checkTicks checks a client's ticks: each seq greater than the one before (no repeat, never
// back), gaps only where allowed says so, and each time frame standing for its seq.
func checkTicks(t *testing.T, c *client, allowGap func(prev, next frame) bool) {
	t.Helper()
	ts := c.ticks()
	for i, f := range ts {
		want := protocol.TickTime(f.Seq, tickInterval).Format(protocol.TimeLayout)
		if f.Time != want {
			t.Errorf("client %s: tick seq %d has time %q, want %q", c.user, f.Seq, f.Time, want)
		}
		if i == 0 {
			continue
		}
		prev := ts[i-1]
		switch {
		case f.Seq <= prev.Seq:
			t.Errorf("client %s: seq %d after %d (repeat or back)", c.user, f.Seq, prev.Seq)
		case f.Seq > prev.Seq+1 && (allowGap == nil || !allowGap(prev, f)):
			t.Errorf("client %s: seq jumped %d → %d (received %s → %s)", c.user, prev.Seq, f.Seq,
				prev.At.Format("15:04:05.000"), f.At.Format("15:04:05.000"))
		}
	}
}
