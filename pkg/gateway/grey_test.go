package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/lease"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
	"github.com/wsgw/wsgw/pkg/tick"
)

// startClusterGateway starts a cluster-mode gateway (Redis broker, client built as the program
// builds it) talking to Redis at addr, on a real socket. Presence stays in memory: these tests
// are about ticks and readiness.
func startClusterGateway(t *testing.T, addr, prefix string) *testGateway {
	t.Helper()
	client, err := config.Redis{URL: "redis://" + addr + "/0"}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	log := slog.New(slog.DiscardHandler)
	b := broker.NewRedis(client, broker.RedisOptions{Prefix: prefix, Logger: log, Metrics: m})
	t.Cleanup(func() { // after the drain
		b.Close()
		client.Close()
	})
	srv := NewServer(log, m, b, presence.NewMemory(), Options{ID: "gw-grey"})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	hs := serve(t, srv)
	return &testGateway{srv: srv, m: m, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}
}

// runTicker publishes ticks through Redis at addr with a lease (as the ticker program does),
// on the clock now, until the test ends.
func runTicker(t *testing.T, addr, prefix, id string, now func() time.Time) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	b := broker.NewRedis(c, broker.RedisOptions{Prefix: prefix, Logger: slog.New(slog.DiscardHandler)})
	l := lease.NewRedis(c, rediskey.New(prefix).TickerLeader(), id, 5*time.Second, lease.WithClock(now, 500*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tick.Run(ctx, b.Publish, tick.Options{Lease: l, Logger: slog.New(slog.DiscardHandler), Now: now})
	}()
	t.Cleanup(func() { cancel(); <-done; b.Close(); c.Close() })
}

// collectTicks reads c's ticks in the background until the test ends.
func collectTicks(t *testing.T, c *websocket.Conn) func() []int64 {
	var mu sync.Mutex
	var seqs []int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if f, err := protocol.Decode(b); err == nil && f.Type == protocol.TypeTime {
				mu.Lock()
				seqs = append(seqs, f.Seq)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seqs)
	}
}

