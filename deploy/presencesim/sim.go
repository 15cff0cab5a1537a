package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/redisserver"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Config is one simulation. The flags of main fill every field; Run does not apply defaults.
type Config struct {
	RedisURL     string   // a running standalone Redis
	ClusterAddrs []string // a running Redis Cluster (seed nodes)
	Start        bool     // start a standalone redis-server for the run
	StartCluster int      // start a Redis Cluster of this many masters for the run

	Gateways    int     // simulated gateways
	Conns       int     // connections per gateway
	VictimConns int     // connections of the first gateway, the one that crashes (0: Conns)
	Crashes     int     // gateways that crash (kill -9) at the start of the crash phase
	Churn       float64 // connections replaced per second (one leave and one join each)
	RampRate    float64 // joins per second while connecting (0: all at once)
	Users       int     // distinct users the connections are drawn from (0: half the connections)
	Subscribers int     // connections subscribed to the time channel in the steady phase
	Shards      int     // PRESENCE_SHARDS
	Prefix      string  // key prefix ("" : sim: or {sim}: in Cluster mode)
	TTL         time.Duration
	Idle        time.Duration // steady phase: heartbeats and sweep checks only
	Duration    time.Duration // churn phase
	Settle      time.Duration // longest wait for presence to reach an expected state
	Restart     bool          // kill and restart the redis-server (only with Start)
	SlowlogUS   int           // slowlog-log-slower-than during the run
	Dir         string        // where started servers keep their files ("": a temporary directory)
	Progress    io.Writer     // one line per step; nil discards
}

// simGateway is one simulated gateway: a real presence store with its own Redis client, and
// the connections it holds.
type simGateway struct {
	id     string
	client redis.UniversalClient
	st     store
	conns  []string
	down   bool // crashed or closed: no longer counted, churned or closed again
}

// sim is one run in progress.
type sim struct {
	cfg      Config
	prefix   string
	servers  []*redisserver.Server
	observer redis.UniversalClient // the simulator's own reads, not timed
	stats    *stats
	hook     *timingHook
	runID    string
	seq      atomic.Uint64
	out      io.Writer
	logs     *logCounter // every store's log lines, counted

	mu  sync.Mutex // guards gws' conns and down, and rng
	gws []*simGateway
	rng *rand.Rand
}

// Run runs the simulation described by cfg and returns its report. It stops every store it
// made and kills every redis-server it started before returning.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if cfg.VictimConns <= 0 {
		cfg.VictimConns = cfg.Conns
	}
	if cfg.Users <= 0 {
		cfg.Users = max(1, cfg.total()/2)
	}
	s := &sim{cfg: cfg, hook: &timingHook{}, runID: config.RandomHex(4), out: cfg.Progress, logs: newLogCounter(),
		rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	if s.out == nil {
		s.out = io.Discard
	}
	defer s.cleanup()
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	rep = &Report{Mode: "standalone", Nodes: len(s.stats.addrs), Gateways: cfg.Gateways,
		ConnsPerGateway: cfg.Conns, VictimConns: cfg.VictimConns, Total: cfg.total(), Crashes: cfg.Crashes,
		Subscribers: cfg.Subscribers, Shards: max(cfg.Shards, 1), TTL: cfg.TTL.String(), Churn: cfg.Churn, Users: cfg.Users}
	if s.cluster() {
		rep.Mode = "cluster"
	}
	rep.LoadBefore = loadAverage()
	err = s.phases(ctx, rep)
	rep.LoadAfter = loadAverage()
	rep.derive(s.cfg)
	rep.Longest, rep.LongestScript = s.stats.slow.overallMax, s.stats.slow.overallScript
	return rep, err
}

func (c Config) total() int { return (c.Gateways-1)*c.Conns + c.VictimConns }

func (s *sim) cluster() bool { return len(s.cfg.ClusterAddrs) > 0 || s.cfg.StartCluster > 0 }

