package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// conn is one WebSocket connection a client held: what its welcome said and when it began and
// ended.
type conn struct {
	ID, Gateway string
	Welcomed    time.Time // when the welcome arrived
	Closed      time.Time // zero while open
	CloseCode   websocket.StatusCode
	Retry       time.Duration // the retry_ms of a 1001 close
}

// client is an in-process WebSocket client. With redial it behaves like the terminal client:
// after a 1001 it waits the retry_ms the gateway asked for, after any other drop a short backoff,
// then connects again through the load balancer.
type client struct {
	user   string
	url    string
	redial bool

	mu    sync.Mutex
	conns []*conn          // every connection, in order; the last one is current
	ticks map[int64]string // seq → time of every tick received, across connections
	dupes int              // ticks received twice on the same connection
	err   error            // last dial or read error

	welcomed    chan struct{} // closed at the first welcome
	welcomeOnce sync.Once
	done        chan struct{}
	cancel      context.CancelFunc
}

func newClient(lb, user string, redial bool) *client {
	return &client{
		user: user, url: "ws://" + lb + "/ws?user=" + user, redial: redial,
		ticks: map[int64]string{}, welcomed: make(chan struct{}), done: make(chan struct{}),
	}
}

// start runs the client until stop; t.Cleanup stops it.
func (c *client) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	t.Cleanup(c.stop)
	go c.run(ctx)
}

func (c *client) stop() {
	c.cancel()
	<-c.done
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
	var cur *conn
	lastSeq := int64(-1)
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			retry := time.Duration(-1)
			code := websocket.CloseStatus(err)
			if cur != nil {
				c.mu.Lock()
				cur.Closed, cur.CloseCode = time.Now(), code
				c.mu.Unlock()
			}
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.StatusGoingAway {
				if d, ok := protocol.ParseRetry(ce.Reason); ok {
					retry = d
					if cur != nil {
						c.mu.Lock()
						cur.Retry = d
						c.mu.Unlock()
					}
				}
			}
			return retry, fmt.Errorf("read: %w", err)
		}
		f, err := protocol.Decode(data)
		if err != nil {
			return -1, err
		}
		switch f.Type {
		case protocol.TypeWelcome:
			cur = &conn{ID: f.ConnID, Gateway: f.Gateway, Welcomed: time.Now()}
			c.mu.Lock()
			c.conns = append(c.conns, cur)
			c.mu.Unlock()
			c.welcomeOnce.Do(func() { close(c.welcomed) })
		case protocol.TypeTime:
			c.mu.Lock()
			if f.Seq == lastSeq {
				c.dupes++
			}
			lastSeq = f.Seq
			c.ticks[f.Seq] = f.Time
			c.mu.Unlock()
		}
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

func (c *client) lastErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// startClients starts n clients named prefix0..prefixN-1, at most 100 dialing at once, and
// waits until each has its welcome (or timeout passes).
func startClients(t *testing.T, lb, prefix string, n int, redial bool, timeout time.Duration) []*client {
	t.Helper()
	cs := make([]*client, n)
	for i := range cs {
		cs[i] = newClient(lb, fmt.Sprintf("%s%d", prefix, i), redial)
	}
	err := waitWelcomes(t, cs, 100, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// waitWelcomes starts each client and waits for its first welcome, inFlight at a time.
func waitWelcomes(t *testing.T, cs []*client, inFlight int, timeout time.Duration) error {
	sem := make(chan struct{}, inFlight)
	deadline := time.After(timeout)
	for _, c := range cs {
		select {
		case sem <- struct{}{}:
		case <-deadline:
			return fmt.Errorf("clients not connected within %v", timeout)
		}
		c.start(t)
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
			return fmt.Errorf("client %s ended before its welcome: %v", c.user, c.lastErr())
		case <-deadline:
			return fmt.Errorf("client %s not welcomed within %v (last error %v)", c.user, timeout, c.lastErr())
		}
	}
	return nil
}

// presence reads ws:presence, decoding every value as protocol.Presence.
func presence(ctx context.Context, rc *redis.Client) (map[string]protocol.Presence, error) {
	raw, err := rc.HGetAll(ctx, "ws:presence").Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]protocol.Presence, len(raw))
	for id, v := range raw {
		var p protocol.Presence
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return nil, fmt.Errorf("presence %s: %w: %q", id, err, v)
		}
		out[id] = p
	}
	return out, nil
}

// events records the messages of ws:presence:events from the moment it is subscribed.
type events struct {
	mu   sync.Mutex
	list []protocol.PresenceEvent
	ps   *redis.PubSub
	done chan struct{}
}

func subscribeEvents(t *testing.T, rc *redis.Client) *events {
	t.Helper()
	ctx := context.Background()
	e := &events{ps: rc.Subscribe(ctx, "ws:presence:events"), done: make(chan struct{})}
	if _, err := e.ps.Receive(ctx); err != nil { // wait for the confirmation
		t.Fatal(err)
	}
	go func() {
		defer close(e.done)
		for m := range e.ps.Channel() {
			var ev protocol.PresenceEvent
			if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
				continue
			}
			e.mu.Lock()
			e.list = append(e.list, ev)
			e.mu.Unlock()
		}
	}()
	t.Cleanup(func() { e.ps.Close(); <-e.done })
	return e
}

// leaves counts the leave events per conn id, and returns the reasons seen for each.
func (e *events) leaves() map[string][]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[string][]string{}
	for _, ev := range e.list {
		if ev.Type == protocol.EventLeave {
			m[ev.ConnID] = append(m[ev.ConnID], ev.Reason)
		}
	}
	return m
}

// checkLeaves asserts that each of conns got exactly one leave, with reason want, within
// timeout.
func (e *events) checkLeaves(t *testing.T, conns []string, want string, timeout time.Duration) {
	t.Helper()
	err := waitFor(timeout, 50*time.Millisecond, func() error {
		l := e.leaves()
		for _, id := range conns {
			if len(l[id]) == 0 {
				return fmt.Errorf("no leave event for %s", id)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	l := e.leaves()
	for _, id := range conns {
		if rs := l[id]; len(rs) != 1 || rs[0] != want {
			t.Errorf("leave events for %s: reasons %v, want exactly one %q", id, rs, want)
		}
	}
}
