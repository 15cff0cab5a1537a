package broker

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/metrics"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestRedis returns a broker whose background checker stays idle (the tests call Check).
func newTestRedis(t *testing.T, c redis.UniversalClient, prefix string, m *metrics.Metrics) *Redis {
	t.Helper()
	b := NewRedis(c, RedisOptions{Prefix: prefix, Logger: quietLogger(), Metrics: m, CheckInterval: time.Hour})
	t.Cleanup(func() { b.Close() })
	return b
}

// subscribeCounting subscribes a recorder to b and counts the calls of its resubscription hook.
func subscribeCounting(t *testing.T, b *Redis) (*recorder, *atomic.Int32) {
	t.Helper()
	hooks := new(atomic.Int32)
	b.OnResubscribe(func() { hooks.Add(1) })
	r := new(recorder)
	if err := b.Subscribe(context.Background(), r.fn); err != nil {
		t.Fatal(err)
	}
	return r, hooks
}

// startDelivering starts a Redis and a broker on it, subscribed and receiving a running
// ticker's frames, for the tests that then break the subscription.
func startDelivering(t *testing.T) (*testkit.Redis, *metrics.Metrics, *Redis, *recorder, *atomic.Int32) {
	t.Helper()
	srv := testkit.StartRedis(t)
	m := metrics.New()
	b := newTestRedis(t, srv.Client(), testkit.Prefix(t), m)
	r, hooks := subscribeCounting(t, b)
	ticker(t, b, 1000)
	waitMore(t, r, 3, 2*time.Second)
	return srv, m, b, r, hooks
}

func TestRedisContract(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	runContract(t, func(t *testing.T) Broker {
		return newTestRedis(t, srv.Client(), testkit.Prefix(t), nil)
	})
}

// ticker publishes a frame every 20 ms with a growing seq until the test ends, ignoring errors
// (Redis may be down on purpose).
func ticker(t *testing.T, b *Redis, from int64) { tickerEvery(t, b, from, 20*time.Millisecond) }

// tickerEvery is ticker with another period.
func tickerEvery(t *testing.T, b *Redis, from int64, period time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		seq := from
		for ctx.Err() == nil {
			if b.Publish(ctx, frame(seq)) == nil {
				seq++
			}
			time.Sleep(period)
		}
	}()
}

// waitMore waits until r has received n more frames than it had.
func waitMore(t *testing.T, r *recorder, n int, within time.Duration) {
	t.Helper()
	start := len(r.get())
	deadline := time.Now().Add(within)
	for len(r.get()) < start+n {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery: %d frames after %v", len(r.get())-start, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRedisPublishSetsCanary(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	prefix := testkit.Prefix(t)
	b := newTestRedis(t, srv.Client(), prefix, nil)
	ctx := context.Background()
	if err := b.Publish(ctx, frame(42)); err != nil {
		t.Fatal(err)
	}
	if v, _ := srv.Client().Get(ctx, prefix+"ticker:last").Result(); v != "42" {
		t.Fatalf("ticker:last = %q", v)
	}
	if ttl := srv.Client().PTTL(ctx, prefix+"ticker:last").Val(); ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Fatalf("ttl = %v, want 10s", ttl)
	}
	if err := b.Publish(ctx, []byte(`{"type":"fib"}`)); err == nil {
		t.Fatal("publishing a non-time frame succeeded")
	}
}

// TestRedisResubscribeAfterClientKill kills the subscriber connection at the server: go-redis
// reconnects, and the broker counts it and calls its hooks.
func TestRedisResubscribeAfterClientKill(t *testing.T) {
	t.Parallel()
	srv, m, b, r, hooks := startDelivering(t)

	if n, err := srv.Client().ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", n, err)
	}
	testkit.Eventually(t, 5*time.Second, "resubscription hook", func() bool { return hooks.Load() == 1 })
	waitMore(t, r, 3, 2*time.Second)
	if got := testutil.ToFloat64(m.PubSubReconnects); got != 1 {
		t.Fatalf("PubSubReconnects = %v", got)
	}
	if err := b.Check(context.Background()); err != nil {
		t.Fatalf("ready after reconnect: %v", err)
	}
}

// TestRedisRestart restarts Redis empty: delivery resumes and the hooks run.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	srv, m, b, r, hooks := startDelivering(t)
	srv.Kill()
	if err := b.Check(context.Background()); err == nil {
		t.Fatal("ready while Redis is down")
	}
	srv.Restart()
	testkit.Eventually(t, 10*time.Second, "resubscription hook", func() bool { return hooks.Load() >= 1 })
	waitMore(t, r, 3, 5*time.Second)
	if got := testutil.ToFloat64(m.PubSubReconnects); got < 1 {
		t.Fatalf("PubSubReconnects = %v", got)
	}
	testkit.Eventually(t, 5*time.Second, "ready", func() bool { return b.Check(context.Background()) == nil })
}

