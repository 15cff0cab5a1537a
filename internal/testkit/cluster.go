package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/redisserver"
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
	Need(tb, "redis-cli")
	c := &Cluster{tb: tb}
	var servers []*redisserver.Server
	for range 3 {
		n := startServer(tb, redisserver.ClusterArgs(FreePort(tb), 2*time.Second))
		c.Nodes = append(c.Nodes, n)
		servers = append(servers, n.Server)
	}
	if err := redisserver.CreateCluster(context.Background(), servers); err != nil {
		tb.Fatalf("testkit: %v", err)
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