func (s *sim) logf(format string, args ...any) {
	fmt.Fprintf(s.out, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// connect starts or finds Redis, then builds the observer, the stats reader and the gateways.
func (s *sim) connect(ctx context.Context) error {
	cfg := s.cfg
	dir := cfg.Dir
	if (cfg.Start || cfg.StartCluster > 0) && dir == "" {
		d, err := os.MkdirTemp("", "presencesim-")
		if err != nil {
			return fmt.Errorf("presencesim: %w", err)
		}
		dir = d
	}
	rc := config.Redis{URL: cfg.RedisURL, Addrs: cfg.ClusterAddrs}
	switch {
	case cfg.StartCluster > 0:
		srv, err := startCluster(ctx, dir, cfg.StartCluster)
		if err != nil {
			return fmt.Errorf("presencesim: %w", err)
		}
		s.servers = srv
		rc = config.Redis{}
		for _, sv := range srv {
			rc.Addrs = append(rc.Addrs, sv.Addr())
		}
		s.cfg.ClusterAddrs = rc.Addrs
		s.logf("started a %d-master cluster: %v (logs in %s)", len(srv), rc.Addrs, dir)
	case cfg.Start:
		sv, err := startServer(ctx, dir, "redis", nil)
		if err != nil {
			return fmt.Errorf("presencesim: %w", err)
		}
		s.servers = []*redisserver.Server{sv}
		rc.URL = "redis://" + sv.Addr() + "/0"
		s.logf("started redis-server on %s pid %d", sv.Addr(), sv.Pid())
	}
	s.prefix = cfg.Prefix
	if s.prefix == "" {
		s.prefix = "sim:"
		if s.cluster() {
			s.prefix = "{sim}:"
		}
	}
	var err error
	if s.observer, err = observerClient(rc); err != nil {
		return err
	}
	addrs, err := masters(ctx, s.observer)
	if err != nil {
		return err
	}
	if s.stats, err = newStats(ctx, addrs, cfg.SlowlogUS); err != nil {
		return fmt.Errorf("presencesim: %w", err)
	}
	s.observer.AddHook(&s.stats.own)
	if n, err := s.presenceCount(ctx); err != nil || n > 0 {
		return fmt.Errorf("presencesim: prefix %q already holds %d connections (%v): pick another -prefix", s.prefix, n, err)
	}
	for i := range cfg.Gateways {
		c, err := rc.NewClient()
		if err != nil {
			return fmt.Errorf("presencesim: %w", err)
		}
		s.hook.attach(c)
		g := &simGateway{id: fmt.Sprintf("simgw-%s-%03d", s.runID, i), client: c}
		g.st, err = newStore(c, storeOptions{prefix: s.prefix, id: g.id, ttl: cfg.TTL, shards: cfg.Shards, logger: slog.New(s.logs)})
		if err != nil {
			_ = c.Close()
			return fmt.Errorf("presencesim: %w", err)
		}
		s.gws = append(s.gws, g)
	}
	return nil
}

// simClientName names the simulator's own connections (CLIENT SETNAME), so their commands
// are left out of the SLOWLOG maxima.
const simClientName = "presencesim"

// observerClient is the simulator's own client, named simClientName.
func observerClient(rc config.Redis) (redis.UniversalClient, error) {
	if rc.URL == "" {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs, ClientName: simClientName}), nil
	}
	o, err := redis.ParseURL(rc.URL)
	if err != nil {
		return nil, fmt.Errorf("presencesim: -redis: %w", err)
	}
	o.ClientName = simClientName
	return redis.NewClient(o), nil
}

// masters returns the address of every master node: the one server, or each Cluster master.
func masters(ctx context.Context, c redis.UniversalClient) ([]string, error) {
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		if err := c.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("presencesim: redis: %w", err)
		}
		return []string{c.(*redis.Client).Options().Addr}, nil
	}
	var mu sync.Mutex
	var addrs []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		addrs = append(addrs, n.Options().Addr)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presencesim: cluster masters: %w", err)
	}
	return addrs, nil
}

