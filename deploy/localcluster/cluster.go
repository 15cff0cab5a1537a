// Package localcluster runs the whole topology of PROTOCOL.md on one machine, as real processes:
// a redis-server, tickers, gateways on free loopback ports and HAProxy in front of them. The
// end-to-end tests (deploy/e2e), the cluster-failure tests (deploy/clustertest) and the `deploy/cluster`
// command for people without Docker all start it the same way.
//
// Entry points: [Start] with [Options], then the [Cluster]'s processes ([Proc], [Gateway]) to
// kill, terminate and restart one at a time, and [Cluster.Stop]. [BuildBinaries] builds the
// programs once so several clusters can share them.
//
// Every process runs in its own process group with stdout and stderr appended to Dir/NAME.log;
// only the PIDs the package started are ever signalled.
package localcluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/deploy/lbconfig"
)

// Defaults of Options.
const (
	DefaultGateways = 3
	DefaultTickers  = 2
)

// How long Start waits for each step: Redis answering PING, every gateway's /readyz, and a
// /healthz through HAProxy. Generous for a loaded 2-core CI machine under -race.
const (
	redisStartTimeout = 10 * time.Second
	readyTimeout      = 30 * time.Second
	lbStartTimeout    = 15 * time.Second
	pollEvery         = 50 * time.Millisecond
	// defaultShutdownTimeout is the gateway's own SHUTDOWN_TIMEOUT default; Stop gives a
	// gateway that long plus termSlack to drain before killing it.
	defaultShutdownTimeout = 10 * time.Second
	termSlack              = 5 * time.Second
	// startAttempts bounds the retries when a free port was taken before the process bound it.
	startAttempts = 4
)

// Options configures Start. Zero values mean defaults.
type Options struct {
	// Dir receives the logs (NAME.log), the rendered haproxy.cfg and, when BinDir is empty, the
	// binaries (Dir/bin). Defaults to a new temporary directory, which is left in place.
	Dir string
	// BinDir holds the gateway, ticker and client binaries. Empty: build them into Dir/bin from
	// the repository root (found by walking up from the working directory to go.mod).
	BinDir string
	// Gateways is the number of gateways. Defaults to DefaultGateways (3).
	Gateways int
	// Tickers is the number of tickers. Defaults to DefaultTickers (2).
	Tickers int
	// Env is extra environment for gateways and tickers, e.g. "PRESENCE_TTL=3s"; it overrides
	// the inherited environment and the settings Start chooses (addresses, ids, REDIS_URL).
	// Unset settings keep the programs' own defaults.
	Env []string
	// NoLB skips HAProxy; Cluster.LBAddr is then empty.
	NoLB bool
	// RedisURL makes the cluster use this Redis (e.g. a redistest server) instead of starting
	// its own redis-server. Cluster.Redis is then nil.
	RedisURL string
	// LBPort is HAProxy's port on 127.0.0.1. Defaults to a free port.
	LBPort int
	// LBProcs is the number of HAProxy processes sharing LBPort (SO_REUSEPORT: the kernel
	// spreads new connections over them), each single-threaded when there are several. Each
	// process proxies at most MaxConn() connections (two files each under the open-file
	// limit), so N processes hold N times as many. Defaults to 1 (HAProxy's own threads).
	LBProcs int
	// LBPerSourceConns and LBPerSourceRate are HAProxy's per-source limits (lbconfig.Config).
	// Every client of a local cluster comes from a loopback address, and the load tools open
	// thousands from one, so they default to lbconfig.LoopbackPerSource, not the shipped limits.
	LBPerSourceConns, LBPerSourceRate int
	// Detached starts every process in a session of its own, without tying its life to this
	// process, so the cluster outlives the program that started it (deploy/cluster up).
	Detached bool
	// Stdout receives progress lines ("redis on 127.0.0.1:P", ...), one Write at a time. Nil
	// discards them.
	Stdout io.Writer
}

// Cluster is a running local cluster. Its fields are set by Start and never change, except
// that the processes they point to may be stopped and started again.
type Cluster struct {
	// Dir holds the logs and the rendered haproxy.cfg.
	Dir string
	// RedisURL is what gateways and tickers were given; RedisAddr is its host:port.
	RedisURL, RedisAddr string
	// LBAddr is HAProxy's "127.0.0.1:P"; empty with Options.NoLB.
	LBAddr string
	// Redis is the redis-server process; nil when Options.RedisURL was given.
	Redis *Proc
	// Tickers are "ticker1".."tickerN".
	Tickers []*Proc
	// Gateways are "gw1".."gwN", in the order of HAProxy's server lines.
	Gateways []*Gateway
	// LB is the HAProxy process (the first one with Options.LBProcs); nil with Options.NoLB.
	LB *Proc
	// LBs are every HAProxy process: LB, then "haproxy2".."haproxyN" with Options.LBProcs.
	LBs []*Proc

	opts   Options
	bin    string // BinDir
	out    io.Writer
	mu     sync.Mutex
	client *redis.Client
}

