package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// The store on each Redis layout: behind Sentinel, on a Cluster, and split in PRESENCE_SHARDS
// shards (on one redis-server or a Cluster), with the check, per shard, that ws:users stays in
// step with ws:presence.

// TestRedisSentinelFailover: presence writes land on the new master after a failover.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	st := testkit.StartSentinel(t)
	c := st.Client()
	prefix := testkit.Prefix(t)
	s := newTestStore(t, c, prefix, "gw-s", time.Second, nil)
	ctx := context.Background()
	s.Join(user("gw-s", 0))
	testkit.Eventually(t, 2*time.Second, "join on master", func() bool {
		return st.Master.Client().HLen(ctx, prefix+"presence").Val() == 1
	})
	st.Failover()
	s.Join(user("gw-s", 1))
	testkit.Eventually(t, 10*time.Second, "join on the new master", func() bool {
		return st.Master.Client().HLen(ctx, prefix+"presence").Val() == 2
	})
	if st.Master.Client().Exists(ctx, prefix+"gateway:gw-s").Val() != 1 {
		t.Fatal("no heartbeat on the new master")
	}
}

// TestRedisCluster: the store works on a three-master Cluster with a hash-tagged prefix,
// sweeper script included.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cl := testkit.StartCluster(t)
	c := cl.Client()
	prefix := testkit.HashTagPrefix(t)
	ctx := context.Background()
	ev := subscribeEvents(t, c, prefix)
	deadGateway(t, c, prefix, "gw-dead", 20)
	s := newTestStore(t, c, prefix, "gw-live", time.Second, nil)
	s.Join(user("gw-live", 0))
	testkit.Eventually(t, 3*time.Second, "sweep and join", func() bool {
		l, err := s.List(ctx)
		return err == nil && len(l) == 1 && l[0].Gateway == "gw-live"
	})
	checkLost(t, ev.wait(t, 21, 2*time.Second), "gw-dead", 20)
	// Events of one gateway come from one node, in order: a leave never precedes its join.
	for i := 1; i <= 20; i++ {
		s.Join(user("gw-live", i))
		s.Leave(user("gw-live", i).ConnID, "closed")
	}
	got := ev.wait(t, 21+40, 2*time.Second)[21:]
	for i := 0; i < 40; i += 2 {
		if got[i].Type != "join" || got[i+1].Type != "leave" || got[i].ConnID != got[i+1].ConnID {
			t.Fatalf("events out of order at %d: %+v %+v", i, got[i], got[i+1])
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := c.HLen(ctx, prefix+"presence").Val(); n != 0 {
		t.Fatalf("%d fields after Close", n)
	}
}

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

// usersInStep checks that the users hash holds, for each user, exactly the number of fields of
// the presence hash naming that user, every count above zero, and returns the presence hash.
func usersInStep(t *testing.T, c redis.UniversalClient, prefix string) map[string]string {
	t.Helper()
	return usersInStepShards(t, c, prefix, 1)
}

// usersInStepShards is usersInStep over n shards: per shard, and the union.
func usersInStepShards(t *testing.T, c redis.UniversalClient, prefix string, n int) map[string]string {
	t.Helper()
	ctx := context.Background()
	conns, users := make(map[string]string), make(map[string]string)
	for _, s := range rediskey.New(prefix).Shards(n) {
		cs, err := c.HGetAll(ctx, s.Presence()).Result()
		if err != nil {
			t.Fatal(err)
		}
		us, err := c.HGetAll(ctx, s.Users()).Result()
		if err != nil {
			t.Fatal(err)
		}
		for u := range us {
			if _, ok := users[u]; ok {
				t.Fatalf("user %s counted in two shards", u)
			}
		}
		maps.Copy(conns, cs)
		maps.Copy(users, us)
	}
	want := make(map[string]string)
	count := make(map[string]int)
	for _, v := range conns {
		var p protocol.Presence
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			t.Fatalf("bad presence value %q", v)
		}
		count[p.User]++
	}
	for u, n := range count {
		want[u] = strconv.Itoa(n)
	}
	if !maps.Equal(users, want) {
		t.Fatalf("ws:users %v, counted from ws:presence %v", users, want)
	}
	return conns
}

