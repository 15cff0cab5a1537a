package lease

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/metrics"
)

func hold(t *testing.T, l *Redis) bool {
	t.Helper()
	ok, err := l.Hold(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// startWithKey starts a Redis and returns it, a client for it and a fresh lease key.
func startWithKey(t *testing.T) (*testkit.Redis, *redis.Client, string) {
	t.Helper()
	srv := testkit.StartRedis(t)
	return srv, srv.Client(), testkit.Prefix(t) + "ticker:leader"
}

func TestRedisLease(t *testing.T) {
	t.Parallel()
	_, c, key := startWithKey(t)
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	a := NewRedis(c, key, "ticker-a", ttl)
	b := NewRedis(c, key, "ticker-b", ttl)

	if !hold(t, a) || hold(t, b) {
		t.Fatal("want a holding, b not")
	}
	// a renews: it keeps the lease well past the TTL, and b never gets it.
	for range 6 {
		time.Sleep(ttl / 3)
		if !hold(t, a) || hold(t, b) {
			t.Fatal("a lost the lease while renewing")
		}
	}
	if v := c.Get(ctx, key).Val(); v != "ticker-a" {
		t.Fatalf("key holds %q", v)
	}
	// a stops renewing (crashed): b takes over after the TTL, not before.
	if hold(t, b) {
		t.Fatal("b took the lease early")
	}
	start := time.Now()
	for !hold(t, b) {
		if time.Since(start) > 2*ttl {
			t.Fatal("b did not take over after the TTL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// a comes back: it learns it lost and must not renew b's key.
	if hold(t, a) {
		t.Fatal("a still thinks it holds")
	}
	if v := c.Get(ctx, key).Val(); v != "ticker-b" {
		t.Fatalf("key holds %q", v)
	}
	// a's Release must not delete b's lease.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !hold(t, b) {
		t.Fatal("a's release removed b's lease")
	}
	// b releases: a takes over at once.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !hold(t, a) {
		t.Fatal("a did not take over after b's release")
	}
}

// TestRedisLeaseOverwritten: a holder whose key was overwritten by someone else learns at its
// next Hold that it lost, and does not extend the other's key.
func TestRedisLeaseOverwritten(t *testing.T) {
	t.Parallel()
	_, c, key := startWithKey(t)
	ctx := context.Background()
	a := NewRedis(c, key, "ticker-a", time.Second)
	if !hold(t, a) {
		t.Fatal("a did not acquire")
	}
	c.Set(ctx, key, "intruder", 500*time.Millisecond)
	if hold(t, a) {
		t.Fatal("a still holds after its key was overwritten")
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl > 500*time.Millisecond {
		t.Fatalf("a extended the intruder's key: ttl %v", ttl)
	}
}

// TestRedisLeaseDown: without Redis, Hold says false with an error (stop publishing).
func TestRedisLeaseDown(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	l := NewRedis(c, testkit.Prefix(t)+"ticker:leader", "ticker-a", time.Second)
	if !hold(t, l) {
		t.Fatal("did not acquire")
	}
	srv.Kill()
	ok, err := l.Hold(context.Background())
	if ok || err == nil {
		t.Fatalf("Hold without Redis: %v, %v", ok, err)
	}
	srv.Restart() // empty: the lease is acquired again
	if !hold(t, l) {
		t.Fatal("did not reacquire after the restart")
	}
}

// TestRedisLeaseTTL checks the TTL arithmetic with miniredis's clock.
func TestRedisLeaseTTL(t *testing.T) {
	t.Parallel()
	mr, c := testkit.StartMiniredis(t)
	a := NewRedis(c, "ws:ticker:leader", "a", 5*time.Second)
	b := NewRedis(c, "ws:ticker:leader", "b", 5*time.Second)
	if !hold(t, a) {
		t.Fatal("a did not acquire")
	}
	if ttl := mr.TTL("ws:ticker:leader"); ttl != 5*time.Second {
		t.Fatalf("ttl %v", ttl)
	}
	mr.FastForward(4 * time.Second)
	if !hold(t, a) {
		t.Fatal("a lost on renewal")
	}
	if ttl := mr.TTL("ws:ticker:leader"); ttl != 5*time.Second {
		t.Fatalf("ttl after renewal %v", ttl)
	}
	mr.FastForward(4999 * time.Millisecond)
	if hold(t, b) {
		t.Fatal("b acquired before expiry")
	}
	mr.FastForward(time.Millisecond)
	if !hold(t, b) {
		t.Fatal("b did not acquire after expiry")
	}
	if hold(t, a) {
		t.Fatal("a still holds")
	}
}

// TestRedisLeaseRenewAfterError: a holder that missed a renewal (Redis unreachable for a
// moment) renews its still-valid key at the next Hold instead of waiting for it to expire.
func TestRedisLeaseRenewAfterError(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	a := NewRedis(c, "ws:ticker:leader", "a", 5*time.Second)
	if !hold(t, a) {
		t.Fatal("a did not acquire")
	}
	mr.SetError("LOADING Redis is loading the dataset in memory")
	if ok, err := a.Hold(context.Background()); ok || err == nil {
		t.Fatalf("Hold with Redis failing: %v, %v", ok, err)
	}
	mr.SetError("")
	if !hold(t, a) {
		t.Fatal("a did not renew its own key after the error")
	}
}

// TestRedisLeaseReadBack: a claim runs on the server but its answer never reaches the client
// (the link to Redis goes mute, the client times out). The holder must not guess: it reads the
// lease back (right away when it can, else at the next Hold) and finds it holds it.
//
// Fails before the read-back: the holder took the timeout for "not held", and its next SET NX
// failed on its own key, so nobody published until that key expired (LEASE_TTL).
func TestRedisLeaseReadBack(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	proxy := testkit.StartToxiproxy(t, srv.Addr())
	c := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1, ReadTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	key := testkit.Prefix(t) + "ticker:leader"
	l := NewRedis(c, key, "ticker-a", 5*time.Second)
	// A live pooled connection with the script loaded, so the claim itself goes out.
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	_ = holdScript.Load(context.Background(), c).Err()
	// Answers from Redis are swallowed: commands still arrive and run.
	proxy.Add(t, `{"name":"mute","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	ok, err := l.Hold(context.Background())
	if ok || err == nil {
		t.Fatalf("Hold with a mute link: %v, %v; want an error", ok, err)
	}
	if v := srv.Client().Get(context.Background(), key).Val(); v != "ticker-a" {
		t.Fatalf("the claim did not run on the server: key holds %q", v)
	}
	proxy.Remove(t, "mute") // the timed-out connections were dropped: the next Hold dials afresh
	if ok, err := l.Hold(context.Background()); !ok {
		t.Fatalf("Hold after the link came back: %v, %v; want held (its own key)", ok, err)
	}
}

// TestRedisLeaseClockCheck: with WithClock, a holder whose clock is off Redis TIME by more than
// the allowed skew gives the lease up and cannot take it; with a sound clock it holds, on a
// plain server and on a Cluster (where TIME and the lease script may go to different nodes).
func TestRedisLeaseClockCheck(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]redis.UniversalClient{
		"standalone": testkit.StartRedis(t).Client(),
		"cluster":    testkit.StartCluster(t).Client(),
	} {
		t.Run(name, func(t *testing.T) {
			var skew atomic.Int64
			now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
			key := testkit.HashTagPrefix(t) + "ticker:leader"
			m := metrics.New()
			a := NewRedis(c, key, "a", 5*time.Second, WithClock(now, 500*time.Millisecond), WithMetrics(m))
			b := NewRedis(c, key, "b", 5*time.Second, WithClock(time.Now, 500*time.Millisecond))
			if !hold(t, a) {
				t.Fatal("a with a sound clock did not take the lease")
			}
			skew.Store(int64(-time.Hour))
			if ok, err := a.Hold(context.Background()); ok || !errors.Is(err, ErrClockSkew) {
				t.Fatalf("a an hour behind: %v, %v; want false, ErrClockSkew", ok, err)
			}
			if off := testutil.ToFloat64(m.ClockOffset); off > -3500 {
				t.Fatalf("ticker_clock_offset_seconds = %v, want about -3600", off)
			}
			if !hold(t, b) {
				t.Fatal("b did not take the lease a gave up")
			}
			skew.Store(0)
			if hold(t, a) {
				t.Fatal("a took b's lease")
			}
		})
	}
}
