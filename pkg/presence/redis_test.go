package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/rediscount"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestStore starts a store closed (if not already) at the end of the test.
func newTestStore(t *testing.T, c redis.UniversalClient, prefix, gw string, ttl time.Duration, m *metrics.Metrics) *Redis {
	t.Helper()
	return startStore(t, c, RedisOptions{Prefix: prefix, GatewayID: gw, Addr: "10.0.0.1:8080", TTL: ttl, Metrics: m})
}

// startStore starts a store with o (quiet unless o.Logger is set), closed (if not already) at
// the end of the test.
func startStore(t *testing.T, c redis.UniversalClient, o RedisOptions) *Redis {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	s := NewRedis(c, o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

func TestRedisContract(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	runContract(t, func(t *testing.T) (Store, string) {
		return newTestStore(t, srv.Client(), testkit.Prefix(t), "gw-a", time.Second, nil), "gw-a"
	})
	runPageContract(t, func(t *testing.T) (Store, string) {
		return newTestStore(t, srv.Client(), testkit.Prefix(t), "gw-p", time.Second, nil), "gw-p"
	})
}

// events records the presence events published on a prefix's channel.
type events struct {
	mu  sync.Mutex
	all []protocol.PresenceEvent
}

// startWithEvents starts a Redis and returns a client for it, a fresh key prefix and a
// subscription to that prefix's presence events, for the tests that check what was published.
func startWithEvents(t *testing.T) (*redis.Client, string, *events) {
	t.Helper()
	_, c, prefix := startPrefixed(t)
	return c, prefix, subscribeEvents(t, c, prefix)
}

// startPrefixed starts a Redis and returns it, a client for it and a fresh key prefix.
func startPrefixed(t *testing.T) (*testkit.Redis, *redis.Client, string) {
	t.Helper()
	srv := testkit.StartRedis(t)
	return srv, srv.Client(), testkit.Prefix(t)
}

func subscribeEvents(t *testing.T, c redis.UniversalClient, prefix string) *events {
	t.Helper()
	ps := c.Subscribe(context.Background(), prefix+"presence:events")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := &events{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ps.Channel(redis.WithChannelSize(100000)) {
			var ev protocol.PresenceEvent
			if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
				ev = protocol.PresenceEvent{Type: "invalid: " + m.Payload}
			}
			e.mu.Lock()
			e.all = append(e.all, ev)
			e.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ps.Close(); <-done })
	return e
}

func (e *events) get() []protocol.PresenceEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]protocol.PresenceEvent(nil), e.all...)
}