// cleanup closes the live stores (as a clean shutdown would), the clients, and kills the
// servers this run started.
func (s *sim) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.mu.Lock()
	gws := s.gws
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, g := range gws {
		if !g.down { // churn and closeAll have stopped: nobody writes down any more
			wg.Go(func() { // at once: each Close may wait for a round trip in flight
				_ = g.st.Close(ctx)
				_ = g.client.Close()
			})
		}
	}
	wg.Wait()
	if s.stats != nil {
		s.stats.close(ctx)
	}
	if s.observer != nil {
		_ = s.observer.Close()
	}
	for _, sv := range s.servers {
		sv.Kill()
	}
}

// newConn returns a connection of gateway g: an id shaped like the gateway's ("c-" and 20 hex
// digits) and a user drawn from the pool. Call with s.mu held.
func (s *sim) newConn(g *simGateway) protocol.User {
	n := s.seq.Add(1)
	u := protocol.User{
		ConnID:      fmt.Sprintf("c-%s%012x", s.runID, n),
		User:        fmt.Sprintf("user-%07d", s.rng.IntN(s.cfg.Users)),
		Gateway:     g.id,
		ConnectedAt: time.Now().UTC().Truncate(time.Millisecond),
	}
	g.conns = append(g.conns, u.ConnID)
	return u
}

// presenceCount is the number of fields in the presence hashes.
func (s *sim) presenceCount(ctx context.Context) (int64, error) {
	var n int64
	for _, h := range presenceHashes(s.prefix, s.cfg.Shards) {
		c, err := s.observer.HLen(ctx, h).Result()
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// expected is the set of connections of the gateways that did not crash.
func (s *sim) expected() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]bool{}
	for _, g := range s.gws {
		if !g.down {
			for _, id := range g.conns {
				m[id] = true
			}
		}
	}
	return m
}

// waitCount polls until the presence hashes hold want fields, returning how long that took.
func (s *sim) waitCount(ctx context.Context, want int) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Settle)
	defer cancel()
	var last int64
	for {
		n, err := s.presenceCount(ctx)
		if err == nil && n == int64(want) {
			return time.Since(start), nil
		}
		last = n
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("presencesim: presence holds %d fields, want %d, after %v", last, want, s.cfg.Settle)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// diffPresence scans the presence hashes and compares their fields with want: it returns the
// fields missing and those that should not be there.
func (s *sim) diffPresence(ctx context.Context, want map[string]bool) (missing, extra int, err error) {
	seen := 0
	for _, h := range presenceHashes(s.prefix, s.cfg.Shards) {
		it := s.observer.HScan(ctx, h, 0, "", 1000).Iterator() // pages as /users reads them
		got := map[string]bool{}
		for field := true; it.Next(ctx); field = !field { // field, value, field, value, ...
			if field {
				got[it.Val()] = true
			}
		}
		if err := it.Err(); err != nil {
			return 0, 0, fmt.Errorf("presencesim: scan %s: %w", h, err)
		}
		for id := range got {
			if want[id] {
				seen++
			} else {
				extra++
			}
		}
	}
	return len(want) - seen, extra, nil
}

// waitExact polls until the presence hashes hold exactly the live connections.
func (s *sim) waitExact(ctx context.Context) (time.Duration, error) {
	want := s.expected()
	start := time.Now()
	if _, err := s.waitCount(ctx, len(want)); err != nil {
		return time.Since(start), err
	}
	missing, extra, err := s.diffPresence(ctx, want)
	if err == nil && (missing > 0 || extra > 0) {
		err = fmt.Errorf("presencesim: presence not exact: %d missing, %d that should be gone", missing, extra)
	}
	return time.Since(start), err
}

// errStopped is returned when the run's context ends before a phase completes.
var errStopped = errors.New("presencesim: stopped")

func (s *sim) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return errStopped
	case <-time.After(d):
		return nil
	}
}