// TestUsersInStepProperty: random interleavings of joins, leaves, gateway deaths with their
// sweep, gateways swept while alive (their rejoin), and Redis restarts (FLUSHDB, then every
// gateway's write-back) keep ws:users equal to the users counted from ws:presence, and
// ws:presence equal to the connections the live gateways hold; every conn_id's events
// alternate join/leave. With one shard and with three.
func TestUsersInStepProperty(t *testing.T) {
	t.Parallel()
	for _, shards := range []int{1, 3} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			t.Parallel()
			usersProperty(t, shards)
		})
	}
}

func usersProperty(t *testing.T, shards int) {
	_, c, prefix := startPrefixed(t)
	ctx := context.Background()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	ev := subscribeEvents(t, c, prefix)

	const ttl = time.Minute // sweeps are driven by the test, not by time
	var stores []*Redis
	next := 0
	start := func() {
		stores = append(stores, newShardStore(t, c, prefix, fmt.Sprintf("gw-%d", next), ttl, shards))
		next++
	}
	for range 3 {
		start()
	}
	live := func() map[string]protocol.User {
		all := make(map[string]protocol.User)
		for _, s := range stores {
			s.mu.Lock()
			maps.Copy(all, s.live)
			s.mu.Unlock()
		}
		return all
	}
	settle := func(step int) {
		t.Helper()
		want := live()
		testkit.Eventually(t, 5*time.Second, fmt.Sprintf("presence exact at step %d", step), func() bool {
			got := make(map[string]string)
			for _, s := range rediskey.New(prefix).Shards(shards) {
				m, err := c.HGetAll(ctx, s.Presence()).Result()
				if err != nil {
					return false
				}
				maps.Copy(got, m)
			}
			if len(got) != len(want) {
				return false
			}
			for id := range want {
				if _, ok := got[id]; !ok {
					return false
				}
			}
			for _, s := range stores {
				if c.Exists(ctx, heartbeatKey(prefix, s.id)).Val() == 0 {
					return false
				}
			}
			return true
		})
		usersInStepShards(t, c, prefix, shards)
	}
	lapse := func(id string) { // its heartbeat (and every shard's copy) runs out
		c.Del(ctx, heartbeatKey(prefix, id))
		for _, s := range rediskey.New(prefix).Shards(shards) {
			c.Del(ctx, s.Heartbeat(id))
		}
	}
	conn := 0
	ops := map[string]int{}
	for step := range 300 {
		s := stores[rng.IntN(len(stores))]
		switch k := rng.IntN(100); {
		case k < 55: // join, as one of 6 users
			u := protocol.User{ConnID: fmt.Sprintf("c-%05d", conn), User: fmt.Sprintf("u%d", rng.IntN(6)),
				ConnectedAt: time.Unix(int64(conn), 0).UTC()}
			conn++
			s.Join(u)
			ops["join"]++
		case k < 85: // leave one of its connections
			s.mu.Lock()
			var id string
			for id = range s.live {
				break
			}
			s.mu.Unlock()
			if id != "" {
				s.Leave(id, protocol.ReasonClosed)
				ops["leave"]++
			}
		case k < 91: // it dies; another sweeps it
			settle(step)
			s.kill()
			lapse(s.id)
			var rest []*Redis
			for _, o := range stores {
				if o != s {
					rest = append(rest, o)
				}
			}
			stores = rest
			if err := stores[0].sweep(ctx); err != nil {
				t.Fatal(err)
			}
			start()
			ops["death"]++
		case k < 96: // swept while alive: its heartbeat lapses, another sweeps, it rejoins
			if len(stores) < 2 {
				continue
			}
			settle(step)
			var other *Redis
			for _, o := range stores {
				if o != s {
					other = o
					break
				}
			}
			lapse(s.id)
			if err := other.sweep(ctx); err != nil {
				t.Fatal(err)
			}
			s.Resync() // what its writer does at its next heartbeat
			ops["swept-alive"]++
		default: // Redis restarts empty; every gateway writes back
			settle(step)
			c.FlushDB(ctx)
			for _, o := range stores {
				o.Resync()
			}
			ops["restart"]++
		}
		if step%15 == 14 {
			settle(step)
		}
	}
	settle(300)
	time.Sleep(100 * time.Millisecond) // the last events reach the subscriber
	alternating(t, ev.get())
	t.Logf("operations: %v, %d events alternating per conn_id", ops, len(ev.get()))
}
