package gateway

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/wsgw/wsgw/pkg/admission"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Disconnect reasons, the label of ws_disconnects_total and the "reason" of the log line.
const (
	reasonClosed       = "closed"        // the client closed (1000, 1001, EOF)
	reasonDrained      = "drained"       // the gateway shut down
	reasonSlowConsumer = "slow_consumer" // outbound queue overflowed or a write timed out
	reasonRateLimit    = "rate_limit"    // kept sending 10 s after rate_limited
	reasonTooBig       = "too_big"       // frame over READ_LIMIT (1009)
	reasonPingTimeout  = "ping_timeout"  // no pong in time
	reasonTokenExpired = "token_expired" // authentication on: exp passed without a refresh (4001)
	reasonError        = "error"         // anything else (reset, protocol error)
)

// conn is one WebSocket connection.
//
// Concurrency: exactly one goroutine reads (serve). Frames to send go through send, which
// only appends to a bounded queue under mu and, when no writer is running, starts one; the
// writer goroutine exists only while the queue is non-empty, so an idle connection costs its
// reader goroutine and nothing else. send never blocks, so the tick fan-out never waits for a
// slow socket; a connection whose queue overflows is closed with 1008.
//
// Ticks take a faster path (Send): a quiet connection, with nothing queued and no large frame
// written lately, gets the tick written at once by the hub's goroutine under a short socket
// deadline. That saves a goroutine per socket per tick, which is most of a fan-out's cost and
// a burst of thousands of stacks at once.
type conn struct {
	s     *Server
	ws    *websocket.Conn
	nc    net.Conn // the hijacked socket, for write deadlines
	id    string
	user  string
	start time.Time

	remoteAddr string
	ticket     *admission.Ticket // released when serve returns

	mu        sync.Mutex
	queue     [][]byte
	writing   bool      // a writer (goroutine or inline) owns the socket's write side
	closing   bool      // no more sends; a close is under way
	lastLarge time.Time // when a frame over largeFrame was last written

	ended  atomic.Bool            // the reader has returned: abandon pending work
	reason atomic.Pointer[string] // first close reason wins
	ping   *time.Timer

	// Authentication on: the token's expiry and the timer that closes the connection with 4001
	// then. exp is touched by the reader goroutine only; expiry's func runs on its own.
	exp    time.Time
	expiry *time.Timer

	// Touched by the reader goroutine only.
	limiter      *rate.Limiter // created on the first request: idle sockets don't pay for it
	limitedSince time.Time     // start of the current run of rate-limited requests
}

const (
	// inlineWriteTimeout bounds a tick written from the hub's goroutine. A quiet connection's
	// socket buffer holds at most ticks, so it is full only when the peer is minutes behind
	// (and its pings have failed long before). The deadline is generous because it also
	// covers the time the goroutine may sit descheduled on a loaded machine before the write.
	inlineWriteTimeout = time.Second
	// largeFrame and quietAfterLarge keep the inline path away from a socket that may still be
	// draining a big answer over a slow link.
	largeFrame      = 1024
	quietAfterLarge = 10 * time.Second
)

// Send delivers a tick (hub.Sink): inline when the connection is quiet, else queued.
func (c *conn) Send(frame []byte) {
	c.mu.Lock()
	if c.closing || c.writing || len(c.queue) > 0 || (!c.lastLarge.IsZero() && time.Since(c.lastLarge) < quietAfterLarge) {
		c.mu.Unlock()
		c.send(frame, protocol.TypeTime)
		return
	}
	c.writing = true
	c.mu.Unlock()
	c.s.framesOut[protocol.TypeTime].Inc()

	err := c.write(frame, inlineWriteTimeout)

	c.mu.Lock()
	pending := len(c.queue) > 0 && !c.closing && err == nil
	c.writing = pending
	c.mu.Unlock()
	if err != nil {
		c.writeFailed(err)
		return
	}
	if pending { // frames queued while the socket was ours
		go c.writeLoop()
	}
}

