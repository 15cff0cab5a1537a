package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/fib"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// handleWS upgrades /ws, registers the connection (serve) and hands its socket to the read
// poller, then returns. Returning lets net/http's connection goroutine end (a hijacked
// connection is no longer its business), freeing its deep stack and the *http.Request: an
// idle socket then costs no goroutine at all.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.m.Rejected.WithLabelValues("draining").Inc()
		http.Error(w, "gateway is draining; reconnect to another replica", http.StatusServiceUnavailable)
		return
	}
	// Admission: one socket reserved before anything else is spent on r; serve releases it when
	// the connection ends, the deferred call when the upgrade does not happen (any return).
	ticket := s.admit(w, r)
	if ticket == nil {
		return
	}
	upgraded := false
	defer func() {
		if !upgraded {
			ticket.Release()
		}
	}()

	query := r.URL.Query().Get("user")
	user := query
	if user == "" {
		user = protocol.GuestPrefix + config.RandomHex(3)
	} else if err := protocol.ValidateUser(user); err != nil {
		s.m.Rejected.WithLabelValues("bad_user").Inc()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	claims, ok := s.authenticate(w, r, query) // authentication on: 401/403 here, the user is the token's
	if !ok {
		return
	}
	if claims.User != "" {
		user = claims.User
	}
	hw := &hijackWriter{
		ResponseWriter: w, readLimit: s.opts.ReadLimit, writeTimeout: s.opts.WriteTimeout, idleRead: s.opts.IdleRead,
		outboxLimit: s.opts.QueueSize*outboxPerFrame + outboxSlack,
	}
	// The 101 and the welcome leave in one segment: the socket holds partial segments until
	// serve has written the welcome (or the upgrade failed), which saves a packet, a loopback
	// send and the client a wake-up per handshake.
	defer corked(r.Context())()
	var c *conn // set below, before the reader (the only caller of OnPingReceived) starts
	opts := s.acceptOptions()
	opts.OnPingReceived = func(ctx context.Context, _ []byte) bool { return s.pingReceived(ctx, c) }
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		// Accept has already answered (403 for a foreign origin, 426 for a non-upgrade).
		label := "handshake"
		if strings.Contains(err.Error(), "origin") {
			label = "origin"
		}
		s.m.Rejected.WithLabelValues(label).Inc()
		s.log.Debug("upgrade refused", "err", err, "origin", r.Header.Get("Origin"))
		return
	}
	ws.SetReadLimit(s.opts.ReadLimit)

	// The connection outlives the request: nothing below uses r or its context (see
	// websocket.Accept's doc).
	c = &conn{
		s: s, ws: ws, out: hw.conn.out,
		id:         newConnID(),
		user:       user,
		start:      time.Now(),
		remoteAddr: r.RemoteAddr,
		ticket:     ticket,
		exp:        claims.Expiry,
	}
	c.wc = hw.conn
	c.out.onFail = c.outboxFailed // before anything is written
	hw.conn.onClose = c.socketClosed
	c.canPark = s.poller != nil && c.out.rc != nil
	upgraded = true
	s.serve(c)
}

// serve registers c everywhere, then parks its socket with the read poller, which starts a
// reader when the client sends something; or, where it cannot (no poller, or the client's
// first frames came with its handshake and are already read), starts one.
func (s *Server) serve(c *conn) {
	// Presence first: a client holding its welcome is already listed in /users. Then the
	// welcome, written directly (nothing else writes to c until it is in the hub), and only
	// then the hub, so the welcome is always the first frame.
	joined := s.track(c)
	if joined {
		s.store.Join(protocol.User{ConnID: c.id, User: c.user, Gateway: s.opts.ID, ConnectedAt: c.start.UTC().Truncate(time.Millisecond)})
	}
	if err := c.write(protocol.EncodeWelcome(c.id, c.user, s.opts.ID, s.opts.MaxN, c.expUnix())); err != nil {
		_ = c.ws.CloseNow()
		if joined {
			s.store.Leave(c.id, protocol.ReasonClosed)
		}
		s.untrack(c)
		c.ticket.Release()
		s.log.Debug("welcome not delivered", "conn", c.id, "err", err)
		return
	}
	s.framesOut[protocol.TypeWelcome].Inc()
	c.joined = joined
	c.removeFromHub = func() {}
	if joined {
		c.removeFromHub = s.hub.Add(c)
	} else { // a drain started during the handshake: never announce it
		c.kick(reasonDrained, websocket.StatusGoingAway, protocol.RetryReason(s.retryDelay()))
	}
	s.m.Connects.Inc()
	s.m.ConnectionsOpen.Inc()
	c.schedulePing()
	c.armExpiry()
	s.log.Info("connect", "conn", c.id, "user", c.user, "remote", c.remoteAddr)
	// The handshake's goroutine is the reader until here: no goroutine started, no stack
	// grown, no read tried, for a client that has nothing to say yet.
	if c.canPark && len(c.wc.src.pre) == 0 && c.park() {
		return
	}
	go s.read(c)
}

