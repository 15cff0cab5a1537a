package gateway

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// errOutboxFull is the write error of a connection whose peer left more unsent bytes than
// its outbox may hold.
var errOutboxFull = errors.New("gateway: outbound bytes over the limit (slow consumer)")

// flushChunk is the most a flush writes under one deadline: WriteTimeout bounds the time
// without progress, not the time to send a large backlog over a slow link.
const flushChunk = 64 << 10

// outbox is the write side of a WebSocket's socket, below coder/websocket's frame writer. Its
// Write never blocks: it hands the bytes to the socket without waiting (a non-blocking write),
// and keeps what the socket did not take, in order, for a flusher goroutine that exists only
// while something is kept. So nothing that writes a frame (the writer pool, the reader
// answering a ping, a close) ever waits for a peer, and the library's write lock is held for a
// copy and a system call at most.
//
// The kept bytes are bounded by limit: past it Write fails with errOutboxFull. A flush that
// makes no progress for timeout fails too. Either failure is sticky, closes the socket (the
// reader then ends the connection) and is reported once to onFail.
//
// Write is called with the library's write lock held; flush runs on its own goroutine. Lock
// order: the library's write lock, then mu. onFail runs under mu and must take no lock of the
// connection's.
type outbox struct {
	nc      net.Conn
	rc      syscall.RawConn // nil: no non-blocking writes; every byte goes through the flusher
	timeout time.Duration
	limit   int
	onFail  func(error)

	mu       sync.Mutex
	pending  []byte        // bytes the socket has not taken yet
	inflight int           // bytes the flusher took from pending and is writing
	flushing bool          // a flusher owns the socket's write side: Write only appends
	err      error         // sticky
	wake     chan struct{} // closed at the flusher's next progress; made by a waiting reader

	// The non-blocking write's arguments and results, under mu: one closure per connection,
	// not one per write.
	wbuf  []byte
	wn    int
	werr  error
	write func(fd uintptr) bool
}

func newOutbox(nc net.Conn, timeout time.Duration, limit int) *outbox {
	o := &outbox{nc: nc, timeout: timeout, limit: limit}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			o.rc = rc
			o.write = func(fd uintptr) bool {
				o.wn, o.werr = writeNonblock(fd, o.wbuf)
				return true // one attempt: never wait for the socket to drain
			}
		}
	}
	return o
}

// Write takes all of p or fails. It never waits for the peer.
func (o *outbox) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return 0, o.err
	}
	rest := p
	if !o.flushing && o.rc != nil {
		o.wbuf = p
		err := o.rc.Write(o.write)
		n, werr := o.wn, o.werr
		o.wbuf = nil
		if err == nil {
			err = werr
		}
		if err != nil {
			o.fail(err)
			return n, err
		}
		rest = p[n:]
	}
	if len(rest) == 0 {
		return len(p), nil
	}
	if len(o.pending)+o.inflight+len(rest) > o.limit {
		o.fail(errOutboxFull)
		return 0, errOutboxFull
	}
	o.pending = append(o.pending, rest...)
	if !o.flushing {
		o.flushing = true
		go o.flush()
	}
	return len(p), nil
}

// readPauseAt is how many unsent bytes make the connection's reader wait (waitWritable)
// before it reads more from the peer.
const readPauseAt = 64 << 10

// waitWritable blocks while more than readPauseAt bytes wait for the peer and the outbox has
// not failed. The reader calls it before each read from the socket: a peer that does not read
// what we send cannot make us read (and answer) more of what it sends. That is the
// back-pressure a blocking write gave for free, kept without blocking any writer: a client
// flooding pings and never reading ends up parked here, costing no CPU, until the flusher
// gets through or times out.
func (o *outbox) waitWritable() {
	o.mu.Lock()
	for o.err == nil && len(o.pending)+o.inflight > readPauseAt {
		if o.wake == nil {
			o.wake = make(chan struct{})
		}
		ch := o.wake
		o.mu.Unlock()
		<-ch
		o.mu.Lock()
	}
	o.mu.Unlock()
}

// progressed wakes a waiting reader. Called with mu held.
func (o *outbox) progressed() {
	if o.wake != nil {
		close(o.wake)
		o.wake = nil
	}
}

// buffered is how many bytes wait for the peer.
func (o *outbox) buffered() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending) + o.inflight
}

// flush writes the kept bytes, blocking, each chunk under the write deadline, until none are
// left; then it hands the socket back to Write.
func (o *outbox) flush() {
	for {
		o.mu.Lock()
		if o.err != nil || len(o.pending) == 0 {
			// Later non-blocking writes must not meet this flusher's deadline.
			_ = o.nc.SetWriteDeadline(time.Time{})
			o.pending, o.inflight, o.flushing = nil, 0, false
			o.progressed()
			o.mu.Unlock()
			return
		}
		buf := o.pending
		o.pending, o.inflight = nil, len(buf)
		o.mu.Unlock()

		for len(buf) > 0 {
			_ = o.nc.SetWriteDeadline(time.Now().Add(o.timeout))
			n, err := o.nc.Write(buf[:min(len(buf), flushChunk)])
			buf = buf[n:]
			o.mu.Lock()
			o.inflight = len(buf)
			if err != nil {
				o.fail(err)
			}
			o.progressed()
			o.mu.Unlock()
			if err != nil {
				break
			}
		}
	}
}

// fail records the first error, closes the socket and reports it. Called with mu held.
func (o *outbox) fail(err error) {
	if o.err != nil {
		return
	}
	o.err = err
	_ = o.nc.Close()
	if o.onFail != nil {
		o.onFail(err)
	}
}
