package presence

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/metrics"
)

// TestRedisWriteFailureStreak: while Redis is down the writer retries, counts every failure,
// logs one line when the streak starts and one when it ends (with the count and the error),
// and WriteFailingSince says since when.
func TestRedisWriteFailureStreak(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
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