// read is the connection's reader, on a goroutine that serve, the poller or socketClosed
// started: it reads until the socket has had nothing to give for IdleRead and parks it with
// the poller (returning: the next reader starts on the next event), or until the connection
// ends.
func (s *Server) read(c *conn) {
	err := s.readLoop(c)
	if errors.Is(err, errParked) {
		return
	}
	s.finish(c, err)
}

// finish cleans up after the connection's last read, on its reader.
func (s *Server) finish(c *conn, err error) {
	defer c.ticket.Release() // the socket is closed below
	c.ping.Stop()
	c.stopExpiry()
	c.removeFromHub()
	c.ended.Store(true)
	c.stopSending()
	if s.poller != nil {
		s.poller.forget(c) // also when parking was given up after the socket was registered
	}
	why := s.closeReason(c, err)
	leave := protocol.ReasonClosed
	if why == reasonDrained {
		leave = protocol.ReasonDrained
	}
	if c.joined {
		s.store.Leave(c.id, leave)
	}
	_ = c.ws.CloseNow()
	s.m.ConnectionsOpen.Dec()
	s.m.Disconnects.WithLabelValues(why).Inc()
	attrs := []any{"conn", c.id, "user", c.user, "reason", why, "duration", time.Since(c.start).Round(time.Millisecond)}
	if why == reasonError && err != nil {
		attrs = append(attrs, "err", err)
	}
	s.log.Info("disconnect", attrs...)
	s.untrack(c) // last: Drain waits for this, and everything above must be done by then
}

// closeReason decides why c ended: the reason recorded by whoever closed it, else what the
// read error says.
func (s *Server) closeReason(c *conn, err error) string {
	if r := c.reason.Load(); r != nil {
		return *r
	}
	why := reasonError
	switch status := websocket.CloseStatus(err); {
	case status == websocket.StatusMessageTooBig:
		why = reasonTooBig
	case status != -1, errors.Is(err, io.EOF), errors.Is(err, context.Canceled):
		why = reasonClosed
	case err != nil && strings.Contains(err.Error(), "read limited"):
		why = reasonTooBig
	}
	c.setReason(why)
	return *c.reason.Load()
}

// errInvalidUTF8 ends the read loop of a connection that sent a text frame that is not UTF-8.
var errInvalidUTF8 = errors.New("gateway: text frame is not valid UTF-8")

// errParked: the reader parked the socket with the poller and must return.
var errParked = errors.New("gateway: socket parked")

