package presence

import (
	"context"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

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
