package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
)

// Settings every cluster of this package runs with: a short presence TTL so a dead gateway's
// connections are swept within seconds, and a drain short enough for a rolling restart.
const (
	presenceTTL     = 3 * time.Second
	shutdownTimeout = 5 * time.Second
)

var clusterEnv = []string{
	"PRESENCE_TTL=" + presenceTTL.String(),
	"SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
}

// binDir holds the gateway, ticker and client binaries, built once per test binary run.
var (
	binDir   string
	buildErr error
	once     sync.Once
)

func TestMain(m *testing.M) {
	// 1000 WebSockets through HAProxy: the test process holds one descriptor each. HAProxy
	// raises its own limit from its maxconn (lbconfig.MaxConnFor the hard limit).
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(filepath.Dir(binDir))
	}
	os.Exit(code)
}

// binaries builds the programs on first use and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	once.Do(func() {
		dir, err := os.MkdirTemp("", "wsgw-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = filepath.Join(dir, "bin")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		buildErr = localcluster.BuildBinaries(ctx, binDir)
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return binDir
}

// startCluster starts 3 gateways, 2 tickers, HAProxy and a redis-server for this test, stopped
// when it ends. On failure the tail of every log is printed. tune may change the options
// (another Redis, more environment) before the start.
func startCluster(t *testing.T, tune ...func(*localcluster.Options)) *localcluster.Cluster {
	t.Helper()
	testkit.Need(t, "redis-server")
	testkit.Need(t, "haproxy")
	bin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress strings.Builder
	start := time.Now()
	o := localcluster.Options{
		Dir: t.TempDir(), BinDir: bin, Gateways: 3, Tickers: 2, Env: clusterEnv, Stdout: &progress,
	}
	for _, f := range tune {
		f(&o)
	}
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatalf("start cluster: %v\n%s", err, progress.String())
	}
	t.Logf("cluster up in %v:\n%s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(progress.String()))
	t.Cleanup(func() {
		stop := time.Now()
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		t.Logf("cluster stopped in %v", time.Since(stop).Round(time.Millisecond))
		if t.Failed() {
			dumpLogs(t, c)
		}
	})
	return c
}

func dumpLogs(t *testing.T, c *localcluster.Cluster) {
	procs := []*localcluster.Proc{c.Redis, c.LB}
	procs = append(procs, c.Tickers...)
	for _, g := range c.Gateways {
		procs = append(procs, g.Proc)
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		b, _ := os.ReadFile(p.LogPath())
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("--- %s (%s):\n%s", p.Name, p.LogPath(), b)
	}
}

// measure logs one figure of README.md's failure table in a form easy to grep: "MEASURE name: value".
func measure(t *testing.T, name string, format string, args ...any) {
	t.Helper()
	t.Logf("MEASURE %s: %s", name, fmt.Sprintf(format, args...))
}

// waitFor polls f every interval until it returns nil or timeout passes, returning f's last
// error then.
func waitFor(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}
