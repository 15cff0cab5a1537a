package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wsgw/wsgw/internal/redisserver"
)

// The redis-servers a run starts are redisserver.Servers: the only processes the simulator
// ever signals, by their PIDs. Each keeps its files in a directory of its own under dir.

// startServer starts redis-server without persistence on a free loopback port, in dir/NAME.
func startServer(ctx context.Context, dir, name string, extra []string) (*redisserver.Server, error) {
	s, err := redisserver.Start(ctx, filepath.Join(dir, name), extra)
	if err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	return s, nil
}

// startCluster starts n cluster-enabled servers without replicas and joins them into one
// Redis Cluster, returning once every node reports cluster_state:ok. On error it kills what
// it started.
func startCluster(ctx context.Context, dir string, n int) (servers []*redisserver.Server, err error) {
	defer func() {
		if err != nil {
			for _, s := range servers {
				s.Kill()
			}
			servers = nil
		}
	}()
	for i := range n {
		bus, err := redisserver.FreePort()
		if err != nil {
			return servers, err
		}
		s, err := startServer(ctx, dir, fmt.Sprintf("node-%d", i+1), redisserver.ClusterArgs(bus, 5*time.Second))
		if err != nil {
			return servers, err
		}
		servers = append(servers, s)
	}
	return servers, redisserver.CreateCluster(ctx, servers)
}