// send queues frame; typ labels the metric. It drops the frame when the connection is closing.
func (c *conn) send(frame []byte, typ string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.s.opts.QueueSize {
		c.mu.Unlock()
		c.kick(reasonSlowConsumer, websocket.StatusPolicyViolation, "slow consumer: outbound queue full")
		return
	}
	c.queue = append(c.queue, frame)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	c.mu.Unlock()
	c.s.framesOut[typ].Inc()
}

// writeLoop drains the queue, each write under WriteTimeout, and exits when it is empty.
func (c *conn) writeLoop() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closing {
			c.queue = nil // let an idle connection hold no buffer
			c.writing = false
			c.mu.Unlock()
			return
		}
		frame := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if len(frame) > largeFrame {
			c.lastLarge = time.Now()
		}
		c.mu.Unlock()

		if err := c.write(frame, c.s.opts.WriteTimeout); err != nil {
			c.writeFailed(err)
			c.mu.Lock()
			c.queue = nil
			c.writing = false
			c.mu.Unlock()
			return
		}
	}
}

// write sends one text frame under a socket deadline. Only the current writer calls it.
func (c *conn) write(frame []byte, timeout time.Duration) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	err := c.ws.Write(context.Background(), websocket.MessageText, frame)
	_ = c.nc.SetWriteDeadline(time.Time{}) // the library's own writes (pongs, close) must not inherit it
	return err
}

// writeFailed handles a failed write: the library has closed the connection already.
func (c *conn) writeFailed(err error) {
	var ne net.Error
	switch {
	case c.ended.Load(): // the connection is already ending; its reason is set
	case errors.As(err, &ne) && ne.Timeout():
		c.kick(reasonSlowConsumer, websocket.StatusPolicyViolation, "slow consumer: write timed out")
	default:
		c.kick(reasonError, websocket.StatusInternalError, "")
	}
}

// kick closes the connection with code and reason, recording why. It returns at once: the
// close handshake (which may wait for the peer) runs in its own goroutine. The reader notices
// and cleans up.
func (c *conn) kick(why string, code websocket.StatusCode, reason string) {
	if !c.setReason(why) {
		return
	}
	if why == reasonSlowConsumer {
		c.s.m.SlowConsumers.Inc()
	}
	c.stopSending()
	go func() {
		// Close waits for the peer's close frame (bounded inside the library); CloseNow after,
		// in case it failed early.
		_ = c.ws.Close(code, reason)
		_ = c.ws.CloseNow()
	}()
}

// stopSending makes every later send a no-op and tells a running writer to stop.
func (c *conn) stopSending() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
}

// setReason records why the connection ends; only the first call wins.
func (c *conn) setReason(why string) bool {
	return c.reason.CompareAndSwap(nil, &why)
}

// schedulePing arms the next application ping, jittered so 10k connections opened at once do
// not all ping in the same instant. A timer, not a goroutine, waits between pings.
func (c *conn) schedulePing() {
	d := c.s.opts.PingInterval
	d += time.Duration(rand.Int64N(int64(d/4) + 1))
	c.ping = time.AfterFunc(d, c.doPing)
}

// pingTimedOut tells a failed Ping of a live connection (no pong, or a stuck write, within
// PingTimeout) from one of a connection that is already closing, e.g. because the client's
// close frame arrived while the ping waited for its pong: the reader records why that one
// ended, and it is not a ping timeout.
func pingTimedOut(err error) bool {
	return err != nil && !errors.Is(err, net.ErrClosed)
}

func (c *conn) doPing() {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.opts.PingTimeout)
	err := c.ws.Ping(ctx)
	cancel()
	if err != nil {
		if pingTimedOut(err) && !c.ended.Load() {
			c.kick(reasonPingTimeout, websocket.StatusPolicyViolation, "ping timeout")
		}
		return
	}
	c.ping.Reset(c.s.opts.PingInterval)
}
