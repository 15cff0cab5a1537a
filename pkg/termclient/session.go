package termclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/wsgw/wsgw/pkg/protocol"
)

const (
	// readLimit is far above the server's largest answer: F(100000) is ~21 KB, but a gateway
	// configured with a larger FIB_MAX_N answers hundreds of KB, and coder/websocket's 32 KiB
	// default would close the connection with 1009 on them.
	readLimit = 64 << 20
	// dialTimeout bounds one connection attempt, handshake included.
	dialTimeout = 10 * time.Second
	// writeTimeout bounds sending one line; a write that fails closes the connection and the
	// reader then reports the drop.
	writeTimeout = 10 * time.Second
	// drainWait is how long stdin's EOF waits for answers to requests already sent.
	drainWait = 2 * time.Second
	// closeWait bounds the closing handshake, which coder/websocket may otherwise stretch to
	// ~10 s against a peer that does not answer.
	closeWait = 2 * time.Second
	// maxQueued bounds the lines kept while disconnected; beyond it they are dropped, loudly.
	maxQueued = 100
)

// session is one client run: a chain of connections to the same URL under the same user.
//
// Concurrency: one goroutine per connection reads the socket (read); the input goroutine
// (input) writes to it; the goroutine that called loop dials, watches and closes. sendMu makes
// "is there a connection, else queue" atomic with the write, so queued lines are flushed before
// any line typed after them.
type session struct {
	url    *url.URL
	tokens *tokens // never nil after Run; an empty token means authentication off
	out    *printer
	next   func() (string, error) // reads one typed line; io.EOF ends the input

	inputDone chan struct{} // closed when the input ended (EOF, Ctrl-C/Ctrl-D, quit)
	answered  chan struct{} // signalled (cap 1) when pending drops to zero

	sendMu    sync.Mutex
	conn      *websocket.Conn // nil while disconnected
	queue     []string        // lines typed while disconnected
	connected bool            // a connection has been made at least once

	mu      sync.Mutex
	user    string // as sent in ?user=; taken from the first welcome when not given
	pending int    // requests sent on the current connection and not yet answered
}

func newSession(u *url.URL, user string, out *printer, next func() (string, error)) *session {
	return &session{
		url:       u,
		user:      user,
		out:       out,
		next:      next,
		inputDone: make(chan struct{}),
		answered:  make(chan struct{}, 1),
	}
}

// loop connects, serves and reconnects until the input ends, ctx is canceled, or the server
// ends the session for good. It returns nil for the first two.
func (s *session) loop(ctx context.Context) error {
	attempt := 0
	var wait time.Duration
	for {
		if wait > 0 && !s.sleep(ctx, wait) {
			return nil
		}
		conn, err := s.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var he *handshakeError
			if (errors.As(err, &he) && he.permanent()) || !s.hasConnected() {
				// Nothing to come back to: a wrong URL or a refused user would fail forever.
				return err
			}
			wait = backoff(attempt)
			attempt++
			s.out.Statusf("connect failed: %v; retrying in %s", rootCause(err), formatDuration(wait))
			continue
		}
		start := time.Now()
		readErr, done := s.serve(ctx, conn)
		if done || ctx.Err() != nil {
			return nil
		}
		ci := classify(readErr)
		if ci.code == protocol.CloseTokenExpired {
			if s.tokens.cmd == "" {
				return errors.New("the token expired (4001): start again with a new token, or give -token-cmd to renew it automatically")
			}
			if _, err := s.tokens.fetch(ctx); err != nil {
				return fmt.Errorf("the token expired (4001) and no new one came: %w", err)
			}
			s.out.Statusf("the token expired (4001); reconnecting with a new one")
			wait = 0
			continue
		}
		if !ci.reconnect() {
			return fmt.Errorf("server closed the connection (%s)", ci)
		}
		if time.Since(start) >= stableAfter {
			attempt = 0
		}
		if d, ok := ci.retryAfter(); ok {
			wait = d // the server spread its clients out; its value is the point, no jitter
		} else {
			wait = backoff(attempt)
			attempt++
		}
		if s.finished() {
			s.out.Statusf("disconnected (%s)", ci)
			return nil
		}
		s.out.Statusf("disconnected (%s); reconnecting in %s", ci, formatDuration(wait))
	}
}

// sleep waits d while disconnected. It reports false when there is no reason to connect again:
// ctx was canceled, or the input ended with nothing queued.
func (s *session) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	inputDone := s.inputDone
	for {
		select {
		case <-ctx.Done():
			return false
		case <-inputDone:
			if s.finished() {
				return false
			}
			inputDone = nil // queued lines still want an answer
		case <-t.C:
			return true
		}
	}
}

// finished reports whether the input has ended and nothing waits to be sent.
func (s *session) finished() bool {
	select {
	case <-s.inputDone:
	default:
		return false
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return len(s.queue) == 0
}

func (s *session) hasConnected() bool {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.connected
}

func (s *session) dial(ctx context.Context) (*websocket.Conn, error) {
	u := *s.url
	s.mu.Lock()
	if s.user != "" {
		q := u.Query()
		q.Set("user", s.user)
		u.RawQuery = q.Encode()
	}
	s.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var opts *websocket.DialOptions
	if s.tokens != nil {
		opts = &websocket.DialOptions{HTTPHeader: s.tokens.header()}
	}
	conn, resp, err := websocket.Dial(dctx, u.String(), opts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(resp.Body) // coder/websocket kept up to 1 KiB of it
			return nil, &handshakeError{status: resp.StatusCode, body: strings.TrimSpace(string(body)), err: err}
		}
		return nil, fmt.Errorf("connect to %s: %w", u.Redacted(), err)
	}
	conn.SetReadLimit(readLimit)
	return conn, nil
}