// TestRedisCanary checks Ready against ticker:last: not fooled by a value older than the
// subscription, not bothered by a missing one, and repairing a subscription that stopped
// hearing what was published.
func TestRedisCanary(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c := srv.Client()
	prefix := testkit.Prefix(t)
	last := prefix + "ticker:last"
	ctx := context.Background()
	m := metrics.New()
	b := NewRedis(c, RedisOptions{Prefix: prefix, Logger: quietLogger(), Metrics: m,
		CheckInterval: time.Hour, UnreachableAfter: 200 * time.Millisecond})
	t.Cleanup(func() { b.Close() })
	var hooks atomic.Int32
	b.OnResubscribe(func() { hooks.Add(1) })

	if err := b.Check(ctx); err != nil { // not subscribed, no ticker
		t.Fatalf("ready before subscribe: %v", err)
	}
	// A ticker has been running for a while before this gateway subscribed.
	c.Set(ctx, last, 5000, time.Minute)
	var r recorder
	if err := b.Subscribe(ctx, r.fn); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("ready right after subscribing: %v", err)
	}
	c.Set(ctx, last, 5002, time.Minute) // two ticks not (yet) seen: tolerated
	if err := b.Check(ctx); err != nil {
		t.Fatalf("ready 2 ahead: %v", err)
	}
	// Another process moves ticker:last without publishing: to this gateway that is exactly
	// what a deaf subscription looks like.
	c.Set(ctx, last, 5010, time.Minute)
	if err := b.Check(ctx); err != nil { // frames may be in flight: not yet
		t.Fatalf("check right after ticker:last ran ahead: %v", err)
	}
	time.Sleep(250 * time.Millisecond) // UnreachableAfter: still behind, so deaf
	err := b.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "wedged") {
		t.Fatalf("ready with ticker:last far ahead: %v", err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("ready after resubscribing: %v", err)
	}
	testkit.Eventually(t, 2*time.Second, "hook", func() bool { return hooks.Load() == 1 })
	if got := testutil.ToFloat64(m.PubSubReconnects); got != 1 {
		t.Fatalf("PubSubReconnects = %v", got)
	}
	if n := c.PubSubNumSub(ctx, prefix+"time").Val()[prefix+"time"]; n != 1 {
		t.Fatalf("%d subscriptions on the channel after resubscribing, want 1", n)
	}
	if err := b.Publish(ctx, frame(5011)); err != nil {
		t.Fatal(err)
	}
	if got := r.waitLen(t, 1); got[0] != 5011 {
		t.Fatalf("got %v", got)
	}
	// Deliveries keep the canary happy as ticker:last moves on.
	for seq := int64(5012); seq < 5020; seq++ {
		if err := b.Publish(ctx, frame(seq)); err != nil {
			t.Fatal(err)
		}
	}
	r.waitLen(t, 9)
	if err := b.Check(ctx); err != nil {
		t.Fatalf("ready while delivering: %v", err)
	}
	// The ticker stops: ticker:last expires. Not an error.
	c.Del(ctx, last)
	if err := b.Check(ctx); err != nil {
		t.Fatalf("ready without ticker: %v", err)
	}
}

// TestRedisWedgedSubscription: the subscriber connection goes deaf (no error, no reconnect by
// go-redis); Ready notices with the canary, resubscribes, and delivery resumes.
func TestRedisWedgedSubscription(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	proxy := testkit.StartDeafProxy(t, srv.Addr())
	c := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { c.Close() })
	prefix := testkit.Prefix(t)
	m := metrics.New()
	b := NewRedis(c, RedisOptions{Prefix: prefix, Logger: quietLogger(), Metrics: m, CheckInterval: 50 * time.Millisecond})
	t.Cleanup(func() { b.Close() })
	r, hooks := subscribeCounting(t, b)
	pub := newTestRedis(t, srv.Client(), prefix, nil) // the ticker, connected directly
	// One frame per 100 ms: the canary's slack is 2 frames, and the background checker must
	// not take a frame in flight for a deaf subscription.
	tickerEvery(t, pub, 1000, 100*time.Millisecond)
	waitMore(t, r, 3, 2*time.Second)
	if err := b.Check(context.Background()); err != nil {
		t.Fatalf("ready while delivering: %v", err)
	}

	if n := proxy.Deafen(); n != 1 {
		t.Fatalf("%d subscriber connections", n)
	}
	time.Sleep(50 * time.Millisecond)
	stalled := len(r.get())
	// Nobody calls Check: the broker's own checker notices and resubscribes.
	testkit.Eventually(t, 6*time.Second, "the checker to resubscribe", func() bool {
		return testutil.ToFloat64(m.PubSubReconnects) >= 1
	})
	if got := len(r.get()); got > stalled+1 {
		t.Fatalf("frames kept arriving on the deaf connection: %d → %d", stalled, got)
	}
	waitMore(t, r, 5, 3*time.Second) // on the new subscription
	testkit.Eventually(t, 2*time.Second, "health after the repair", func() bool { return b.Health().OK() })
	testkit.Eventually(t, time.Second, "hook", func() bool { return hooks.Load() == 1 })
	if got := testutil.ToFloat64(m.PubSubReconnects); got != 1 {
		t.Fatalf("PubSubReconnects = %v", got)
	}
}

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
