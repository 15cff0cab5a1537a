package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// Settings every gateway and ticker of the package runs with: a short presence TTL so a dead
// gateway's connections are swept within seconds, a drain short enough for a rolling restart,
// and a short lease (the defaults are 15 s, 10 s and 5 s). TestTickerFailover runs with the
// default lease, which README.md's failure table quotes.
const (
	presenceTTL     = 3 * time.Second
	leaseTTL        = 2 * time.Second
	shutdownTimeout = 5 * time.Second
	tickInterval    = time.Second
)

// baseEnv is passed to every gateway and ticker.
var baseEnv = []string{
	"PRESENCE_TTL=" + presenceTTL.String(),
	"LEASE_TTL=" + leaseTTL.String(),
	"SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
	"TICK_INTERVAL=" + tickInterval.String(),
}

// defaultLeaseTTL is the tickers' LEASE_TTL default, from pkg/config.
var defaultLeaseTTL = config.TickerDefaults().LeaseTTL

// keys are the Redis names under the default prefix; clusterKeys under Redis Cluster's.
var (
	keys        = rediskey.New(rediskey.DefaultPrefix)
	clusterKeys = rediskey.New(rediskey.ClusterPrefix)
)

var (
	binRoot   string // created by TestMain, removed after the run
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	// 1000 WebSockets through HAProxy: the test process holds one descriptor each. HAProxy
	// raises its own limit from its maxconn (lbconfig.MaxConnFor the hard limit).
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	dir, err := os.MkdirTemp("", "wsgw-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binRoot = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// binDir builds gateway, ticker and client once per test binary and returns their directory.
// It skips under -short, and when redis-server is missing (fails under INTEGRATION=required).
func binDir(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: end-to-end, skipped with -short")
	}
	testkit.Need(t, "redis-server")
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		buildErr = localcluster.BuildBinaries(ctx, binRoot)
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return binRoot
}

// bin is the path of one built program.
func bin(t *testing.T, name string) string { return filepath.Join(binDir(t), name) }

// startCluster starts a local cluster with the package's settings (baseEnv, then o.Env):
// its own redis-server unless o.RedisURL is set, HAProxy unless o.NoLB. Dir, BinDir and
// Stdout are set here. It is stopped when the test ends; the logs of its processes are printed
// when the test fails, or always with E2E_LOGS=1.
func startCluster(t *testing.T, o localcluster.Options) *localcluster.Cluster {
	t.Helper()
	o.Dir, o.BinDir = t.TempDir(), binDir(t)
	if !o.NoLB {
		testkit.Need(t, "haproxy")
	}
	o.Env = append(append([]string{}, baseEnv...), o.Env...)
	var progress testkit.SyncBuffer
	o.Stdout = &progress
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatalf("start cluster: %v\n%s", err, progress.String())
	}
	t.Logf("cluster of %d gateways and %d tickers up in %v", len(c.Gateways), len(c.Tickers), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		stop := time.Now()
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		t.Logf("cluster stopped in %v", time.Since(stop).Round(time.Millisecond))
		if t.Failed() || showLogs() {
			procs := append([]*localcluster.Proc{c.Redis}, c.LBs...)
			procs = append(procs, c.Tickers...)
			for _, g := range c.Gateways {
				procs = append(procs, g.Proc)
			}
			for _, p := range procs {
				if p != nil {
					dumpLog(t, p.Name, p.LogPath())
				}
			}
		}
	})
	return c
}

// dumpLog prints the last part of a process log into the test output.
func dumpLog(t *testing.T, name, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("log of %s: %v", name, err)
		return
	}
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	t.Logf("---- log of %s (%s) ----\n%s", name, path, b)
}

// showLogs reports whether E2E_LOGS is set: every process log is then printed, not only those
// of failed tests.
func showLogs() bool { return os.Getenv("E2E_LOGS") != "" }

// measure logs one figure of README.md's failure table in a form easy to grep: "MEASURE name: value".
func measure(t *testing.T, name string, format string, args ...any) {
	t.Helper()
	t.Logf("MEASURE %s: %s", name, fmt.Sprintf(format, args...))
}

// errStop, wrapped in a waitFor condition's error, ends the wait at once with a failure.
var errStop = errors.New("giving up")

// waitFor polls cond every 20 ms until it returns nil and returns how long that took; after
// timeout (or on an errStop) it fails the test with the last error. It is the package's one
// poll loop: a condition that should merely be reported uses t.Error after its own check.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if errors.Is(err, errStop) || time.Since(start) > timeout {
			t.Fatalf("%s: not after %v: %v", what, time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
