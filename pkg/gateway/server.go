// Package gateway is the WebSocket gateway of docs/PROTOCOL.md: it accepts connections on
// /ws, fans ticks from a broker out to them through a hub, answers Fibonacci requests from a
// bounded worker pool, records presence, and drains cleanly.
//
// It sees only the broker.Broker and presence.Store interfaces: standalone and cluster mode
// differ solely in what Run passes to NewServer. Authentication is the optional auth.Verifier in
// Options (auth.go): nil keeps every v1 behaviour.
//
// Entry points: Run (the program), NewServer, Server.Handler (or PublicHandler and
// AdminHandler with ADMIN_ADDR), Server.Start, Server.Drain.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	randv2 "math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgw/wsgw/pkg/admission"
	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/fib"
	"github.com/wsgw/wsgw/pkg/hub"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Options tune a Server. Zero values mean the documented defaults.
type Options struct {
	ID string // gateway id in welcome frames and presence. Defaults to "gw".
	// MaxN, Rate, Burst and ReadLimit are also environment variables: their defaults are
	// pkg/config's (FIB_MAX_N, FIB_RATE, FIB_BURST, READ_LIMIT; config.GatewayDefaults).
	MaxN           int      // largest n accepted.
	Rate           float64  // per-connection requests per second.
	Burst          int      // per-connection burst.
	ReadLimit      int64    // largest client frame; larger closes with 1009.
	AllowedOrigins []string // extra origin patterns for browsers.

	QueueSize      int              // outbound frames a connection may have queued; its unsent bytes are bounded by QueueSize × 16 KiB. Defaults to 64.
	WriteTimeout   time.Duration    // deadline of one write. Defaults to 10s.
	PingInterval   time.Duration    // between application pings (plus up to 25% jitter). Defaults to 30s.
	PingTimeout    time.Duration    // wait for a pong. Defaults to 15s.
	MaxRetryDelay  time.Duration    // retry_ms of a drain is uniform in [0, this]. Defaults to 5s.
	FibCacheBytes  int              // bytes of formatted results cached. Defaults to 64 MiB.
	FibWorkers     int              // Fibonacci workers. Defaults to GOMAXPROCS.
	FibQueue       int              // requests waiting for a worker before busy. Defaults to 1024.
	DrainParallel  int              // connections closed at once during a drain. Defaults to 256.
	IdleRead       time.Duration    // how long a reader waits for the next frame before it parks the socket (no goroutine). Defaults to 500ms.
	DrainDelay     time.Duration    // how long Drain keeps serving open sockets, unready, before the 1001s. Defaults to 0.
	RateLimitGrace time.Duration    // how long a client may keep sending after rate_limited before 1008. Defaults to 10s.
	TickInterval   time.Duration    // TICK_INTERVAL: ticks more than 2 intervals ahead of Now are refused. Defaults to 1s.
	Now            func() time.Time // the gateway's clock, for that check. Defaults to time.Now.

	Admission admission.Options // MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, TRUSTED_PROXIES; zero: their defaults
	// Auth checks every upgrade's token and every refresh; nil means authentication off (v1).
	Auth auth.Verifier
	// AuthLeeway is the verifier's clock-skew leeway: a connection is closed with 4001 when
	// its token's exp plus this has passed. Zero: at exp.
	AuthLeeway time.Duration
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.ID == "" {
		o.ID = "gw"
	}
	d := config.GatewayDefaults() // the settings that are also environment variables
	def(&o.MaxN, d.FibMaxN)
	if o.Rate <= 0 {
		o.Rate = d.FibRate
	}
	def(&o.Burst, d.FibBurst)
	if o.ReadLimit <= 0 {
		o.ReadLimit = d.ReadLimit
	}
	def(&o.QueueSize, 64)
	defDur(&o.WriteTimeout, 10*time.Second)
	defDur(&o.PingInterval, 30*time.Second)
	defDur(&o.PingTimeout, 15*time.Second)
	defDur(&o.MaxRetryDelay, 5*time.Second)
	def(&o.FibCacheBytes, 64<<20)
	def(&o.FibWorkers, runtime.GOMAXPROCS(0))
	def(&o.FibQueue, 1024)
	def(&o.DrainParallel, 256)
	// A client in conversation keeps its reader: parking and waking it again costs an
	// epoll_ctl, a hop through the poller's goroutine and a new goroutine whose stack grows
	// again, measured at 16 µs of CPU per message with every message parked.
	defDur(&o.IdleRead, 500*time.Millisecond)
	defDur(&o.RateLimitGrace, 10*time.Second)
	defDur(&o.TickInterval, time.Second)
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Server holds the gateway's connections. Build it with NewServer.
type Server struct {
	opts    Options
	log     *slog.Logger
	m       *metrics.Metrics
	broker  broker.Broker
	store   presence.Store
	hub     *hub.Hub
	pool    *pool
	adm     *admission.Controller
	writers *writers    // write queued frames to sockets, off the hub's goroutines
	poller  *readPoller // idle sockets wait here, without a goroutine; nil: not on this system

	// framesOut holds ws_frames_out_total's counter per frame type, resolved once: the tick
	// path counts one frame per socket per tick.
	framesOut map[string]prometheus.Counter

	page []byte // GET /: index.html with its auth marker set

	ctx    context.Context // the server's lifetime: the broker subscription and the pool
	cancel context.CancelFunc

	draining atomic.Bool
	ready    readiness // the checks behind /readyz
	mu       sync.Mutex
	conns    map[*conn]struct{} // every connection between track and untrack
}

// NewServer builds a server from every dependency it needs.
func NewServer(log *slog.Logger, m *metrics.Metrics, b broker.Broker, store presence.Store, opts Options) *Server {
	opts.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: opts, log: log.With("component", "gateway"), m: m, broker: b, store: store,
		hub: hub.New(m, hub.WithClock(opts.Now, opts.TickInterval), hub.WithLogger(log)), ctx: ctx, cancel: cancel,
		conns: make(map[*conn]struct{}),
		page:  pageFor(opts.Auth != nil),
	}
	s.framesOut = make(map[string]prometheus.Counter)
	for _, typ := range []string{protocol.TypeWelcome, protocol.TypeTime, protocol.TypeFib, protocol.TypeError, protocol.TypeRefreshed} {
		s.framesOut[typ] = m.FramesOut.WithLabelValues(typ)
	}
	s.adm = admission.New(opts.Admission)
	m.ConnectionsMax.Set(float64(s.adm.Max()))
	s.ready.add(s.drainingCheck)
	s.ready.add(brokerChecks(b)...)
	s.ready.add(s.fullCheck)
	s.ready.add(presenceCheck(store)...)
	s.pool = newPool(ctx, opts.FibWorkers, opts.FibQueue, fib.NewCache(opts.FibCacheBytes), m)
	s.writers = newWriters(runtime.GOMAXPROCS(0))
	if p, err := newReadPoller(); err == nil {
		s.poller = p
	} else {
		s.log.Info("every connection keeps a reader goroutine", "why", err)
	}
	return s
}

