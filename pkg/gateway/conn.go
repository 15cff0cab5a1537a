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
	reasonInvalidUTF8  = "invalid_utf8"  // a text frame that is not UTF-8 (1007)
	reasonError        = "error"         // anything else (reset, protocol error)
)

// conn is one WebSocket connection.
//
// # Concurrency contract
//
// Goroutines that touch a conn:
//   - the reader (Server.read): the only one that reads. Through the library it also writes
//     pongs and the close replies. serve, on the handshake's goroutine, writes the welcome
//     before the conn is in the hub and is the reader until it parks the socket with the
//     Server's readPoller (or starts a reader). A reader that has had nothing to read for
//     IdleRead parks the socket and returns; the poller (on readiness) or socketClosed (when
//     the socket is closed while parked) starts the next one. Exactly one goroutine is the
//     reader at a time: serve's at the start, then the one that moved readState from parked
//     to active. An idle connection has no goroutine.
//   - hub goroutines call Send, under their shard's lock; the Fibonacci pool and the reader
//     call send. Both only append to queue and, if the conn is not scheduled yet, put it on the
//     writers' ready list. They never write to the socket and never wait for it.
//   - a writer of the Server's fixed pool (writers) runs writeQueued for a scheduled conn: it
//     hands the queued frames to the library one by one.
//   - the outbox's flusher, only while the socket has not taken everything written to it.
//   - the ping timer's goroutine (doPing), and a kick's goroutine running the close handshake.
//
// No write waits for the peer: the outbox under the library takes every write at once, keeps
// what the socket could not take (bounded) and lets its flusher write it under WriteTimeout.
// So the library's write lock is only ever held for a copy and a non-blocking system call.
// The one thing that does wait for the peer is the reader: it reads nothing more while over
// 64 KiB wait for the peer (outbox.waitWritable), the back-pressure that keeps a client which
// floods without reading from costing CPU.
//
// State, and who may change it:
//   - queue, scheduled, closing: under mu. scheduled: the conn is on the ready list or a
//     writer is draining it (at most one writer at a time). closing: no more sends; set once.
//   - reason: the first close reason wins (CompareAndSwap); ended: the last reader has
//     finished.
//   - limiter, limitedSince, canPark, token: the reader's own, handed over with
//     readState (the next reader's CompareAndSwap sees everything the last one wrote before
//     its Store).
//
// Ways a connection ends (each records its reason first; the reader then cleans up, in
// Server.finish; if the socket was parked, socketClosed starts a reader to do it):
//   - the peer closes or the socket fails: the reader's Read returns an error (closeReason).
//   - kick (slow consumer, rate limit, ping timeout, drain at handshake): close handshake in a
//     goroutine of its own.
//   - the outbox fails (over its bound, or no progress for WriteTimeout): it closes the socket
//     and outboxFailed records slow_consumer.
//   - the reader refuses a frame (1009 at its header, 1007 for invalid UTF-8): closeWith, on
//     the reader itself.
//   - Drain: close handshakes, bounded in number and time.
//
// Lock order: hub shard lock → mu. writers.mu is taken after mu is released, never under it.
// The library's write lock → outbox.mu (outbox.onFail takes no lock of the conn's). No lock is
// held across a blocking call.
type conn struct {
	s     *Server
	ws    *websocket.Conn
	out   *outbox
	id    string
	user  string
	start time.Time

	remoteAddr string
	ticket     *admission.Ticket // released by finish

	// The reader's side. wc is the socket under the library. readState says who reads: a
	// reader goroutine (readerActive, the start) or nobody, the socket waiting in the poller
	// (readerParked); whoever moves it from parked to active is the next reader.
	wc            *wsConn
	readState     atomic.Int32
	joined        bool   // in presence (set by serve before the first read)
	removeFromHub func() // set by serve before the first read
	// The reader's own, handed from one reader to the next through readState.
	canPark bool   // the poller may take the socket (Linux, a real socket, no epoll failure yet)
	token   uint64 // the socket's key in the poller; 0: not in the epoll set yet

	mu        sync.Mutex
	queue     [][]byte  // frames not yet handed to the library
	one       [1][]byte // queue's storage while it holds one frame (the usual tick)
	scheduled bool
	closing   bool

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

// outboxPerFrame sizes the outbox: QueueSize frames of up to this many bytes may wait for a
// slow peer before it is a slow consumer (1 MiB by default). Past that, writeQueued kicks it
// with 1008; outboxSlack more is room for that close frame and for pongs, after which the
// outbox itself gives up.
const (
	outboxPerFrame = 16 << 10
	outboxSlack    = 64 << 10
)

// Send queues a tick (hub.Sink). It never blocks. The writers start on it when the hub is
// done with the tick (Server.Start calls writers.wake).
func (c *conn) Send(frame []byte) { c.enqueue(frame, protocol.TypeTime, false) }

// send queues frame for the writers and wakes them; typ labels the metric.
func (c *conn) send(frame []byte, typ string) { c.enqueue(frame, typ, true) }

// enqueue queues frame. It drops the frame when the connection is closing, and kicks the
// connection with 1008 when QueueSize frames are already waiting.
func (c *conn) enqueue(frame []byte, typ string, wake bool) {
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
	if len(c.queue) == 0 {
		c.queue = c.one[:0]
	}
	c.queue = append(c.queue, frame)
	schedule := !c.scheduled
	c.scheduled = true
	c.mu.Unlock()
	if schedule {
		c.s.writers.schedule(c, wake)
	}
	c.s.framesOut[typ].Inc()
}

// writeQueued hands every queued frame to the library, on a writer goroutine, and returns
// when the queue is empty. A peer that has left more than its share unread is kicked.
func (c *conn) writeQueued() {
	for {
		c.mu.Lock()
		if c.closing || len(c.queue) == 0 {
			c.one[0] = nil
			c.queue = nil
			c.scheduled = false
			c.mu.Unlock()
			return
		}
		frame := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.mu.Unlock()

		if c.out.buffered() > c.s.opts.QueueSize*outboxPerFrame {
			c.kick(reasonSlowConsumer, websocket.StatusPolicyViolation, "slow consumer: outbound queue full")
			continue // closing now: the loop ends
		}
		if err := c.write(frame); err != nil {
			c.writeFailed(err)
			c.stopSending()
		}
	}
}

// write hands one text frame to the library; it returns at once (see outbox).
func (c *conn) write(frame []byte) error {
	return c.ws.Write(context.Background(), websocket.MessageText, frame)
}

// writeFailed handles a failed write: the outbox has closed the socket, or it was closed.
func (c *conn) writeFailed(err error) {
	if c.ended.Load() || errors.Is(err, errOutboxFull) { // the reason is set already
		return
	}
	c.kick(reasonError, websocket.StatusInternalError, "")
}

// outboxFailed is the outbox's onFail: a peer that stopped taking bytes is a slow consumer.
// Runs under the outbox's lock, after it closed the socket: no lock of the conn's here.
func (c *conn) outboxFailed(err error) {
	var ne net.Error
	if (errors.Is(err, errOutboxFull) || errors.As(err, &ne) && ne.Timeout()) && c.setReason(reasonSlowConsumer) {
		c.s.m.SlowConsumers.Inc()
	}
	c.socketClosed()
}

// Reader states (conn.readState).
const (
	readerActive int32 = iota // a goroutine is the reader
	readerParked              // none: the socket waits in the poller
)

// park hands the socket to the poller. It reports whether the caller has stopped being the
// reader and must return; false: it stays the reader and reads the blocking way from now on
// (the socket is closing, or epoll refused it).
func (c *conn) park() bool {
	p := c.s.poller
	// Everything the next reader reads is written before the Store that hands it over.
	add := c.token == 0 // the first park adds the socket to the epoll set
	p.register(c)
	c.readState.Store(readerParked)
	if p.arm(c, add) {
		return true
	}
	if !c.readState.CompareAndSwap(readerParked, readerActive) {
		return true // socketClosed took over
	}
	c.canPark = false
	return false
}

// wake starts a reader if the socket is parked: the poller calls it when the socket is
// readable, socketClosed when it was closed (a closed socket leaves the epoll set silently).
func (c *conn) wake() {
	if c.readState.CompareAndSwap(readerParked, readerActive) {
		go c.s.read(c)
	}
}

// socketClosed is called after the socket is closed, by whoever closed it.
func (c *conn) socketClosed() { c.wake() }

// closeWith ends the connection from the reader: it records why, stops sending and runs the
// close handshake on the reader's goroutine (the library waits up to 5 s for the peer's
// close frame; nothing else is reading meanwhile).
func (c *conn) closeWith(why string, code websocket.StatusCode, reason string) {
	if !c.setReason(why) {
		return
	}
	c.stopSending()
	_ = c.ws.Close(code, reason)
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
