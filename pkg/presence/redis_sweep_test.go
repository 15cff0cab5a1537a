package presence

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// checkLost checks that events hold exactly one gateway_lost leave for each of want.
func checkLost(t *testing.T, evs []protocol.PresenceEvent, gw string, want int) {
	t.Helper()
	seen := make(map[string]int)
	for _, e := range evs {
		if e.Type == "leave" && e.Reason == protocol.ReasonGatewayLost {
			if e.Gateway != gw || e.User == "" {
				t.Fatalf("bad leave %+v", e)
			}
			seen[e.ConnID]++
		}
	}
	if len(seen) != want {
		t.Fatalf("%d connections got a gateway_lost leave, want %d", len(seen), want)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s got %d leaves", id, n)
		}
	}
}

// TestRedisSweepDeadGateway: a gateway dies (its goroutines stop, nothing is cleaned up);
// within 2 × TTL the three live gateways, all sweeping, have removed its fields with exactly
// one gateway_lost leave per connection.
func TestRedisSweepDeadGateway(t *testing.T) {
	t.Parallel()
	c, prefix, ev := startWithEvents(t)
	ctx := context.Background()
	const ttl = time.Second
	var ms []*metrics.Metrics
	for _, gw := range []string{"gw-a", "gw-b", "gw-c"} {
		m := metrics.New()
		ms = append(ms, m)
		s := newTestStore(t, c, prefix, gw, ttl, m)
		s.Join(user(gw, 0))
	}
	dead := newTestStore(t, c, prefix, "gw-dead", ttl, nil)
	const n = 50
	for i := range n {
		dead.Join(user("gw-dead", i))
	}
	testkit.Eventually(t, 2*time.Second, "joins", func() bool { return c.HLen(ctx, prefix+"presence").Val() == n+3 })
	dead.kill()
	died := time.Now()
	testkit.Eventually(t, 3*ttl, "sweep", func() bool { return c.HLen(ctx, prefix+"presence").Val() == 3 })
	took := time.Since(died)
	t.Logf("swept %v after death (TTL %v)", took, ttl)
	if took > 2*ttl {
		t.Fatalf("swept after %v, want within 2 × TTL", took)
	}
	checkLost(t, ev.wait(t, 3+n+n, time.Second), "gw-dead", n)
	swept := 0.0
	for _, m := range ms {
		swept += testutil.ToFloat64(m.SweptConnections)
	}
	if swept != n {
		t.Fatalf("SweptConnections = %v", swept)
	}
	if c.Exists(ctx, prefix+"gateway:gw-dead:conns").Val() != 0 || c.SIsMember(ctx, prefix+"gateways", "gw-dead").Val() {
		t.Fatal("dead gateway's index or membership left")
	}
	if got := c.SCard(ctx, prefix+"gateways").Val(); got != 3 {
		t.Fatalf("%d gateways in the set", got)
	}
}

// deadGateway writes the keys of a gateway that died with n connections, by hand.
func deadGateway(t *testing.T, c redis.UniversalClient, prefix, gw string, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			u := user(gw, i)
			p.HSet(ctx, prefix+"presence", u.ConnID, presenceJSON(u))
			p.SAdd(ctx, indexKey(prefix, gw), u.ConnID)
		}
		p.SAdd(ctx, prefix+"gateways", gw)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRedisSweepConcurrent runs three sweepers at the same dead gateway at once, several
