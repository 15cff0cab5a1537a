package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

// The failures below complete the table in E2E.notes.md: what clients and presence see when
// the leading ticker, HAProxy or Redis fails.

// TestTickerLeaderKill9: the leading ticker dies; the other takes the lease after it expires
// (LEASE_TTL, default 5 s) and ticks resume with a seq jump, never a duplicate or a step back.
func TestTickerLeaderKill9(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	cs := startClients(t, c.LBAddr, "tk", 3, true, 20*time.Second)
	rc := c.RedisClient()

	var leader string
	err := waitFor(10*time.Second, 50*time.Millisecond, func() error {
		var err error
		leader, err = rc.Get(ctx, "ws:ticker:leader").Result()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	victim := -1
	for i, tk := range c.Tickers {
		if tk.Name == leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("ws:ticker:leader = %q, not one of the cluster's tickers", leader)
	}
	time.Sleep(1500 * time.Millisecond) // a tick or two before the kill
	killed := time.Now()
	if err := c.Tickers[victim].Kill(); err != nil {
		t.Fatal(err)
	}
	lastBefore := maxSeq(cs[0])
	err = waitFor(20*time.Second, 20*time.Millisecond, func() error {
		for _, cl := range cs {
			if maxSeq(cl) <= lastBefore+1 {
				return fmt.Errorf("%s: no tick after seq %d", cl.user, lastBefore+1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	resumed := time.Since(killed)
	newLeader, _ := rc.Get(ctx, "ws:ticker:leader").Result()
	// The largest jump between consecutive seqs a client saw.
	var jump int64
	for _, cl := range cs {
		cl.mu.Lock()
		seqs := make([]int64, 0, len(cl.ticks))
		for s := range cl.ticks {
			seqs = append(seqs, s)
		}
		if cl.dupes != 0 {
			t.Errorf("%s received %d duplicate ticks", cl.user, cl.dupes)
		}
		cl.mu.Unlock()
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		for i := 1; i < len(seqs); i++ {
			jump = max(jump, seqs[i]-seqs[i-1])
		}
	}
	if newLeader == leader {
		t.Errorf("ws:ticker:leader still %q after its kill", leader)
	}
	measure(t, "ticker_kill9", "leader %s killed; %s publishing, ticks resumed %v later, largest seq jump %d (LEASE_TTL default 5s)",
		leader, newLeader, resumed.Round(time.Millisecond), jump)
	// Clients stay connected through a ticker failover.
	for _, cl := range cs {
		if len(cl.history()) != 1 {
			t.Errorf("%s reconnected during the ticker failover", cl.user)
		}
	}
}

func maxSeq(cl *client) int64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var m int64
	for s := range cl.ticks {
		m = max(m, s)
	}
	return m
}

// TestHAProxyKill9: the load balancer dies. Every client loses its socket; the gateways notice
// (the kernel closes HAProxy's sockets) and empty ws:presence; once HAProxy is back the clients
// reconnect and presence is exact again.
func TestHAProxyKill9(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	const n = 20
	cs := startClients(t, c.LBAddr, "lb", n, true, 20*time.Second)
	rc := c.RedisClient()
	gateways := gatewayIDs(c)
	// A welcome can precede its HSET (written asynchronously): kill only once every connection
	// is listed, so that an empty ws:presence below means the gateways removed them.
	if err := waitFor(10*time.Second, 20*time.Millisecond, func() error {
		return presenceMatches(ctx, rc, liveConns(nil, cs), gateways, n)
	}); err != nil {
		t.Fatalf("presence before the kill: %v", err)
	}

	killed := time.Now()
	if err := c.LB.Kill(); err != nil {
		t.Fatal(err)
	}
	err := waitFor(10*time.Second, 20*time.Millisecond, func() error {
		got, err := rc.HLen(ctx, "ws:presence").Result()
		if err != nil {
			return err
		}
		if got != 0 {
			return fmt.Errorf("HLEN ws:presence = %d with the load balancer dead, want 0", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	measure(t, "haproxy_kill9_presence", "ws:presence emptied %v after HAProxy died (%d clients)", time.Since(killed).Round(time.Millisecond), n)
	time.Sleep(time.Second) // clients are retrying meanwhile
	restarted := time.Now()
	if err := c.LB.Start(); err != nil {
		t.Fatal(err)
	}
	err = waitFor(20*time.Second, 20*time.Millisecond, func() error {
		for _, cl := range cs {
			if cur := cl.current(); cur == nil || cur.Welcomed.Before(restarted) {
				return fmt.Errorf("%s not reconnected (last error %v)", cl.user, cl.lastErr())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	measure(t, "haproxy_restart_reconnect", "all %d clients reconnected %v after HAProxy restarted (client backoff up to 2 s)", n, time.Since(restarted).Round(time.Millisecond))
	err = waitFor(10*time.Second, 100*time.Millisecond, func() error {
		return presenceMatches(ctx, rc, liveConns(nil, cs), gateways, n)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRedisRestartEmpty: Redis restarts with nothing in it. WebSockets stay open (they do not
// go through Redis); the gateways write their connections back into ws:presence and subscribe
// again, and the ticker resumes, within 10 s (PROTOCOL.md).
func TestRedisRestartEmpty(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	const n = 12
	cs := startClients(t, c.LBAddr, "rr", n, true, 20*time.Second)
	rc := c.RedisClient()
	gateways, live := gatewayIDs(c), liveConns(nil, cs)
	if err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		return presenceMatches(ctx, rc, live, gateways, n)
	}); err != nil {
		t.Fatal(err)
	}

	restarted := time.Now()
	if err := c.RestartRedisEmpty(); err != nil {
		t.Fatal(err)
	}
	lastBefore := maxSeq(cs[0])
	var presenceBack, ticksBack time.Duration
	err := waitFor(20*time.Second, 50*time.Millisecond, func() error {
		if presenceBack == 0 && presenceMatches(ctx, rc, live, gateways, n) == nil {
			presenceBack = time.Since(restarted)
		}
		if ticksBack == 0 {
			resumed := true
			for _, cl := range cs {
				if maxSeq(cl) <= lastBefore+1 {
					resumed = false
				}
			}
			if resumed {
				ticksBack = time.Since(restarted)
			}
		}
		if presenceBack == 0 || ticksBack == 0 {
			return fmt.Errorf("presence back: %v, ticks back: %v; %v",
				presenceBack != 0, ticksBack != 0, presenceMatches(ctx, rc, live, gateways, n))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after Redis restarted empty: %v", err)
	}
	measure(t, "redis_restart_empty", "presence of %d connections written back %v, ticks resumed %v after the restart",
		n, presenceBack.Round(time.Millisecond), ticksBack.Round(time.Millisecond))
	if presenceBack > 10*time.Second || ticksBack > 10*time.Second {
		t.Errorf("recovery slower than PROTOCOL.md's 10 s")
	}
	for _, cl := range cs {
		if h := cl.history(); len(h) != 1 {
			t.Errorf("%s reconnected %d time(s) during the Redis restart; WebSockets should stay open", cl.user, len(h)-1)
		}
	}
	// Every gateway stays (or becomes again) ready.
	for _, g := range c.Gateways {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := c.WaitReady(rctx, g)
		cancel()
		if err != nil {
			t.Errorf("%s: %v", g.ID, err)
		}
	}
}