// Gateway is one gateway process.
type Gateway struct {
	*Proc
	// ID is its GATEWAY_ID, "gw1".."gwN", as written in presence and welcome frames.
	ID string
	// Addr is its listen address, "127.0.0.1:P".
	Addr string
}

// Start starts Redis (unless Options.RedisURL is set), the tickers and the gateways (each on a
// free 127.0.0.1 port), waits until every gateway's /readyz answers 200, then renders and starts
// HAProxy and waits until a /healthz through it answers. On error it stops what it started.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Gateways <= 0 {
		o.Gateways = DefaultGateways
	}
	if o.Tickers <= 0 {
		o.Tickers = DefaultTickers
	}
	var out io.Writer = io.Discard
	if o.Stdout != nil {
		out = &lockedWriter{w: o.Stdout}
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "localcluster-"); err != nil {
			return nil, fmt.Errorf("localcluster: %w", err)
		}
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	c = &Cluster{Dir: o.Dir, opts: o, bin: o.BinDir, out: out}
	if c.bin == "" {
		c.bin = filepath.Join(o.Dir, "bin")
		fmt.Fprintf(out, "building %v into %s\n", Programs, c.bin)
		if err := BuildBinaries(ctx, c.bin); err != nil {
			return nil, err
		}
	}
	if c.bin, err = filepath.Abs(c.bin); err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
			c = nil
		}
	}()

	if err := c.startRedis(ctx); err != nil {
		return c, err
	}
	for i := range o.Tickers {
		name := "ticker" + strconv.Itoa(i+1)
		p := c.newProc(name, filepath.Join(c.bin, "ticker"), nil, c.env("TICKER_ID="+name))
		if err := p.Start(); err != nil {
			return c, err
		}
		c.Tickers = append(c.Tickers, p)
		fmt.Fprintf(out, "%s pid %d\n", name, p.Pid())
	}
	if err := c.startGateways(ctx); err != nil {
		return c, err
	}
	if !o.NoLB {
		if err := c.startLB(ctx); err != nil {
			return c, err
		}
	}
	return c, nil
}

// newProc makes a Proc logging to Dir/name.log.
func (c *Cluster) newProc(name, path string, args, env []string) *Proc {
	return newProc(name, path, args, env, filepath.Join(c.Dir, name+".log"), c.opts.Detached)
}

// env is the environment of a gateway or ticker: the inherited one, REDIS_URL, extra, then
// Options.Env (later entries win).
func (c *Cluster) env(extra ...string) []string {
	e := append(os.Environ(), "REDIS_URL="+c.RedisURL)
	e = append(e, extra...)
	return append(e, c.opts.Env...)
}

func (c *Cluster) startRedis(ctx context.Context) error {
	if c.opts.RedisURL != "" {
		ro, err := redis.ParseURL(c.opts.RedisURL)
		if err != nil {
			return fmt.Errorf("localcluster: redis url: %w", err)
		}
		c.RedisURL, c.RedisAddr = c.opts.RedisURL, ro.Addr
		fmt.Fprintf(c.out, "redis at %s (given)\n", c.RedisAddr)
		return nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("localcluster: redis-server: %w", err)
	}
	var lastErr error
	for range startAttempts {
		port, err := FreePort()
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p := c.newProc("redis", bin, []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", c.Dir, "--daemonize", "no",
		}, os.Environ())
		if err := p.Start(); err != nil {
			return err
		}
		if lastErr = waitPing(ctx, addr, p); lastErr == nil {
			c.Redis, c.RedisAddr, c.RedisURL = p, addr, "redis://"+addr+"/0"
			fmt.Fprintf(c.out, "redis on %s pid %d\n", addr, p.Pid())
			return nil
		}
		_ = p.Kill()
	}
	return lastErr
}

// waitPing waits until Redis at addr answers PING, failing early when p exits.
func waitPing(ctx context.Context, addr string, p *Proc) error {
	rc := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1})
	defer rc.Close()
	return poll(ctx, redisStartTimeout, p, func() error { return rc.Ping(ctx).Err() })
}