// readLoop is the one reader: every frame is parsed and answered or handed to the pool. A
// frame header declaring more than READ_LIMIT (seen by the frameGuard under the library)
// closes with 1009 at once; a text frame that is not UTF-8 with 1007 (RFC 6455 §8.1). When
// the socket has had nothing more to read for Options.IdleRead (the yield frame, see wsConn), it
// parks the socket and returns errParked.
func (s *Server) readLoop(c *conn) error {
	for {
		if c.canPark {
			c.wc.yield.Store(yieldArmed)
		}
		// No context: the read ends when the socket closes (kick, drain, peer), and a
		// cancellable context would cost every idle connection a registration.
		typ, r, err := c.ws.Reader(context.Background())
		if c.canPark && c.wc.yield.Swap(yieldOff) == yieldFired && err == nil && typ == websocket.MessageBinary {
			// The yield frame: final and empty, nothing of it to read.
			if c.park() {
				return errParked
			}
			continue
		}
		var data []byte
		if err == nil {
			data, err = io.ReadAll(r)
		}
		if errors.Is(err, errFrameTooBig) {
			c.closeWith(reasonTooBig, websocket.StatusMessageTooBig, "frame over the read limit")
			return err
		}
		if err != nil {
			return err
		}
		if typ == websocket.MessageText && !utf8.Valid(data) {
			c.closeWith(reasonInvalidUTF8, websocket.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
			return errInvalidUTF8
		}
		s.handleFrame(c, typ, data)
	}
}

func (s *Server) handleFrame(c *conn, typ websocket.MessageType, data []byte) {
	req, perr := protocol.ParseRequest(data, typ == websocket.MessageBinary, s.opts.MaxN)
	id := req.ID
	if perr != nil {
		id = perr.ID
	}
	if !s.allow(c, id) {
		return
	}
	if perr != nil {
		s.m.FramesIn.WithLabelValues("invalid").Inc()
		s.m.FibResults.WithLabelValues(perr.Code).Inc()
		c.send(protocol.EncodeError(perr.ID, perr.Code, perr.Message), protocol.TypeError)
		return
	}
	if req.Type == protocol.TypeRefresh {
		s.refresh(c, req)
		return
	}
	s.m.FramesIn.WithLabelValues(protocol.TypeFib).Inc()
	if req.N <= fib.MaxSmall { // fib's table of decimal strings: cheaper than a trip through the pool
		s.m.FibResults.WithLabelValues("ok").Inc()
		c.send(protocol.EncodeFib(req.ID, req.N, fib.Decimal(req.N)), protocol.TypeFib)
		return
	}
	if !s.pool.submit(job{c: c, req: req}) {
		s.m.FibResults.WithLabelValues(protocol.CodeBusy).Inc()
		c.send(protocol.EncodeError(req.ID, protocol.CodeBusy, "the gateway's Fibonacci workers are saturated; retry later"), protocol.TypeError)
	}
}

// pingReceived applies the per-connection rate limit to pings, on the reader, before the
// library answers one: a ping over the limit is answered late, the reader sleeping until the
// limit allows it, so a flood of pings is slowed down to the limit by TCP itself and costs
// the gateway next to nothing. A client still over the limit RateLimitGrace after it first
// was is closed with 1008, as for requests (it is not sent rate_limited: a ping has no id).
// A ping of a connection already closing is not answered.
func (s *Server) pingReceived(ctx context.Context, c *conn) bool {
	if c.reason.Load() != nil {
		// Closing: the close handshake will stop this reader. Until then, don't spin.
		sleepCtx(ctx, 100*time.Millisecond)
		return false
	}
	if c.limiter == nil {
		c.limiter = rate.NewLimiter(rate.Limit(s.opts.Rate), s.opts.Burst)
	}
	now := time.Now()
	r := c.limiter.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		// Within the limit. Only half a burst saved up again ends a run of limited pings:
		// a flood the reader merely fell behind on (a loaded machine) is still a flood.
		if c.limiter.TokensAt(now) >= float64(s.opts.Burst)/2 {
			c.limitedSince = time.Time{}
		}
		return true
	}
	if c.limitedSince.IsZero() {
		c.limitedSince = now
	} else if now.Sub(c.limitedSince) >= s.opts.RateLimitGrace {
		r.Cancel()
		c.kick(reasonRateLimit, websocket.StatusPolicyViolation, "rate limit exceeded for 10s")
		return false
	}
	// The library answers under ctx (5 s): leave it time to.
	return sleepCtx(ctx, min(d, 4*time.Second))
}

// sleepCtx sleeps for d or until ctx is done, and reports whether it slept the whole d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// allow applies the per-connection rate limit to every frame. A client still over the limit
// RateLimitGrace after its first rate_limited is closed with 1008.
func (s *Server) allow(c *conn, id string) bool {
	if c.limiter == nil {
		c.limiter = rate.NewLimiter(rate.Limit(s.opts.Rate), s.opts.Burst)
	}
	now := time.Now()
	if c.limiter.AllowN(now, 1) {
		c.limitedSince = time.Time{}
		return true
	}
	s.m.FibResults.WithLabelValues(protocol.CodeRateLimited).Inc()
	if c.limitedSince.IsZero() {
		c.limitedSince = now
	} else if now.Sub(c.limitedSince) >= s.opts.RateLimitGrace {
		c.kick(reasonRateLimit, websocket.StatusPolicyViolation, "rate limit exceeded for 10s")
		return false
	}
	msg := fmt.Sprintf("over %g requests/s (burst %d); slow down", s.opts.Rate, s.opts.Burst)
	c.send(protocol.EncodeError(id, protocol.CodeRateLimited, msg), protocol.TypeError)
	return false
}
