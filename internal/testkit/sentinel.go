package testkit

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/redisserver"
)

// Sentinel is one master, one replica and one or more sentinels monitoring them.
type Sentinel struct {
	tb testing.TB

	// MasterName is the name the sentinels monitor ("mymaster").
	MasterName string
	// SentinelAddrs are the sentinels' host:port addresses.
	SentinelAddrs []string
	// Master and Replica are the data servers as started; after Failover their roles swap.
	Master, Replica *Redis

	mu    sync.Mutex
	procs []*redisserver.Proc
}

// SentinelOptions configure StartSentinel. Zero values mean the defaults.
type SentinelOptions struct {
	// Sentinels is the number of sentinel processes, 1 or 3. Defaults to 1 (quorum 1).
	Sentinels int
}

// StartSentinel starts a master, a replica of it and the sentinels, and returns once the
// sentinels know both data servers. Everything is killed when the test ends.
func StartSentinel(tb testing.TB, opts ...SentinelOptions) *Sentinel {
	tb.Helper()
	bin := Need(tb, "redis-server")
	var o SentinelOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Sentinels <= 0 {
		o.Sentinels = 1
	}
	quorum := o.Sentinels/2 + 1

	st := &Sentinel{tb: tb, MasterName: "mymaster"}
	tb.Cleanup(st.cleanup)
	// No 5 s wait before the replica's first sync.
	st.Master = startServer(tb, []string{"--repl-diskless-sync-delay", "0"})
	st.Replica = startServer(tb, []string{"--replicaof", "127.0.0.1", strconv.Itoa(st.Master.Port()),
		"--repl-diskless-sync-delay", "0"})

	for i := range o.Sentinels {
		dir := tb.TempDir()
		var err error
		for range 5 {
			port := FreePort(tb)
			conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\nloglevel warning\n"+
				"sentinel monitor %s 127.0.0.1 %d %d\n"+
				"sentinel down-after-milliseconds %s 1000\n"+
				"sentinel failover-timeout %s 5000\n"+
				"sentinel parallel-syncs %s 1\n",
				port, dir, st.MasterName, st.Master.Port(), quorum, st.MasterName, st.MasterName, st.MasterName)
			path := filepath.Join(dir, fmt.Sprintf("sentinel%d.conf", i))
			if err = os.WriteFile(path, []byte(conf), 0o644); err != nil {
				tb.Fatalf("redistest: write sentinel config: %v", err)
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			var p *redisserver.Proc
			p, err = redisserver.Spawn(context.Background(), bin, filepath.Join(dir, "sentinel.log"), addr, []string{path, "--sentinel"})
			if err == nil {
				st.mu.Lock()
				st.procs = append(st.procs, p)
				st.mu.Unlock()
				st.SentinelAddrs = append(st.SentinelAddrs, addr)
				break
			}
		}
		if err != nil {
			tb.Fatalf("redistest: start sentinel: %v", err)
		}
	}

	ctx := context.Background()
	if err := waitFor(15*time.Second, func() error {
		if err := linkUp(ctx, st.Replica.Client()); err != nil {
			return err
		}
		for _, a := range st.SentinelAddrs {
			if err := st.sentinelSeesReplica(ctx, a, st.Replica.Addr()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		tb.Fatalf("redistest: sentinel setup not ready: %v", err)
	}
	return st
}

// linkUp checks that a replica has finished its sync with the master.
func linkUp(ctx context.Context, c *redis.Client) error {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "master_link_status:up") {
		return fmt.Errorf("replica link not up: %w", errNotYet)
	}
	return nil
}

func (st *Sentinel) sentinelSeesReplica(ctx context.Context, sentinelAddr, replicaAddr string) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinelAddr})
	defer sc.Close()
	reps, err := sc.Replicas(ctx, st.MasterName).Result()
	if err != nil {
		return err
	}
	for _, r := range reps {
		if net.JoinHostPort(r["ip"], r["port"]) == replicaAddr && r["flags"] == "slave" &&
			r["master-link-status"] == "ok" {
			return nil
		}
	}
	return fmt.Errorf("sentinel %s does not see replica %s yet (%v): %w", sentinelAddr, replicaAddr, reps, errNotYet)
}

// MasterAddr asks the first sentinel for the current master's address.
func (st *Sentinel) MasterAddr() (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: st.SentinelAddrs[0]})
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(context.Background(), st.MasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(a[0], a[1]), nil
}

// Failover forces a failover with SENTINEL FAILOVER and returns once every sentinel names the
// former replica as master and it reports role:master, then makes the former master its
// replica (as the sentinels would, a few seconds later).
// Master and Replica are swapped.
func (st *Sentinel) Failover() {
	st.tb.Helper()
	ctx := context.Background()
	old, err := st.MasterAddr()
	if err != nil {
		st.tb.Fatalf("redistest: get master: %v", err)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: st.SentinelAddrs[0]})
	defer sc.Close()
	if err := waitFor(10*time.Second, func() error { // may refuse while a previous failover settles
		return sc.Failover(ctx, st.MasterName).Err()
	}); err != nil {
		st.tb.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	newMaster, oldMaster := st.Replica, st.Master
	if old != st.Master.Addr() {
		newMaster, oldMaster = st.Master, st.Replica
	}
	if err := waitFor(15*time.Second, func() error {
		for _, a := range st.SentinelAddrs {
			c := redis.NewSentinelClient(&redis.Options{Addr: a})
			m, err := c.GetMasterAddrByName(ctx, st.MasterName).Result()
			c.Close()
			if err != nil {
				return err
			}
			if got := net.JoinHostPort(m[0], m[1]); got != newMaster.Addr() {
				return fmt.Errorf("sentinel %s still names %s: %w", a, got, errNotYet)
			}
		}
		info, err := newMaster.Client().Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:master") {
			return fmt.Errorf("%s not master yet: %w", newMaster.Addr(), errNotYet)
		}
		// The former master takes writes until it is reconfigured as a replica. The sentinels
		// do that on their 10 s INFO round; do it now, as they would, to keep tests fast.
		host, port, _ := net.SplitHostPort(newMaster.Addr())
		if err := oldMaster.Client().SlaveOf(ctx, host, port).Err(); err != nil {
			return err
		}
		info, err = oldMaster.Client().Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:slave") {
			return fmt.Errorf("%s not demoted yet: %w", oldMaster.Addr(), errNotYet)
		}
		return nil
	}); err != nil {
		st.tb.Fatalf("redistest: failover from %s: %v", old, err)
	}
	st.Master, st.Replica = newMaster, st.Master
}

// Options returns UniversalOptions for a Sentinel-backed client of this setup.
func (st *Sentinel) Options() *redis.UniversalOptions {
	return &redis.UniversalOptions{MasterName: st.MasterName, Addrs: st.SentinelAddrs}
}

// Client returns a new Sentinel-backed client of this setup, closed when the test ends.
func (st *Sentinel) Client() redis.UniversalClient {
	c := redis.NewUniversalClient(st.Options())
	st.tb.Cleanup(func() { _ = c.Close() })
	return c
}

func (st *Sentinel) cleanup() {
	st.mu.Lock()
	procs := st.procs
	st.procs = nil
	st.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
}