// poll calls f every pollEvery until it returns nil, ctx ends, timeout passes or p (if not
// nil) exits; the error then says which, with the tail of p's log.
func poll(ctx context.Context, timeout time.Duration, p *Proc, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var exited <-chan struct{}
	if p != nil {
		if exited = p.exited(); exited == nil {
			return fmt.Errorf("localcluster: %s is not running; log:\n%s", p.Name, p.logTail(2000))
		}
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("localcluster: %s exited while waiting (%v); log:\n%s", p.Name, err, p.logTail(2000))
		case <-ctx.Done():
			name := "cluster"
			if p != nil {
				name = p.Name
			}
			return fmt.Errorf("localcluster: %s: %w (last: %v)", name, ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (c *Cluster) startGateways(ctx context.Context) error {
	c.Gateways = make([]*Gateway, c.opts.Gateways)
	errs := make([]error, len(c.Gateways))
	var wg sync.WaitGroup
	for i := range c.Gateways {
		wg.Go(func() { errs[i] = c.startGateway(ctx, i) })
	}
	wg.Wait()
	// Drop the slots that never started, so Stop and the caller see only real processes.
	var started []*Gateway
	for _, g := range c.Gateways {
		if g != nil {
			started = append(started, g)
		}
	}
	c.Gateways = started
	return errors.Join(errs...)
}

// startGateway starts gateway i on a free port and waits until it is ready, trying another port
// when the process exits first (the free port was taken meanwhile).
func (c *Cluster) startGateway(ctx context.Context, i int) error {
	id := "gw" + strconv.Itoa(i+1)
	var lastErr error
	for range startAttempts {
		port, err := FreePort()
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		g := &Gateway{ID: id, Addr: addr, Proc: c.newProc(id, filepath.Join(c.bin, "gateway"), nil,
			c.env("GATEWAY_ADDR="+addr, "GATEWAY_ID="+id))}
		if err := g.Start(); err != nil {
			return err
		}
		c.Gateways[i] = g
		if lastErr = c.WaitReady(ctx, g); lastErr == nil {
			fmt.Fprintf(c.out, "%s on %s pid %d\n", id, addr, g.Pid())
			return nil
		}
		if g.Running() || ctx.Err() != nil || !portClash(g.Proc) {
			return lastErr // not a port clash: it runs but is not ready, or failed otherwise
		}
	}
	return lastErr
}

// WaitReady polls the gateway's /readyz until it answers 200. It fails when ctx ends, after 30 s,
// or when the gateway exits.
func (c *Cluster) WaitReady(ctx context.Context, g *Gateway) error {
	hc := &http.Client{Timeout: time.Second}
	return poll(ctx, readyTimeout, g.Proc, func() error { return httpOK(ctx, hc, "http://"+g.Addr+"/readyz") })
}

func httpOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func (c *Cluster) startLB(ctx context.Context) error {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return fmt.Errorf("localcluster: haproxy: %w", err)
	}
	servers := make([]string, len(c.Gateways))
	for i, g := range c.Gateways {
		servers[i] = g.Addr
	}
	cfgPath := filepath.Join(c.Dir, "haproxy.cfg")
	hc := &http.Client{Timeout: time.Second}
	var lastErr error
	for range startAttempts {
		port := c.opts.LBPort
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return err
			}
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		var cfg strings.Builder
		lc := lbconfig.Config{Servers: servers, Bind: addr, MaxConn: MaxConn(),
			PerSourceConns: cmp.Or(c.opts.LBPerSourceConns, lbconfig.LoopbackPerSource),
			PerSourceRate:  cmp.Or(c.opts.LBPerSourceRate, lbconfig.LoopbackPerSource)}
		if c.opts.LBProcs > 1 {
			lc.Threads = 1 // the processes are the parallelism
		}
		if err := lbconfig.Render(&cfg, lc); err != nil {
			return fmt.Errorf("localcluster: %w", err)
		}
		if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
			return fmt.Errorf("localcluster: write haproxy config: %w", err)
		}
		p := c.newProc("haproxy", bin, []string{"-db", "-f", cfgPath}, os.Environ())
		if err := p.Start(); err != nil {
			return err
		}
		c.LB, c.LBAddr, c.LBs = p, addr, []*Proc{p}
		if lastErr = poll(ctx, lbStartTimeout, p, func() error { return httpOK(ctx, hc, "http://"+addr+"/healthz") }); lastErr == nil {
			fmt.Fprintf(c.out, "haproxy on %s pid %d (maxconn %d)\n", addr, p.Pid(), MaxConn())
			return c.startMoreLBs(ctx, bin, cfgPath)
		}
		if p.Running() || c.opts.LBPort != 0 || ctx.Err() != nil || !portClash(p) {
			return lastErr
		}
	}
	return lastErr
}

// startMoreLBs starts HAProxy processes 2..Options.LBProcs on the first one's config and port,
// which HAProxy binds with SO_REUSEPORT.
func (c *Cluster) startMoreLBs(ctx context.Context, bin, cfgPath string) error {
	for i := 2; i <= c.opts.LBProcs; i++ {
		p := c.newProc("haproxy"+strconv.Itoa(i), bin, []string{"-db", "-f", cfgPath}, os.Environ())
		if err := p.Start(); err != nil {
			return err
		}
		c.LBs = append(c.LBs, p)
	}
	if len(c.LBs) == 1 {
		return nil
	}
	// A process that cannot bind or parse its config exits at once. A health check through the
	// port proves nothing about one process (any of them may answer it), so give them time to
	// fail instead.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(300 * time.Millisecond):
	}
	for i, p := range c.LBs[1:] {
		if !p.Running() {
			return fmt.Errorf("localcluster: %s exited at start; log:\n%s", p.Name, p.logTail(2000))
		}
		fmt.Fprintf(c.out, "%s on %s pid %d (maxconn %d, SO_REUSEPORT, process %d of %d)\n", p.Name, c.LBAddr, p.Pid(), MaxConn(), i+2, len(c.LBs))
	}
	return nil
}

