package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
)

// startCluster starts a local cluster (its own redis-server, no HAProxy) with the package's
// short settings, stopped when the test ends; the logs are printed when the test fails.
func startCluster(t *testing.T, gateways, tickers int) *localcluster.Cluster {
	t.Helper()
	return startClusterWith(t, localcluster.Options{Gateways: gateways, Tickers: tickers})
}

// startClusterWith is startCluster with more of o (RedisURL): Dir, BinDir, NoLB and Env are
// set here.
func startClusterWith(t *testing.T, o localcluster.Options) *localcluster.Cluster {
	t.Helper()
	o.Dir, o.BinDir, o.NoLB, o.Env = t.TempDir(), binDir(t), true, baseEnv
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("cluster of %d gateways and %d tickers ready in %v", o.Gateways, o.Tickers, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		if t.Failed() || showLogs() {
			for _, g := range c.Gateways {
				dumpLog(t, g.Name, g.LogPath())
			}
			for _, p := range c.Tickers {
				dumpLog(t, p.Name, p.LogPath())
			}
		}
	})
	return c
}

// key is a Redis name under the default prefix "ws:".
func key(name string) string { return "ws:" + name }
