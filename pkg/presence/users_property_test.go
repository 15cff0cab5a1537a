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