// times over: each connection is removed with exactly one leave.
func TestRedisSweepConcurrent(t *testing.T) {
	t.Parallel()
	_, c, prefix := startPrefixed(t)
	ctx := context.Background()
	const n = 5000 // five script calls' worth
	deadGateway(t, c, prefix, "gw-dead", n)
	ev := subscribeEvents(t, c, prefix)
	var stores []*Redis
	for i := range 3 {
		stores = append(stores, newTestStore(t, c, prefix, fmt.Sprintf("gw-%d", i), time.Minute, nil))
	}
	// A sweeper sweeps only while its own heartbeat exists.
	testkit.Eventually(t, 2*time.Second, "heartbeats", func() bool {
		return c.Exists(ctx, heartbeatKey(prefix, "gw-0"), heartbeatKey(prefix, "gw-1"), heartbeatKey(prefix, "gw-2")).Val() == 3
	})
	var wg sync.WaitGroup
	for _, s := range stores {
		for range 3 {
			wg.Go(func() {
				if err := s.sweep(ctx); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if got := c.HLen(ctx, prefix+"presence").Val(); got != 0 {
		t.Fatalf("%d fields left", got)
	}
	checkLost(t, ev.wait(t, n, 2*time.Second), "gw-dead", n)
}

// TestSweepLeavesLiveAndForeignFields: the script only removes fields that name the dead
// gateway, and does nothing while the heartbeat exists.
func TestSweepLeavesLiveAndForeignFields(t *testing.T) {
	t.Parallel()
	mr, c := testkit.StartMiniredis(t)
	ctx := context.Background()
	prefix := "ws:"
	deadGateway(t, c, prefix, "gw-dead", 3)
	// A field listed in the dead gateway's index but owned by another gateway stays.
	other := user("gw-live", 1)
	c.HSet(ctx, prefix+"presence", other.ConnID, presenceJSON(other))
	c.SAdd(ctx, indexKey(prefix, "gw-dead"), other.ConnID)

	s := NewRedis(c, RedisOptions{GatewayID: "gw-live", TTL: 15 * time.Second, Logger: quietLogger()})
	t.Cleanup(func() { s.Close(ctx) })
	c.Set(ctx, heartbeatKey(prefix, "gw-dead"), "{}", 15*time.Second)
	if err := s.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.HLen(ctx, prefix+"presence").Val(); got != 4 {
		t.Fatalf("swept a gateway with a heartbeat: %d fields", got)
	}
	mr.FastForward(15 * time.Second) // the heartbeat expires, and the sweeper's own
	s.Resync()                       // which its writer writes again
	testkit.Eventually(t, time.Second, "own heartbeat", func() bool { return mr.Exists(heartbeatKey(prefix, "gw-live")) })
	if err := s.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _ := c.HKeys(ctx, prefix+"presence").Result()
	if len(keys) != 1 || keys[0] != other.ConnID {
		t.Fatalf("fields left: %v", keys)
	}
	if c.SIsMember(ctx, prefix+"gateways", "gw-dead").Val() {
		t.Fatal("dead gateway still in the set")
	}
}

// TestHeartbeatTTL checks the heartbeat's TTL and that a store notices its heartbeat expired
// (here: Redis clock moved past the TTL) and writes everything back.
func TestHeartbeatTTL(t *testing.T) {
	t.Parallel()
	mr, c := testkit.StartMiniredis(t)
	ctx := context.Background()
	s := NewRedis(c, RedisOptions{GatewayID: "gw-1", TTL: 300 * time.Millisecond, Logger: quietLogger()})
	t.Cleanup(func() { s.Close(ctx) })
	s.Join(user("gw-1", 1))
	testkit.Eventually(t, time.Second, "join", func() bool { return c.HLen(ctx, "ws:presence").Val() == 1 })
	if ttl := mr.TTL("ws:gateway:gw-1"); ttl <= 0 || ttl > 300*time.Millisecond {
		t.Fatalf("heartbeat TTL %v", ttl)
	}
	mr.FastForward(time.Second) // heartbeat gone
	c.HDel(ctx, "ws:presence", user("gw-1", 1).ConnID)
	testkit.Eventually(t, time.Second, "write-back", func() bool {
		return c.HLen(ctx, "ws:presence").Val() == 1 && mr.Exists("ws:gateway:gw-1")
	})
}

// TestSweepUnderLease: with six gateways, only the lease holder checks heartbeats, so the
// checks cost O(gateways) per TTL/3 across the cluster, not O(gateways²): about one SMEMBERS
// per TTL/3 in all, where every gateway checking would make six.
func TestSweepUnderLease(t *testing.T) {
	t.Parallel()
	_, c, prefix := startPrefixed(t)
	const ttl = 600 * time.Millisecond
	for i := range 6 {
		newTestStore(t, c, prefix, fmt.Sprintf("gw-%d", i), ttl, nil)
	}
	time.Sleep(ttl + 200*time.Millisecond) // the stores may sweep once healthy for a TTL
	before := testkit.CommandStats(t, c)["smembers"].Calls
	const watch = 3 * time.Second
	time.Sleep(watch)
	checks := testkit.CommandStats(t, c)["smembers"].Calls - before
	rounds := float64(watch) / float64(ttl/3) // sweep rounds of one gateway in that time
	t.Logf("%d heartbeat checks in %v with 6 gateways (one gateway's rounds: %.0f)", checks, watch, rounds)
	if checks == 0 || float64(checks) > 1.6*rounds {
		t.Fatalf("%d heartbeat checks, want about %.0f (one sweeper), not %.0f (all six)", checks, rounds, 6*rounds)
	}
}

// TestSweepChunksStaySmall: a dead gateway with 50,000 connections is swept in chunks, none of
// which keeps Redis busy for 10 ms or more: SLOWLOG records every command over 1 ms (logging
// all of them would slow the scripts down, since Redis 7 logs the commands inside a script too).
// SLOWLOG measures wall time, and on a loaded machine redis-server is sometimes descheduled in
// the middle of a call: up to 1% of the 500 calls may reach 10 ms (a chunk takes about 1 ms of
// CPU; with chunks of 500 every call took 5–20 ms). Not parallel, so the package's other tests
// do not add to that load.
func TestSweepChunksStaySmall(t *testing.T) {
	_, c, prefix := startPrefixed(t)
	ctx := context.Background()
	const n = 50000
	deadGateway(t, c, prefix, "gw-dead", n)
	s := newTestStore(t, c, prefix, "gw-live", time.Minute, nil)
	testkit.Eventually(t, 2*time.Second, "own heartbeat", func() bool { return c.Exists(ctx, heartbeatKey(prefix, "gw-live")).Val() == 1 })
	for _, kv := range [][2]string{{"slowlog-log-slower-than", "1000"}, {"slowlog-max-len", "10000"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	c.SlowLogReset(ctx)
	start := time.Now()
	if err := s.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if got := c.HLen(ctx, prefix+"presence").Val(); got != 0 {
		t.Fatalf("%d fields left", got)
	}
	logs, err := c.Do(ctx, "SLOWLOG", "GET", "10000").Slice()
	if err != nil {
		t.Fatal(err)
	}
	var longest time.Duration
	scripts, over := 0, 0
	names := map[string]int{}
	for _, e := range logs {
		f := e.([]any)
		args := f[3].([]any)
		names[fmt.Sprint(args[0])]++
		if name := strings.ToLower(fmt.Sprint(args[0])); name != "evalsha" && name != "eval" {
			continue
		}
		scripts++
		d := time.Duration(f[2].(int64)) * time.Microsecond
		longest = max(longest, d)
		if d >= 10*time.Millisecond {
			over++
		}
	}
	t.Logf("swept %d connections in %v in chunks of %d; %d script calls over 1 ms, %d of 10 ms or more, the longest %v (slowlog: %v)",
		n, took, sweepChunk, scripts, over, longest, names)
	if over > n/sweepChunk/100 {
		t.Fatalf("%d script calls of 10 ms or more, the longest %v: want chunks under 10 ms", over, longest)
	}
}

// TestSweepAllowed: the guard, through the store's clock.
func TestSweepAllowed(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := &Redis{ttl: 15 * time.Second, now: func() time.Time { return now }}
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	for _, tc := range []struct {
		name        string
		last, since int64
		want        bool
	}{
		{"never wrote", 0, 0, false},
		{"healthy for long, wrote 2s ago", at(-2 * time.Second), at(-time.Hour), true},
		{"last write 6.5s ago (over TTL/3+1s)", at(-6500 * time.Millisecond), at(-time.Hour), false},
		{"healthy for only 10s (under a TTL)", at(-time.Second), at(-10 * time.Second), false},
		{"failing now", at(-time.Second), 0, false},
	} {
		r.lastOK.Store(tc.last)
		r.healthySince.Store(tc.since)
		if got := r.sweepAllowed(); got != tc.want {
			t.Errorf("%s: sweepAllowed = %v", tc.name, got)
		}
	}
}
