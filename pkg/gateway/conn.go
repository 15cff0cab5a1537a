package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

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
	reasonError        = "error"         // anything else (reset, protocol error)
)

// conn is one WebSocket connection.
//
// Concurrency: exactly one goroutine reads (serve). Frames to send go through send, which
// only appends to a bounded queue under mu and, when no writer is running, starts one; the
// writer goroutine exists only while the queue is non-empty, so an idle connection costs its
// reader goroutine and nothing else. send never blocks, so the tick fan-out never waits for a
// socket; a connection whose queue overflows is closed with 1008.
type conn struct {
	s      *Server
	ws     *websocket.Conn
	ctx    context.Context // canceled when the connection ends; derived from the server context
	cancel context.CancelFunc
	id     string
	user   string
	start  time.Time
	log    *slog.Logger

	remoteAddr string

	mu      sync.Mutex
	queue   [][]byte
	writing bool
	closing bool // no more sends; a close is under way

	reason atomic.Pointer[string] // first close reason wins
	ping   *time.Timer

	// Touched by the reader goroutine only.
	limiter      *rate.Limiter // created on the first request: idle sockets don't pay for it
	limitedSince time.Time     // start of the current run of rate-limited requests
}

// Send queues a tick (hub.Sink).
func (c *conn) Send(frame []byte) { c.send(frame, protocol.TypeTime) }

// send queues frame; typ labels the metric. It returns false when the connection is closing.
func (c *conn) send(frame []byte, typ string) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.s.opts.QueueSize {
		c.mu.Unlock()
		c.s.m.SlowConsumers.Inc()
		c.kick(reasonSlowConsumer, websocket.StatusPolicyViolation, "slow consumer: outbound queue full")
		return false
	}
	c.queue = append(c.queue, frame)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	c.mu.Unlock()
	c.s.m.FramesOut.WithLabelValues(typ).Inc()
	return true
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
		c.mu.Unlock()

		ctx, cancel := context.WithTimeout(c.ctx, c.s.opts.WriteTimeout)
		err := c.ws.Write(ctx, websocket.MessageText, frame)
		cancel()
		if err != nil {
			switch {
			case c.ctx.Err() != nil: // the connection is already ending; its reason is set
			case errors.Is(err, context.DeadlineExceeded):
				c.s.m.SlowConsumers.Inc()
				c.kick(reasonSlowConsumer, websocket.StatusPolicyViolation, "slow consumer: write timed out")
			default:
				c.kick(reasonError, websocket.StatusInternalError, "")
			}
			c.mu.Lock()
			c.queue = nil
			c.writing = false
			c.mu.Unlock()
			return
		}
	}
}

// kick closes the connection with code and reason, recording why. It returns at once: the
// close handshake (which may wait for the peer) runs in its own goroutine. The reader notices
// and cleans up.
func (c *conn) kick(why string, code websocket.StatusCode, reason string) {
	if !c.setReason(why) {
		return
	}
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	go func() {
		// Close waits for the peer's close frame (bounded inside the library); CloseNow after,
		// in case it failed early.
		_ = c.ws.Close(code, reason)
		_ = c.ws.CloseNow()
	}()
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

func (c *conn) doPing() {
	ctx, cancel := context.WithTimeout(c.ctx, c.s.opts.PingTimeout)
	err := c.ws.Ping(ctx)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			c.kick(reasonPingTimeout, websocket.StatusPolicyViolation, "ping timeout")
		}
		return
	}
	c.ping.Reset(c.s.opts.PingInterval)
}
