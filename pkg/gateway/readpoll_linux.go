package gateway

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// readPoller watches the sockets of idle connections so that they need no goroutine: a
// connection's reader that finds nothing more to read parks its socket here and returns, and
// the poller starts a new reader when the socket is readable again (data, a pong, EOF, an
// error). An idle socket then costs no stack at all, where a reader blocked inside the library
// kept one of 8 KiB: about half of an idle socket's memory.
//
// It is one epoll instance whose descriptor sits in the Go runtime's own netpoller, so waiting
// for events parks one goroutine, not a thread. Each socket is registered one-shot: one event
// starts one reader, and only that reader re-arms it (park), so two readers never race.
//
// Concurrency: register and arm are called by a connection's reader, forget by its last one;
// run is the poller's one goroutine. Who reads is settled by the conn's readState (see conn), never here.
type readPoller struct {
	epfd int
	file *os.File // epfd, in the runtime's netpoller; Close stops run
	rc   syscall.RawConn

	mu    sync.Mutex
	conns map[uint64]*conn // token → connection, while registered
	next  uint64
}

// newReadPoller returns nil when epoll is not available: connections then keep a reader each.
func newReadPoller() (*readPoller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("gateway: epoll fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("gateway: epoll fd: %w", err)
	}
	p := &readPoller{epfd: fd, file: f, rc: rc, conns: make(map[uint64]*conn)}
	go p.run()
	return p, nil
}

// register gives c a token, once. Called by c's reader.
func (p *readPoller) register(c *conn) {
	if c.token != 0 {
		return
	}
	p.mu.Lock()
	p.next++
	c.token = p.next
	p.conns[c.token] = c
	p.mu.Unlock()
}

// arm registers c's socket (add) or re-arms it for one readiness event. It reports false
// when that failed: the socket is closing, or epoll refused it.
func (p *readPoller) arm(c *conn, add bool) bool {
	op := syscall.EPOLL_CTL_MOD
	if add {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	ev.Fd, ev.Pad = int32(uint32(c.token)), int32(uint32(c.token>>32))
	var cerr error
	// Control holds the socket open meanwhile: its descriptor cannot be closed and reused by
	// another connection under our epoll_ctl.
	err := c.out.rc.Control(func(fd uintptr) { cerr = syscall.EpollCtl(p.epfd, op, int(fd), &ev) })
	return err == nil && cerr == nil
}

// forget drops c's token. Its socket leaves the epoll set by itself when it is closed.
func (p *readPoller) forget(c *conn) {
	if c.token == 0 {
		return
	}
	p.mu.Lock()
	delete(p.conns, c.token)
	p.mu.Unlock()
}

// close stops run. Call it once no connection is left.
func (p *readPoller) close() { _ = p.file.Close() }

// run waits for events and starts a reader for each ready connection, until close.
func (p *readPoller) run() {
	events := make([]syscall.EpollEvent, 256)
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		n, werr = syscall.EpollWait(int(fd), events, 0)
		// Nothing ready: let the runtime park this goroutine until the epoll fd is readable.
		return !(n == 0 && werr == nil || errors.Is(werr, syscall.EINTR) || errors.Is(werr, syscall.EAGAIN))
	}
	for {
		if err := p.rc.Read(wait); err != nil {
			return // closed
		}
		if werr != nil {
			return
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			c := p.conns[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]
			if c != nil {
				c.wake()
			}
		}
		p.mu.Unlock()
	}
}
