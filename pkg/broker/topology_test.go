package broker

import (
	"context"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// TestRedisSentinelFailover: ticks keep flowing across a Sentinel failover.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	st := testkit.StartSentinel(t)
	c := st.Client()
	b := newTestRedis(t, c, testkit.Prefix(t), nil)
	var r recorder
	if err := b.Subscribe(context.Background(), r.fn); err != nil {
		t.Fatal(err)
	}
	ticker(t, b, 1000)
	waitMore(t, &r, 3, 2*time.Second)
	st.Failover()
	waitMore(t, &r, 10, 10*time.Second)
	// Publishing reaches the new master.
	if err := b.Publish(context.Background(), frame(999999)); err != nil {
		t.Fatalf("publish after failover: %v", err)
	}
	if v := st.Master.Client().Get(context.Background(), b.lastKey).Val(); v == "" {
		t.Fatal("ticker:last not on the new master")
	}
	testkit.Eventually(t, 5*time.Second, "ready", func() bool { return b.Check(context.Background()) == nil })
}

// TestRedisCluster: delivery over a three-master Cluster with a hash-tagged prefix.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cl := testkit.StartCluster(t)
	c := cl.Client()
	prefix := testkit.HashTagPrefix(t)
	pub := newTestRedis(t, c, prefix, nil)
	var rs [2]recorder
	for i := range rs { // two gateways, each with its own broker
		b := newTestRedis(t, c, prefix, nil)
		if err := b.Subscribe(context.Background(), rs[i].fn); err != nil {
			t.Fatal(err)
		}
	}
	for seq := int64(1); seq <= 20; seq++ {
		if err := pub.Publish(context.Background(), frame(seq)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rs {
		if got := rs[i].waitLen(t, 20); got[0] != 1 || got[19] != 20 {
			t.Fatalf("gateway %d got %v", i, got)
		}
	}
	if err := pub.Check(context.Background()); err != nil {
		t.Fatalf("ready: %v", err)
	}
}