// serve runs one connection until it ends. done is true when the client chose to end it (input
// finished and answered, or ctx canceled); otherwise readErr says how the server or the network
// ended it. serve returns only after the reader has stopped.
func (s *session) serve(ctx context.Context, conn *websocket.Conn) (readErr error, done bool) {
	// The reader's context outlives ctx so a Ctrl-C can still complete the closing handshake;
	// it is canceled only as a last resort, after closeWait.
	readCtx, cancelRead := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRead()
	readDone := make(chan error, 1)
	go func() { readDone <- s.read(readCtx, conn) }()

	s.attach(ctx, conn)
	defer s.detach()
	if s.tokens != nil {
		defer s.tokens.stop()
	}

	inputDone := s.inputDone
	var drain <-chan time.Time
	for {
		select {
		case err := <-readDone:
			return err, false
		case <-ctx.Done():
		case <-inputDone:
			inputDone = nil
			if s.pendingCount() > 0 {
				t := time.NewTimer(drainWait)
				defer t.Stop()
				drain = t.C
				continue
			}
		case <-s.answered:
			if inputDone != nil || s.pendingCount() > 0 {
				continue
			}
		case <-drain:
		}
		s.close(conn, readDone, cancelRead)
		return nil, true
	}
}

// close ends a connection with 1000, bounded by closeWait, and waits for the reader to stop.
func (s *session) close(conn *websocket.Conn, readDone <-chan error, cancelRead context.CancelFunc) {
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = conn.Close(websocket.StatusNormalClosure, "bye") // the reader reports any failure
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
		_ = conn.CloseNow()
		cancelRead()
		<-closed
	}
	<-readDone
}

// attach makes conn the current connection and sends what was typed while disconnected.
func (s *session) attach(ctx context.Context, conn *websocket.Conn) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	s.pending = 0 // answers to requests sent on an earlier connection are lost with it
	s.mu.Unlock()
	s.conn = conn
	s.connected = true
	queue := s.queue
	s.queue = nil
	for _, line := range queue {
		s.write(ctx, conn, line)
	}
}

func (s *session) detach() {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.conn = nil
}

// read prints every frame of one connection until it fails; it is the connection's only reader.
func (s *session) read(ctx context.Context, conn *websocket.Conn) error {
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			s.out.Statusf("unexpected binary frame (%d bytes)", len(data))
			continue
		}
		f, err := protocol.Decode(data)
		if err != nil {
			s.out.Statusf("unreadable frame: %v: %s", err, truncate(string(data), 200))
			continue
		}
		if f.Type == protocol.TypeWelcome {
			s.mu.Lock()
			if s.user == "" {
				s.user = f.User // a guest keeps its assigned name across reconnects
			}
			s.mu.Unlock()
		}
		if (f.Type == protocol.TypeWelcome || f.Type == protocol.TypeRefreshed) && s.tokens != nil {
			s.tokens.schedule(ctx, conn, f.Exp, s.out)
		}
		s.out.Line(formatFrame(f, data))
		if f.Type == protocol.TypeFib || f.Type == protocol.TypeError {
			s.answer()
		}
	}
}

// answer counts one answer, after it was printed, so an EOF drain never closes before it.
func (s *session) answer() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending > 0 {
		s.pending--
	}
	if s.pending == 0 {
		select {
		case s.answered <- struct{}{}:
		default:
		}
	}
}

func (s *session) pendingCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// input reads typed lines and sends them until the input ends. It runs in its own goroutine and
// may outlive loop while blocked on stdin; that is harmless because the process then exits.
func (s *session) input(ctx context.Context) {
	defer close(s.inputDone)
	for {
		line, err := s.next()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.out.Statusf("read input: %v", err)
			}
			return
		}
		line = strings.TrimSuffix(line, "\r")
		switch strings.TrimSpace(line) {
		case "":
			continue
		case "quit", "exit":
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.send(ctx, line)
	}
}

// send writes one line exactly as typed, or queues it while disconnected.
func (s *session) send(ctx context.Context, line string) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.conn != nil {
		s.write(ctx, s.conn, line)
		return
	}
	if len(s.queue) >= maxQueued {
		s.out.Statusf("not connected; dropped %q", line)
		return
	}
	s.queue = append(s.queue, line)
	if s.connected { // before the first connection, queueing is the normal startup path
		s.out.Statusf("not connected; %q will be sent after reconnecting", line)
	}
}

// write sends line on conn; the caller holds sendMu.
func (s *session) write(ctx context.Context, conn *websocket.Conn, line string) {
	s.mu.Lock()
	s.pending++
	s.mu.Unlock()
	// Not canceled with ctx: coder/websocket closes the connection abruptly when a write's
	// context ends, even just after the frame went out, and a Ctrl-C must close with 1000.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := conn.Write(wctx, websocket.MessageText, []byte(line)); err != nil {
		s.answer() // no answer will come
		if ctx.Err() == nil {
			s.out.Statusf("not sent %q: %v", line, rootCause(err))
		}
	}
}
