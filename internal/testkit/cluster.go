package testkit

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of three masters without replicas.
type Cluster struct {
	// Nodes are the three servers.
	Nodes []*Redis

	tb testing.TB
}

// StartCluster starts three cluster-enabled servers, joins them with
// `redis-cli --cluster create`, and returns once every node reports cluster_state:ok.
// Keys that must share a slot need a hash-tagged prefix (HashTagPrefix).
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	Need(tb, "redis-server")
	cli := Need(tb, "redis-cli")
	c := &Cluster{tb: tb}
	for range 3 {
		// cluster-port is set explicitly: the default (port+10000) may be taken or out of range.
		busPort := FreePort(tb)
		c.Nodes = append(c.Nodes, startServer(tb, []string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--cluster-port", strconv.Itoa(busPort),
		}))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	ctx := context.Background()
	if err := waitFor(15*time.Second, func() error {
		for _, n := range c.Nodes {
			info, err := n.Client().ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("node %s: cluster not ok: %w", n.Addr(), errNotYet)
			}
		}
		return nil
	}); err != nil {
		tb.Fatalf("redistest: cluster not ready: %v", err)
	}
	return c
}

// Addrs are the nodes' host:port addresses.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.Addr()
	}
	return a
}

// Options returns UniversalOptions for a Cluster client of this cluster.
func (c *Cluster) Options() *redis.UniversalOptions {
	return &redis.UniversalOptions{Addrs: c.Addrs(), IsClusterMode: true}
}

// Client returns a new Cluster client of this cluster, closed when the test ends.
func (c *Cluster) Client() redis.UniversalClient {
	cc := redis.NewUniversalClient(c.Options())
	c.tb.Cleanup(func() { _ = cc.Close() })
	return cc
}