// TestReadyzLines: /readyz lists one line per check; with Redis gone it turns 503 within the
// 3 s unreachable threshold (plus a check interval) and says since when, answering at once.
func TestReadyzLines(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	g := startClusterGateway(t, srv.Addr(), testkit.Prefix(t))
	get := func() (int, string, time.Duration) {
		start := time.Now()
		code, body := readyz(t, g)
		return code, body, time.Since(start)
	}
	if code, body, _ := get(); code != http.StatusOK || body != "ready\nredis ok\nsubscription ok\n" {
		t.Fatalf("/readyz %d %q", code, body)
	}
	srv.Kill()
	killed := time.Now()
	var body string
	var code int
	var slowest time.Duration
	var answers, slow int
	for code != http.StatusServiceUnavailable && time.Since(killed) < 10*time.Second {
		var took time.Duration
		code, body, took = get()
		slowest = max(slowest, took)
		answers++
		if took > 100*time.Millisecond {
			slow++
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := time.Since(killed)
	t.Logf("Redis killed: /readyz 503 after %v, slowest answer %v: %q", after.Round(time.Millisecond), slowest, body)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "redis unreachable since ") {
		t.Fatalf("/readyz %d %q with Redis down", code, body)
	}
	if after < 2500*time.Millisecond || after > 5*time.Second {
		t.Errorf("503 after %v, want about 3 s (no round trip for 3 s)", after)
	}
	// Every answer comes from state, so it takes the HTTP round trip alone: within 100 ms.
	// The test process itself may be descheduled on a loaded two-core machine under -race, so
	// one answer in ten may be late, but none by the seconds a Redis round trip would take.
	if slow*10 > answers || slowest > time.Second {
		t.Errorf("%d of %d /readyz answers over 100 ms, slowest %v: want within 100 ms", slow, answers, slowest)
	}
}

// TestRedisLatencyStaysReady: Redis answers the gateway 1–2 s late for 20 s (Toxiproxy latency
// between gateway and Redis). Redis is slow, not unreachable: /readyz stays 200 throughout and
// answers within 100 ms, from state.
//
// Fails before readiness came from a background checker: /readyz made a GET to Redis on the
// request path, took 1–2 s to answer, and answered 503 whenever the GET passed its 2 s bound;
// HAProxy's 1 s check took every gateway out.
func TestRedisLatencyStaysReady(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	proxy := testkit.StartToxiproxy(t, srv.Addr())
	prefix := testkit.Prefix(t)
	g := startClusterGateway(t, proxy.Addr(), prefix)
	runTicker(t, srv.Addr(), prefix, "ticker", time.Now)
	c, _ := g.dial(t, "ana")
	ticks := collectTicks(t, c)
	testkit.Eventually(t, 5*time.Second, "ticks", func() bool { return len(ticks()) >= 2 })

	proxy.Latency(t, 1500*time.Millisecond, 500*time.Millisecond)
	hc := &http.Client{Timeout: time.Second} // HAProxy's check timeout
	const period, poll = 20 * time.Second, 200 * time.Millisecond
	var unready, slow, polls int
	var slowest, unreadyFor time.Duration // unreadyFor: each failed poll counts until the next
	for end := time.Now().Add(period); time.Now().Before(end); time.Sleep(poll) {
		polls++
		start := time.Now()
		resp, err := hc.Get(g.http.URL + "/readyz")
		took := time.Since(start)
		slowest = max(slowest, took)
		if took > 100*time.Millisecond {
			slow++
		}
		if err != nil {
			unready++
			unreadyFor += took + poll
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			unready++
			unreadyFor += took + poll
			t.Logf("/readyz %d after %v: %s", resp.StatusCode, took, body)
		}
	}
	proxy.Remove(t, "latency")
	t.Logf("Redis 1–2 s late for %v: %d/%d /readyz polls unready (%.1f s), slowest answer %v, %d over 100 ms; %d ticks delivered",
		period, unready, polls, unreadyFor.Seconds(), slowest.Round(time.Millisecond), slow, len(ticks()))
	if unready > 0 {
		t.Errorf("seconds unready = %.1f, want 0", unreadyFor.Seconds())
	}
	if slow > polls/100 || slowest > time.Second {
		t.Errorf("/readyz over 100 ms %d times of %d (slowest %v), want within 100 ms", slow, polls, slowest)
	}
}

// TestFutureTicksDoNotSilence: one PUBLISH on the tick channel with a seq an hour ahead, then
// the leading ticker's clock jumps an hour ahead and back. Clients keep getting every tick
// (the rogue one aside), and the gateway counts what it refused.
//
// Fails before gateways refused ticks from the future: the rogue seq became the dedupe mark
// and every later tick was dropped, for the whole hour.
func TestFutureTicksDoNotSilence(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	prefix := testkit.Prefix(t)
	g := startClusterGateway(t, srv.Addr(), prefix)
	var skew atomic.Int64
	leaderClock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	runTicker(t, srv.Addr(), prefix, "leader", leaderClock)
	c, _ := g.dial(t, "ana")
	ticks := collectTicks(t, c)
	testkit.Eventually(t, 5*time.Second, "ticks", func() bool { return len(ticks()) >= 1 })
	runTicker(t, srv.Addr(), prefix, "standby", time.Now)
	time.Sleep(2 * time.Second)

	rogue := protocol.TickSeq(time.Now().Add(time.Hour), time.Second)
	if err := srv.Client().Publish(context.Background(), rediskey.New(prefix).Time(), protocol.TimeFrame(rogue, time.Second)).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	skew.Store(int64(time.Hour))
	time.Sleep(3 * time.Second)
	skew.Store(0)
	time.Sleep(3 * time.Second)

	got := ticks()
	var lost int
	for i := 1; i < len(got); i++ {
		if got[i] >= rogue || got[i] <= got[i-1] {
			t.Fatalf("client got seq %d after %d: %v", got[i], got[i-1], got)
		}
		lost += int(got[i] - got[i-1] - 1)
	}
	now := protocol.TickSeq(time.Now(), time.Second)
	if len(got) == 0 || got[len(got)-1] < now-2 {
		t.Fatalf("ticks stopped: last seq %v, now %d", got, now)
	}
	rejected := testutil.ToFloat64(g.m.TicksRejected.WithLabelValues("future"))
	t.Logf("rogue tick 1 h ahead and a leader +1 h and back: %d ticks delivered, %d lost, %v refused as future", len(got), lost, rejected)
	// Each lease hand-over (the leader steps aside when its clock jumps, the standby takes the
	// free lease at its next tick, and back) may cost a tick or two; a full CI run under -race
	// saw 3. The old code lost every tick for the hour.
	if lost > 4 {
		t.Errorf("%d ticks lost, want at most 4 (two lease hand-overs, one each way)", lost)
	}
	if rejected < 1 {
		t.Errorf("ticks_rejected_total{reason=future} = %v, want ≥ 1", rejected)
	}
}
