package presence

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// TestSweepUnderLease: with six gateways, only the lease holder checks heartbeats, so the
// checks cost O(gateways) per TTL/3 across the cluster, not O(gateways²): about one SMEMBERS
// per TTL/3 in all, where every gateway checking would make six.
func TestSweepUnderLease(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c := srv.Client()
	prefix := testkit.Prefix(t)
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
	srv := testkit.StartRedis(t)
	c := srv.Client()
	ctx := context.Background()
	prefix := testkit.Prefix(t)
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
