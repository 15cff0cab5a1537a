// Package gateway is the WebSocket gateway of docs/PROTOCOL.md: it accepts connections on
// /ws, fans ticks from a broker out to them through a hub, answers Fibonacci requests from a
// bounded worker pool, records presence, and drains cleanly.
//
// It sees only the broker.Broker and presence.Store interfaces: standalone and cluster mode
// differ solely in what Run passes to NewServer.
//
// Entry points: Run (the program), NewServer, Server.Handler, Server.Start, Server.Drain.
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

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/fib"
	"github.com/wsgw/wsgw/pkg/hub"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Options tune a Server. Zero values mean the documented defaults.
type Options struct {
	ID             string   // gateway id in welcome frames and presence. Defaults to "gw".
	MaxN           int      // largest n accepted. Defaults to 100000.
	Rate           float64  // per-connection requests per second. Defaults to 20.
	Burst          int      // per-connection burst. Defaults to 40.
	ReadLimit      int64    // largest client frame. Defaults to 4096.
	AllowedOrigins []string // extra origin patterns for browsers.

	QueueSize      int           // outbound frames a connection may have queued. Defaults to 64.
	WriteTimeout   time.Duration // deadline of one write. Defaults to 10s.
	PingInterval   time.Duration // between application pings (plus up to 25% jitter). Defaults to 30s.
	PingTimeout    time.Duration // wait for a pong. Defaults to 15s.
	MaxRetryDelay  time.Duration // retry_ms of a drain is uniform in [0, this]. Defaults to 5s.
	FibCacheBytes  int           // bytes of formatted results cached. Defaults to 64 MiB.
	FibWorkers     int           // Fibonacci workers. Defaults to GOMAXPROCS.
	FibQueue       int           // requests waiting for a worker before busy. Defaults to 1024.
	DrainParallel  int           // connections closed at once during a drain. Defaults to 256.
	DrainDelay     time.Duration // how long Drain keeps serving open sockets, unready, before the 1001s. Defaults to 0.
	ReadyTimeout   time.Duration // bound of one readiness check. Defaults to 2s.
	RateLimitGrace time.Duration // how long a client may keep sending after rate_limited before 1008. Defaults to 10s.
	CanaryInterval time.Duration // between the gateway's own readiness checks of the broker. Defaults to 2s.
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
	if o.MaxN <= 0 {
		o.MaxN = protocol.DefaultMaxN
	}
	if o.Rate <= 0 {
		o.Rate = 20
	}
	def(&o.Burst, 40)
	if o.ReadLimit <= 0 {
		o.ReadLimit = 4096
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
	defDur(&o.ReadyTimeout, 2*time.Second)
	defDur(&o.RateLimitGrace, 10*time.Second)
	defDur(&o.CanaryInterval, 2*time.Second)
}

// Server holds the gateway's connections. Build it with NewServer.
type Server struct {
	opts   Options
	log    *slog.Logger
	m      *metrics.Metrics
	broker broker.Broker
	store  presence.Store
	hub    *hub.Hub
	pool   *pool

	// framesOut holds ws_frames_out_total's counter per frame type, resolved once: the tick
	// path counts one frame per socket per tick.
	framesOut map[string]prometheus.Counter

	ctx    context.Context // the server's lifetime: the broker subscription and the pool
	cancel context.CancelFunc

	draining atomic.Bool
	mu       sync.Mutex
	conns    map[*conn]struct{} // every connection between track and untrack
}

// NewServer builds a server from every dependency it needs.
func NewServer(log *slog.Logger, m *metrics.Metrics, b broker.Broker, store presence.Store, opts Options) *Server {
	opts.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: opts, log: log, m: m, broker: b, store: store,
		hub: hub.New(m), ctx: ctx, cancel: cancel,
		conns: make(map[*conn]struct{}),
	}
	s.framesOut = make(map[string]prometheus.Counter)
	for _, typ := range []string{protocol.TypeWelcome, protocol.TypeTime, protocol.TypeFib, protocol.TypeError} {
		s.framesOut[typ] = m.FramesOut.WithLabelValues(typ)
	}
	s.pool = newPool(ctx, opts.FibWorkers, opts.FibQueue, fib.NewCache(opts.FibCacheBytes), m)
	return s
}

// Start subscribes to the broker for the server's lifetime (until Drain): from its return on,
// every tick reaches every connection.
func (s *Server) Start() error {
	if err := s.broker.Subscribe(s.ctx, func(frame []byte) { s.hub.Broadcast(frame) }); err != nil {
		return fmt.Errorf("gateway: subscribe to ticks: %w", err)
	}
	go s.watchBroker()
	return nil
}

// watchBroker runs the broker's readiness check every CanaryInterval, so a wedged
// subscription is repaired (the Redis broker resubscribes when its canary trips) even when
// nobody polls /readyz. It logs changes only.
func (s *Server) watchBroker() {
	t := time.NewTicker(s.opts.CanaryInterval)
	defer t.Stop()
	var last error
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.ReadyTimeout)
		err := s.broker.Ready(ctx)
		cancel()
		switch {
		case err != nil && last == nil:
			s.log.Warn("broker not ready", "err", err)
		case err == nil && last != nil:
			s.log.Info("broker ready again")
		}
		last = err
	}
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