// Start subscribes to the broker for the server's lifetime (until Drain): from its return on,
// every tick reaches every connection. The broker watches its own subscription (and repairs
// it); the server only reads its state, in /readyz.
func (s *Server) Start() error {
	// The hub queues the tick on every connection, then the writers start on all of them at
	// once (see writers.schedule).
	if err := s.broker.Subscribe(s.ctx, func(frame []byte) { s.hub.Broadcast(frame); s.writers.wake() }); err != nil {
		return fmt.Errorf("gateway: subscribe to ticks: %w", err)
	}
	return nil
}

// Connections returns the number of open connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	return !s.draining.Load()
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Drain turns /readyz 503 and refuses new upgrades with 503 at once, keeps serving the open
// sockets for DrainDelay (so a load balancer takes the gateway out of rotation before anyone
// reconnects), then closes every connection with 1001 and a jittered {"retry_ms":N}, at most
// DrainParallel close handshakes at a time, and waits for them to end. ctx bounds all of it,
// the delay included: connections still open when ctx is done are dropped without a
// handshake. Keep the listener serving until Drain returns, so that a load balancer's checks
// and new upgrades get their 503 (which it retries on another replica) instead of a refused
// connection.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	if d := s.opts.DrainDelay; d > 0 {
		s.log.Info("draining: unready, serving open sockets", "delay", d, "connections", s.Connections())
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	conns := s.snapshot()
	s.log.Info("draining", "connections", len(conns))

	sem := make(chan struct{}, s.opts.DrainParallel)
	var wg sync.WaitGroup
	for _, c := range conns {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if !c.setReason(reasonDrained) {
				return
			}
			c.stopSending()
			closeBounded(ctx, c.ws, websocket.StatusGoingAway, protocol.RetryReason(s.retryDelay()))
		})
	}
	wg.Wait()

	// Wait for every reader to finish its cleanup. Polling, not a WaitGroup: a handshake that
	// completes during the drain tracks its connection after this wait has begun.
	for s.Connections() > 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Connections(); n > 0 {
		s.log.Warn("drain timed out; dropping connections", "left", n)
		for _, c := range s.snapshot() { // readers return when their socket closes
			_ = c.ws.CloseNow()
		}
		for s.Connections() > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	s.cancel()
	s.pool.wait()
	s.writers.close()
	if s.poller != nil {
		s.poller.close()
	}
}

// closeBounded runs the close handshake but gives up at ctx's deadline.
func closeBounded(ctx context.Context, ws *websocket.Conn, code websocket.StatusCode, reason string) {
	done := make(chan struct{})
	go func() { _ = ws.Close(code, reason); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		_ = ws.CloseNow()
	}
}

func (s *Server) retryDelay() time.Duration {
	return time.Duration(randv2.Int64N(int64(s.opts.MaxRetryDelay) + 1)).Truncate(time.Millisecond)
}

// newConnID returns "c-" and 20 hex digits: a millisecond timestamp (so ids sort by age) and
// random bits.
func newConnID() string {
	var b [10]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	return "c-" + hex.EncodeToString(b[:])
}
