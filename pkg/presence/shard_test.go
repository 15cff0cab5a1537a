package presence

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// newShardStore is newTestStore with PRESENCE_SHARDS = shards.
func newShardStore(t *testing.T, c redis.UniversalClient, prefix, gw string, ttl time.Duration, shards int) *Redis {
	t.Helper()
	return startStore(t, c, RedisOptions{Prefix: prefix, GatewayID: gw, TTL: ttl, Shards: shards})
}

// TestRedisShardsContract runs the Store contracts with three shards on one redis-server.
func TestRedisShardsContract(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	newStore := func(t *testing.T) (Store, string) {
		return newShardStore(t, srv.Client(), testkit.Prefix(t), "gw-s", time.Second, 3), "gw-s"
	}
	runContract(t, newStore)
	runPageContract(t, newStore)
}

// TestRedisClusterShards: on a real three-master Redis Cluster with three shards, presence
// work reaches all three masters (one shard hash on each, and the writes, sweeps and HSCANs
// run on each), a dead gateway is swept from every shard with one gateway_lost leave per
// connection, ws:users stays in step per shard, and /users' pages walk every shard.
func TestRedisClusterShards(t *testing.T) {
	t.Parallel()
	cl := testkit.StartCluster(t)
	c := cl.Client()
	ctx := context.Background()
	prefix := testkit.HashTagPrefix(t)
	const shards = 3
	before := evalCalls(t, cl)
	ev := subscribeEvents(t, c, prefix)
	const ttl = time.Second
	live := newShardStore(t, c, prefix, "gw-live", ttl, shards)
	dead := newShardStore(t, c, prefix, "gw-dead", ttl, shards)
	const n = 60
	for i := range n {
		live.Join(protocol.User{ConnID: fmt.Sprintf("c-live-%02d", i), User: fmt.Sprintf("u%d", i%20), ConnectedAt: time.Unix(int64(i), 0).UTC()})
		dead.Join(protocol.User{ConnID: fmt.Sprintf("c-dead-%02d", i), User: fmt.Sprintf("v%d", i%20), ConnectedAt: time.Unix(int64(i), 0).UTC()})
	}
	testkit.Eventually(t, 5*time.Second, "120 in presence", func() bool {
		p, err := live.Page(ctx, "", 1)
		return err == nil && p.Count == 2*n && p.Distinct == 40
	})
	usersInStepShards(t, c, prefix, shards)

	// One shard hash on each master, each with fields.
	owners := make(map[string]int) // node → shard hashes it holds
	for i, s := range rediskey.New(prefix).Shards(shards) {
		for _, node := range cl.Nodes {
			m, err := node.Client().HLen(ctx, s.Presence()).Result()
			if err != nil {
				continue // MOVED: another node's slot
			}
			if m == 0 {
				t.Errorf("shard %d (%s) empty on its node %s", i, s.Presence(), node.Addr())
			}
			owners[node.Addr()]++
		}
	}
	after := evalCalls(t, cl)
	for _, node := range cl.Nodes {
		if owners[node.Addr()] != 1 || after[node.Addr()] <= before[node.Addr()] {
			t.Fatalf("node %s: %d shard hashes, %d → %d script calls; want one shard and its writes on every master",
				node.Addr(), owners[node.Addr()], before[node.Addr()], after[node.Addr()])
		}
	}

	seen, last := walk(t, live, 7)
	if len(seen) != 2*n || last.Count != 2*n {
		t.Fatalf("pages over the shards: %d listed, count %d", len(seen), last.Count)
	}

	dead.kill()
	testkit.Eventually(t, 5*ttl, "dead gateway swept from every shard", func() bool {
		p, err := live.Page(ctx, "", 1)
		return err == nil && p.Count == n && p.Distinct == 20
	})
	usersInStepShards(t, c, prefix, shards)
	checkLost(t, ev.wait(t, 3*n, 3*time.Second), "gw-dead", n)
	alternating(t, ev.get())
	if c.SIsMember(ctx, prefix+"gateways", "gw-dead").Val() {
		t.Fatal("swept gateway still in the gateways set")
	}
	if err := live.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if conns := usersInStepShards(t, c, prefix, shards); len(conns) != 0 {
		t.Fatalf("%d fields after Close", len(conns))
	}
}

// evalCalls returns, per node, how many EVAL and EVALSHA calls it has served.
func evalCalls(t *testing.T, cl *testkit.Cluster) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	for _, node := range cl.Nodes {
		st := testkit.CommandStats(t, node.Client())
		out[node.Addr()] = st["eval"].Calls + st["evalsha"].Calls
	}
	return out
}