func (e *events) wait(t *testing.T, n int, within time.Duration) []protocol.PresenceEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(e.get()) < n {
		if time.Now().After(deadline) {
			count := make(map[string]int)
			for _, ev := range e.get() {
				count[ev.Type+" "+ev.Gateway+" "+ev.Reason]++
			}
			t.Fatalf("got %d events, want %d: %v", len(e.get()), n, count)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for extra events to show
	return e.get()
}

func TestRedisEvents(t *testing.T) {
	t.Parallel()
	c, prefix, ev := startWithEvents(t)
	s := newTestStore(t, c, prefix, "gw-ev", time.Second, nil)
	u := user("gw-ev", 1)
	s.Join(u)
	testkit.Eventually(t, time.Second, "join event", func() bool { return len(ev.get()) == 1 })
	s.Leave(u.ConnID, protocol.ReasonClosed)
	got := ev.wait(t, 2, time.Second)
	want := []protocol.PresenceEvent{
		{Type: "join", ConnID: u.ConnID, User: u.User, Gateway: "gw-ev"},
		{Type: "leave", ConnID: u.ConnID, User: u.User, Gateway: "gw-ev", Reason: "closed"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	// The stored value and the heartbeat are the documented JSON.
	hb, err := c.Get(context.Background(), prefix+"gateway:gw-ev").Result()
	if err != nil || !strings.Contains(hb, `"addr":"10.0.0.1:8080"`) || !strings.Contains(hb, `"connections":0`) {
		t.Fatalf("heartbeat %q, %v", hb, err)
	}
	if ttl := c.PTTL(context.Background(), prefix+"gateway:gw-ev").Val(); ttl <= 0 || ttl > time.Second {
		t.Fatalf("heartbeat ttl %v", ttl)
	}
	if ok := c.SIsMember(context.Background(), prefix+"gateways", "gw-ev").Val(); !ok {
		t.Fatal("not in the gateways set")
	}
}

func TestRedisStoredValue(t *testing.T) {
	t.Parallel()
	_, c, prefix := startPrefixed(t)
	s := newTestStore(t, c, prefix, "gw-v", time.Second, nil)
	u := user("gw-v", 3)
	s.Join(u)
	var v string
	testkit.Eventually(t, time.Second, "field", func() bool {
		v = c.HGet(context.Background(), prefix+"presence", u.ConnID).Val()
		return v != ""
	})
	want := `{"user":"user3","gateway":"gw-v","connected_at":"2026-11-22T07:30:00.003Z"}`
	if v != want {
		t.Fatalf("value %s, want %s", v, want)
	}
	if ids := c.SMembers(context.Background(), prefix+"gateway:gw-v:conns").Val(); len(ids) != 1 || ids[0] != u.ConnID {
		t.Fatalf("index %v", ids)
	}
}

// countedClient returns a client of addr that counts what it sends, closed when the test
// ends: after the stores made later, since cleanups run last-in first-out.
func countedClient(tb testing.TB, addr string) (*redis.Client, *rediscount.Hook) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	tb.Cleanup(func() { c.Close() })
	rt := &rediscount.Hook{}
	c.AddHook(rt)
	return c, rt
}

// TestRedisBatching joins 10,000 connections at once: they must reach the hash in a handful
// of round trips.
func TestRedisBatching(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c, rt := countedClient(t, srv.Addr())
	prefix := testkit.Prefix(t)
	m := metrics.New()
	s := newTestStore(t, c, prefix, "gw-batch", 5*time.Second, m)
	const n = 10000
	start := time.Now()
	for i := range n {
		s.Join(user("gw-batch", i))
	}
	joined := time.Since(start)
	testkit.Eventually(t, 5*time.Second, "10k fields", func() bool {
		return srv.Client().HLen(context.Background(), prefix+"presence").Val() == n
	})
	took := time.Since(start)
	testkit.Eventually(t, time.Second, "writes counted", func() bool { return testutil.ToFloat64(m.PresenceWrites) == n })
	p, cmds := rt.Pipelines.Load(), rt.Singles.Load()
	t.Logf("10000 joins: Join calls took %v, in Redis after %v, %d pipelines + %d single commands", joined, took, p, cmds)
	// The writer takes what is queued when it wakes, so a burst still being joined goes out in
	// a few more, smaller batches than 10000/maxBatch: a handful either way, never thousands.
	if p+cmds > 25 {
		t.Fatalf("%d pipelines and %d commands for %d joins", p, cmds, n)
	}
	if got := srv.Client().SCard(context.Background(), prefix+"gateway:gw-batch:conns").Val(); got != n {
		t.Fatalf("index has %d", got)
	}
}

// failFastClient is a client of addr that fails at once while Redis is down (no retries, a
// short dial), closed when the test ends: after the stores made later (cleanups run last-in
// first-out).
func failFastClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisDownThenUp: Join never blocks while Redis is down, the changes are kept and retried,
// and land once Redis is back.
func TestRedisDownThenUp(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c := failFastClient(t, srv.Addr())
	prefix := testkit.Prefix(t)
	m := metrics.New()
	s := newTestStore(t, c, prefix, "gw-down", time.Second, m)
	s.Join(user("gw-down", 0))
	testkit.Eventually(t, time.Second, "first join", func() bool { return testutil.ToFloat64(m.PresenceWrites) == 1 })
	srv.Kill()
	start := time.Now()
	for i := 1; i <= 100; i++ {
		s.Join(user("gw-down", i))
	}
	s.Leave(user("gw-down", 1).ConnID, protocol.ReasonClosed)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("Join blocked %v while Redis was down", d)
	}
	testkit.Eventually(t, 3*time.Second, "failures counted", func() bool { return testutil.ToFloat64(m.PresenceFailures) >= 1 })
	srv.Restart()
	testkit.Eventually(t, 5*time.Second, "joins land after restart", func() bool {
		return srv.Client().HLen(context.Background(), prefix+"presence").Val() == 100
	})
	if srv.Client().HExists(context.Background(), prefix+"presence", user("gw-down", 1).ConnID).Val() {
		t.Fatal("the connection that left is in the hash")
	}
}

// TestRedisWriteBackAfterRestart restarts Redis empty: within 10 s the live connections,
// index and heartbeat are back, and no event is published for them.
func TestRedisWriteBackAfterRestart(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c, rt := countedClient(t, srv.Addr())
	prefix := testkit.Prefix(t)
	// The default-like TTL of 3 s: a heartbeat every second.
	s := newTestStore(t, c, prefix, "gw-wb", 3*time.Second, nil)
	const n = 300
	for i := range n {
		s.Join(user("gw-wb", i))
	}
	rc := srv.Client()
	ctx := context.Background()
	testkit.Eventually(t, 2*time.Second, "joins", func() bool { return rc.HLen(ctx, prefix+"presence").Val() == n })
	time.Sleep(100 * time.Millisecond)
	published := rt.Published.Load()

	srv.Restart()
	start := time.Now()
	testkit.Eventually(t, 10*time.Second, "write-back", func() bool {
		return rc.HLen(ctx, prefix+"presence").Val() == n && rc.Exists(ctx, prefix+"gateway:gw-wb").Val() == 1 &&
			rc.SCard(ctx, prefix+"gateway:gw-wb:conns").Val() == n && rc.SIsMember(ctx, prefix+"gateways", "gw-wb").Val()
	})
	t.Logf("written back %v after the restart", time.Since(start))
	if got := rt.Published.Load(); got != published {
		t.Fatalf("%d events published by the write-back", got-published)
	}

	// The same without a restart: the keys vanish (FLUSHDB) and Resync is asked for.
	rc.FlushDB(ctx)
	s.Resync()
	testkit.Eventually(t, time.Second, "resync", func() bool { return rc.HLen(ctx, prefix+"presence").Val() == n })
	if got := rt.Published.Load(); got != published {
		t.Fatalf("%d events published by Resync", got-published)
	}
}

// TestRedisClose: Close publishes drained leaves for what is left and removes the gateway's
// fields, index, heartbeat and set membership.
func TestRedisClose(t *testing.T) {
	t.Parallel()
	c, prefix, ev := startWithEvents(t)
	other := newTestStore(t, c, prefix, "gw-other", time.Second, nil)
	other.Join(user("gw-other", 1))
	s := newTestStore(t, c, prefix, "gw-close", time.Second, nil)
	for i := range 3 {
		s.Join(user("gw-close", i))
	}
	ev.wait(t, 4, time.Second)
	s.Leave(user("gw-close", 0).ConnID, protocol.ReasonDrained)
	ctx := context.Background()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Published before Close returned; the subscriber may need a moment to read them.
	got := ev.wait(t, 7, time.Second)[4:]
	var ids []string
	for _, e := range got {
		if e.Type != "leave" || e.Reason != "drained" || e.Gateway != "gw-close" {
			t.Fatalf("leave %+v", e)
		}
		ids = append(ids, e.ConnID)
	}
	if ids[0] != user("gw-close", 0).ConnID || len(ids) != 3 {
		t.Fatalf("leaves %v", ids)
	}
	if slices.Sort(ids); !slices.Equal(ids, []string{user("gw-close", 0).ConnID, user("gw-close", 1).ConnID, user("gw-close", 2).ConnID}) {
		t.Fatalf("leaves %v", ids)
	}
	if n := c.HLen(ctx, prefix+"presence").Val(); n != 1 {
		t.Fatalf("%d fields left, want the other gateway's 1", n)
	}
	if n := c.Exists(ctx, prefix+"gateway:gw-close", prefix+"gateway:gw-close:conns").Val(); n != 0 {
		t.Fatalf("%d of heartbeat and index left", n)
	}
	if ids := c.SMembers(ctx, prefix+"gateways").Val(); len(ids) != 1 || ids[0] != "gw-other" {
		t.Fatalf("gateways %v", ids)
	}
}

// TestRedisCloseBoundedByContext: Close gives up when ctx ends while Redis is down.
func TestRedisCloseBoundedByContext(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0") // nothing answers: connections are refused
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() }) // after the store's Close (cleanups run last-in first-out)
	s := NewRedis(c, RedisOptions{GatewayID: "gw-x", TTL: time.Second, Logger: quietLogger()})
	s.Join(user("gw-x", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err == nil {
		t.Fatal("Close succeeded without Redis")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
}

func heartbeatKey(prefix, id string) string { return rediskey.New(prefix).Heartbeat(id) }

func indexKey(prefix, id string) string { return rediskey.New(prefix).GatewayConns(id) }

// TestRedisWriteFailureStreak: while Redis is down the writer retries, counts every failure,
// logs one line when the streak starts and one when it ends (with the count and the error),
// and WriteFailingSince says since when.
func TestRedisWriteFailureStreak(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c := failFastClient(t, srv.Addr())
	var logs testkit.SyncBuffer
	m := metrics.New()
	s := startStore(t, c, RedisOptions{Prefix: testkit.Prefix(t), GatewayID: "gw-f", TTL: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: m})
	s.Join(user("gw-f", 0))
	testkit.Eventually(t, 2*time.Second, "first write", func() bool { return testutil.ToFloat64(m.PresenceWrites) == 1 })
	if !s.WriteFailingSince().IsZero() {
		t.Fatal("failing while Redis is up")
	}
	srv.Kill()
	killed := time.Now()
	s.Join(user("gw-f", 1))
	testkit.Eventually(t, 5*time.Second, "3 failures", func() bool { return testutil.ToFloat64(m.PresenceFailures) >= 3 })
	since := s.WriteFailingSince()
	if since.IsZero() || since.Before(killed.Add(-time.Second)) {
		t.Fatalf("WriteFailingSince = %v, killed at %v", since, killed)
	}
	srv.Restart()
	testkit.Eventually(t, 5*time.Second, "recovered", func() bool { return s.WriteFailingSince().IsZero() })
	out := logs.String()
	if n := strings.Count(out, "redis writes failing"); n != 1 {
		t.Fatalf("%d streak-start lines:\n%s", n, out)
	}
	if n := strings.Count(out, "redis writes recovered"); n != 1 {
		t.Fatalf("%d streak-end lines:\n%s", n, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "recovered") && (!strings.Contains(l, "failures=") || !strings.Contains(l, "err=")) {
			t.Fatalf("streak end without count or error: %s", l)
		}
	}
	t.Logf("%s", out)
}

// TestRedisWriterSteadyStream: a steady stream of joins and leaves, each round trip quick, never
// counts as a failure, however long the stream lasts. Fails before each round trip got its own
// deadline: one OpTimeout covered the writer's whole pass, which keeps going while changes keep
// arriving, so a healthy stream longer than OpTimeout ended in "context deadline exceeded", a
// failure streak, a full write-back and no sweeping for a TTL (seen in the presence simulator:
// every gateway of a 3-master Cluster run logged it during the connect phase).
func TestRedisWriterSteadyStream(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	px := testkit.StartToxiproxy(t, srv.Addr())
	px.Latency(t, 20*time.Millisecond, 0) // every round trip takes a while: changes pile up meanwhile
	c := redis.NewClient(&redis.Options{Addr: px.Addr()})
	t.Cleanup(func() { c.Close() })
	m := metrics.New()
	s := startStore(t, c, RedisOptions{Prefix: testkit.Prefix(t), GatewayID: "gw-s", TTL: 3 * time.Second,
		Logger: quietLogger(), Metrics: m, OpTimeout: 300 * time.Millisecond})
	end := time.Now().Add(1500 * time.Millisecond) // five OpTimeouts of changes that never stop
	for i := 0; time.Now().Before(end); i++ {
		u := user("gw-s", i)
		s.Join(u)
		if i%2 == 1 {
			s.Leave(u.ConnID, "closed")
		}
		time.Sleep(time.Millisecond)
	}
	if n := testutil.ToFloat64(m.PresenceFailures); n != 0 {
		t.Fatalf("%v write failures with Redis healthy (WriteFailingSince %v)", n, s.WriteFailingSince())
	}
}