// portClash reports whether p's log says its port was taken (between FreePort and its bind).
func portClash(p *Proc) bool {
	tail := p.logTail(1000)
	return strings.Contains(tail, "address already in use") || strings.Contains(tail, "cannot bind socket")
}

// lockedWriter serializes the progress lines written by concurrent starts.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// MaxConn is the HAProxy maxconn the cluster renders: lbconfig.MaxConnFor the hard open-file
// limit of this process (HAProxy inherits it), e.g. 9500 under a hard limit of 20000.
func MaxConn() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return lbconfig.MaxConnFor(1024)
	}
	return lbconfig.MaxConnFor(rl.Max)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("localcluster: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// GatewayByID returns the gateway whose ID is id, or nil.
func (c *Cluster) GatewayByID(id string) *Gateway {
	for _, g := range c.Gateways {
		if g.ID == id {
			return g
		}
	}
	return nil
}

// RedisClient returns a client for the cluster's Redis, shared and closed by Stop. It survives
// RestartRedisEmpty (it reconnects).
func (c *Cluster) RedisClient() *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		c.client = redis.NewClient(&redis.Options{Addr: c.RedisAddr})
	}
	return c.client
}

// RestartRedisEmpty kills the cluster's redis-server with SIGKILL and starts it again, empty, on
// the same port, returning once it answers PING. It fails when the Redis was given in
// Options.RedisURL.
func (c *Cluster) RestartRedisEmpty() error {
	if c.Redis == nil {
		return errors.New("localcluster: restart redis: not started by this cluster (Options.RedisURL)")
	}
	if err := c.Redis.Kill(); err != nil {
		return err
	}
	var lastErr error
	for range 50 { // the old listening socket may linger for a moment
		if err := c.Redis.Start(); err != nil {
			return err
		}
		if lastErr = waitPing(context.Background(), c.RedisAddr, c.Redis); lastErr == nil {
			fmt.Fprintf(c.out, "redis restarted on %s pid %d\n", c.RedisAddr, c.Redis.Pid())
			return nil
		}
		_ = c.Redis.Kill()
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("localcluster: restart redis: %w", lastErr)
}

// ShutdownTimeout is the gateways' SHUTDOWN_TIMEOUT as they see it (the inherited environment,
// then Options.Env), or the program's default (10 s).
func (c *Cluster) ShutdownTimeout() time.Duration {
	d := defaultShutdownTimeout
	for _, kv := range append(os.Environ(), c.opts.Env...) {
		if v, ok := strings.CutPrefix(kv, "SHUTDOWN_TIMEOUT="); ok {
			if p, err := time.ParseDuration(v); err == nil && p > 0 {
				d = p
			}
		}
	}
	return d
}

// terminatedBySIGTERM reports whether err says the process died of the SIGTERM itself (HAProxy
// in foreground mode does): for Stop that is a clean stop.
func terminatedBySIGTERM(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}

// Stop sends SIGTERM to every running process, gateways first (all at once, each given
// SHUTDOWN_TIMEOUT plus 5 s to drain), then tickers, HAProxy and Redis last, killing whatever
// does not exit in time. It returns every process's exit error joined. Stopping twice is safe.
func (c *Cluster) Stop() error {
	var errs []error
	var mu sync.Mutex
	termAll := func(ps []*Proc, timeout time.Duration) {
		var wg sync.WaitGroup
		for _, p := range ps {
			if p == nil {
				continue
			}
			wg.Go(func() {
				if err := p.Term(timeout); err != nil && !terminatedBySIGTERM(err) {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	gws := make([]*Proc, 0, len(c.Gateways))
	for _, g := range c.Gateways {
		gws = append(gws, g.Proc)
	}
	termAll(gws, c.ShutdownTimeout()+termSlack)
	termAll(c.Tickers, termSlack)
	termAll(c.LBs, termSlack)
	c.mu.Lock()
	if c.client != nil {
		_ = c.client.Close()
		c.client = nil
	}
	c.mu.Unlock()
	termAll([]*Proc{c.Redis}, termSlack)
	if len(errs) == 0 {
		fmt.Fprintf(c.out, "cluster stopped; logs in %s\n", c.Dir)
	}
	return errors.Join(errs...)
}
