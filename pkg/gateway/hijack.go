package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Sizes of the buffers a WebSocket keeps for its whole life. net/http hands a hijacked
// connection a 4 KiB reader and a 4 KiB writer: 8 KiB per idle socket, a quarter of its cost.
// Client frames are small (READ_LIMIT defaults to 4 KiB) and server frames are either small
// (ticks, errors) or large enough that bufio writes them straight to the socket, so 512 bytes
// each lose nothing.
const (
	connReadBuf  = 512
	connWriteBuf = 512
)

// hijackWriter wraps the ResponseWriter that websocket.Accept hijacks, to put the gateway's
// own layers under the library: small buffers; on the read side the bytes the client sent
// with its handshake, then the socket, through a frameGuard (1009 at the header); on the
// write side an outbox (a write never waits for the peer). After Accept, conn is the socket
// the library got, and conn.out its outbox.
type hijackWriter struct {
	http.ResponseWriter
	readLimit    int64         // READ_LIMIT, for the frame guard
	writeTimeout time.Duration // the outbox's flush deadline
	outboxLimit  int           // bytes the outbox may keep
	idleRead     time.Duration // how long a read at a frame boundary waits before yielding

	conn *wsConn // set by Hijack
}

// Unwrap lets http.ResponseController and coder/websocket reach the original writer's other
// interfaces.
func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// wsConn is the net.Conn the library gets: reads wait while the peer leaves too much unread
// (outbox.waitWritable) and come through the frame guard; Close and the rest go to the
// socket. The library writes only through the bufio.Writer Hijack returns.
//
// Reads also let the connection's reader give up its goroutine (see readPoller). The library
// has no "nothing to read" answer: its Read waits, handling pings and pongs, until a data
// message arrives. So while the reader has armed yield, a read at a frame boundary (outside a
// fragmented message) that has waited idleRead for a byte hands the library a made-up frame
// instead: an empty, masked, final binary frame, which ends its Read at once; the reader sees
// yield fired and parks the socket. The frame goes nowhere else, and the stream the library
// parses stays valid: it sits between two whole frames.
//
// Read is called by whoever holds the library's read lock, one at a time.
type wsConn struct {
	net.Conn
	src   source
	guard frameGuard
	out   *outbox
	yield atomic.Int32 // yieldOff, yieldArmed (by the reader), yieldFired (by Read)
	idle  time.Duration

	onClose func() // after the socket is closed; set before the reader starts
}

const (
	yieldOff = iota
	yieldArmed
	yieldFired
)

// yieldFrame is the made-up frame: FIN, binary, masked (as every client frame), no payload.
var yieldFrame = [6]byte{0x82, 0x80}

func (c *wsConn) Read(p []byte) (int, error) {
	c.out.waitWritable()
	if c.yield.Load() == yieldArmed && c.guard.between() && len(p) >= len(yieldFrame) {
		c.src.wait = c.idle
		n, err := c.guard.Read(p)
		c.src.wait = 0
		if err != errWouldBlock {
			return n, err
		}
		if c.yield.CompareAndSwap(yieldArmed, yieldFired) {
			return copy(p, yieldFrame[:]), nil
		}
	}
	return c.guard.Read(p)
}

// Close closes the socket and tells the connection, whose reader may be parked.
func (c *wsConn) Close() error {
	err := c.Conn.Close()
	if c.onClose != nil {
		c.onClose()
	}
	return err
}

// errWouldBlock is a non-blocking read's "nothing to read now".
var errWouldBlock = errors.New("gateway: read would block")

// source is what the frame guard reads: first the bytes the client sent right behind its
// handshake, then the socket; waiting no longer than wait when it is set.
type source struct {
	pre  []byte
	nc   net.Conn
	rc   syscall.RawConn // nil: every read waits as long as it takes (wait is never set then)
	wait time.Duration

	// The bounded read's arguments and results: one closure per connection.
	buf  []byte
	n    int
	err  error
	read func(fd uintptr) bool
}

func (s *source) Read(p []byte) (int, error) {
	if len(s.pre) > 0 {
		n := copy(p, s.pre)
		s.pre = s.pre[n:]
		return n, nil
	}
	if s.wait <= 0 || s.rc == nil {
		return s.nc.Read(p)
	}
	// A deadline, not a timer of our own: the runtime's netpoller wakes the read either way,
	// with no more system calls than a plain read (the failed attempt and the one that reads).
	if err := s.nc.SetReadDeadline(time.Now().Add(s.wait)); err != nil {
		return 0, err
	}
	if s.read == nil {
		s.read = func(fd uintptr) bool {
			s.n, s.err = readNonblock(fd, s.buf)
			return s.err != errWouldBlock // nothing yet: let the netpoller wait
		}
	}
	s.buf = p
	err := s.rc.Read(s.read)
	s.buf = nil
	_ = s.nc.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errWouldBlock
	}
	if err != nil {
		return 0, err
	}
	return s.n, s.err
}

// Hijack hijacks the underlying connection and returns it wrapped as described above.
func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("gateway: response writer cannot hijack")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent right after its handshake are already in net/http's reader: they
	// stay first in line. (The library re-reads what is buffered in the reader returned
	// here, which is nothing, and resets that reader onto the returned conn; so they must be
	// behind the conn, not in a reader the library replaces.)
	out := newOutbox(nc, h.writeTimeout, h.outboxLimit)
	wc := &wsConn{Conn: nc, src: source{nc: nc, rc: out.rc}, out: out, idle: h.idleRead}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		wc.src.pre = bytes.Clone(b)
	}
	wc.guard = frameGuard{r: &wc.src, limit: h.readLimit}
	h.conn = wc
	return wc, bufio.NewReadWriter(bufio.NewReaderSize(wc, connReadBuf), bufio.NewWriterSize(out, connWriteBuf)), nil
}
