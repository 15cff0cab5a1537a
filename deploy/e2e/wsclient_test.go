package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// frame is one server frame as a client received it.
type frame struct {
	protocol.Frame
	At time.Time
}

// wsClient is one WebSocket connection that reads every frame from one goroutine with one
// long-lived context (a read deadline would close the socket) and records them all.
type wsClient struct {
	t       *testing.T
	conn    *websocket.Conn
	welcome protocol.Frame

	mu      sync.Mutex
	frames  []frame // every frame after the welcome
	readErr error   // why reading stopped; nil while the socket is open
	done    chan struct{}
}

// fibRequest is the client → server request of PROTOCOL.md.
type fibRequest struct {
	Type string `json:"type"`
	N    int    `json:"n"`
	ID   string `json:"id,omitempty"`
}

// dial connects to the gateway at addr (host:port) as user and reads the welcome.
func dial(t *testing.T, addr, user string) *wsClient {
	t.Helper()
	addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "ws://")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws?user="+url.QueryEscape(user), nil)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", addr, user, err)
	}
	conn.SetReadLimit(1 << 20)
	_, b, err := conn.Read(ctx) // the socket is discarded on failure, so a deadline is fine here
	if err != nil {
		conn.CloseNow()
		t.Fatalf("read welcome from %s: %v", addr, err)
	}
	w, err := protocol.Decode(b)
	if err != nil || w.Type != protocol.TypeWelcome || w.ConnID == "" || w.User != user || w.Gateway == "" {
		conn.CloseNow()
		t.Fatalf("welcome from %s: %s (%v)", addr, b, err)
	}
	c := &wsClient{t: t, conn: conn, welcome: w, done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.closeNow)
	return c
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		typ, b, err := c.conn.Read(context.Background())
		at := time.Now()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		f, derr := protocol.Decode(b)
		if typ != websocket.MessageText || derr != nil {
			f = protocol.Frame{Type: "invalid", Message: fmt.Sprintf("%v %q %v", typ, b, derr)}
		}
		c.mu.Lock()
		c.frames = append(c.frames, frame{Frame: f, At: at})
		c.mu.Unlock()
	}
}

func (c *wsClient) closeNow() {
	c.conn.CloseNow()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.t.Errorf("client %s: reader still running 5s after CloseNow", c.welcome.ConnID)
	}
}

// snapshot returns a copy of the frames received so far and the read error, if any.
func (c *wsClient) snapshot() ([]frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...), c.readErr
}

// ticks returns the time frames received so far.
func (c *wsClient) ticks() []frame {
	fs, _ := c.snapshot()
	var out []frame
	for _, f := range fs {
		if f.Type == protocol.TypeTime {
			out = append(out, f)
		}
	}
	return out
}

// lastSeq is the seq of the newest tick received, 0 before any.
func (c *wsClient) lastSeq() int64 {
	ts := c.ticks()
	if len(ts) == 0 {
		return 0
	}
	return ts[len(ts)-1].Seq
}

// err is the read error (nil while the socket is open).
func (c *wsClient) err() error {
	_, err := c.snapshot()
	return err
}

// waitClosed waits until the socket has been closed (by the server or the network).
func (c *wsClient) waitClosed(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "socket of "+c.welcome.User+" closed", func() error {
		if c.err() == nil {
			return errors.New("still open")
		}
		return nil
	})
}

// send writes one request under a write deadline.
func (c *wsClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("client %s: write: %v", c.welcome.ConnID, err)
	}
}

// waitTick waits until a tick with seq > after arrives and returns it.
func (c *wsClient) waitTick(timeout time.Duration, after int64) frame {
	c.t.Helper()
	var got frame
	waitFor(c.t, timeout, fmt.Sprintf("client %s: a tick with seq > %d", c.welcome.ConnID, after), func() error {
		for _, f := range c.ticks() {
			if f.Seq > after {
				got = f
				return nil
			}
		}
		if err := c.err(); err != nil {
			return fmt.Errorf("%w: socket closed: %v", errStop, err)
		}
		return errors.New("none yet")
	})
	return got
}

// waitTicks waits until n ticks have arrived in total.
func (c *wsClient) waitTicks(timeout time.Duration, n int) {
	c.t.Helper()
	waitFor(c.t, timeout, fmt.Sprintf("client %s: %d ticks", c.welcome.ConnID, n), func() error {
		if got := len(c.ticks()); got < n {
			if err := c.err(); err != nil {
				return fmt.Errorf("%w: socket closed: %v", errStop, err)
			}
			return fmt.Errorf("%d ticks", got)
		}
		return nil
	})
}

// fibRoundTrip asks F(n) with id and waits for the answer.
func (c *wsClient) fibRoundTrip(timeout time.Duration, n int, id string) {
	c.t.Helper()
	c.send(fibRequest{Type: protocol.TypeFib, N: n, ID: id})
	waitFor(c.t, timeout, "fib answer "+id, func() error {
		fs, err := c.snapshot()
		for _, f := range fs {
			if f.ID == id {
				if f.Type != protocol.TypeFib || f.Result != fib(n).String() {
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
func checkTicks(t *testing.T, c *wsClient, allowGap func(prev, next frame) bool) {
	t.Helper()
	ts := c.ticks()
	for i, f := range ts {
		want := protocol.TickTime(f.Seq, tickInterval).Format(protocol.TimeLayout)
		if f.Time != want {
			t.Errorf("client %s: tick seq %d has time %q, want %q", c.welcome.ConnID, f.Seq, f.Time, want)
		}
		if i == 0 {
			continue
		}
		prev := ts[i-1]
		switch {
		case f.Seq <= prev.Seq:
			t.Errorf("client %s: seq %d after %d (repeat or back)", c.welcome.ConnID, f.Seq, prev.Seq)
		case f.Seq > prev.Seq+1 && (allowGap == nil || !allowGap(prev, f)):
			t.Errorf("client %s: seq jumped %d → %d (received %s → %s)", c.welcome.ConnID, prev.Seq, f.Seq,
				prev.At.Format("15:04:05.000"), f.At.Format("15:04:05.000"))
		}
	}
}

// fib is F(n), computed independently of the gateway.
func fib(n int) *big.Int {
	a, b := big.NewInt(0), big.NewInt(1)
	for range n {
		a.Add(a, b)
		a, b = b, a
	}
	return a
}
