// Package localcluster runs the whole topology of PROTOCOL.md on one machine, as real processes:
// a redis-server, tickers, gateways on free loopback ports and HAProxy in front of them. The
// end-to-end suite (deploy/e2e) and the `deploy/cluster` command for people without Docker both
// start it the same way.
//
// Entry points: [Start] with [Options], then the [Cluster]'s processes ([Proc], [Gateway]) to
// kill, terminate and restart one at a time, and [Cluster.Stop]. [BuildBinaries] builds the
// programs once so several clusters can share them.
//
// Every process runs in its own process group with stdout and stderr appended to Dir/NAME.log;
// only the PIDs the package started are ever signalled.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/redisserver"
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
	// termSlack is what Stop gives a gateway beyond its SHUTDOWN_TIMEOUT to drain before
	// killing it, and every other process to exit.
	termSlack = 5 * time.Second
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
	// Stdout receives progress lines ("redis on 127.0.0.1:P", ...), one Write a line, from the
	// goroutines that start the gateways concurrently: it must be safe for concurrent use (an
	// *os.File is; testkit.SyncBuffer in tests). Nil discards them.
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
		out = o.Stdout
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

// freeAddr is "127.0.0.1:P" for a port P that was free a moment ago, and P.
func freeAddr() (string, int, error) {
	port, err := redisserver.FreePort()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port, err
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
