package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Redis failing under a running cluster: restarted empty, slow, its pub/sub connection cut,
// the subscription wedged or deaf.

// TestRedisRestartEmpty: Redis killed and restarted empty, with clients dialed to each gateway
// and redialing clients through HAProxy. WebSockets do not go through Redis: every client keeps
// its socket (none reconnects). /readyz answers 503 while Redis is down, and within 10 s of the
// restart (PROTOCOL.md) ws:presence holds exactly the live connections again (written back
// without join events), the heartbeats and ws:gateways are back and ticks flow again.
func TestRedisRestartEmpty(t *testing.T) {
	c := startCluster(t, localcluster.Options{Gateways: 3, Tickers: 2})
	rc := c.RedisClient()
	var clients []*client
	for gi, g := range c.Gateways {
		clients = append(clients, dial(t, g.Addr, fmt.Sprintf("r%d-a", gi+1)), dial(t, g.Addr, fmt.Sprintf("r%d-b", gi+1)))
	}
	clients = append(clients, startClients(t, c.LBAddr, "rr", 12, true, 20*time.Second)...)
	ids := connIDs(clients...)
	gateways, live := gatewayIDs(c), liveConns(nil, clients)
	waitFor(t, 10*time.Second, "every connection in ws:presence", func() error {
		return presenceMatches(rc, live, gateways, len(clients))
	})
	for _, cl := range clients {
		cl.waitTicks(10*time.Second, 2)
	}

	// Outage: /readyz must say 503 on every gateway while Redis is down.
	down := time.Now()
	if err := c.Redis.Kill(); err != nil {
		t.Fatal(err)
	}
	lastBefore := int64(0)
	for _, cl := range clients {
		lastBefore = max(lastBefore, cl.lastSeq())
	}
	for _, g := range c.Gateways {
		var took time.Duration
		waitFor(t, 10*time.Second, g.ID+" /readyz 503 while Redis is down", func() error {
			asked := time.Now()
			code := httpStatus(g.Addr, "/readyz")
			took = time.Since(asked)
			if code != http.StatusServiceUnavailable {
				return fmt.Errorf("/readyz %d", code)
			}
			return nil
		})
		if code := httpStatus(g.Addr, "/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz %d while Redis is down, want 200", g.ID, code)
		}
		t.Logf("%s: /readyz 503 while Redis is down (that answer took %v)", g.ID, took.Round(time.Millisecond))
	}
	clients[0].fibRoundTrip(5*time.Second, 90, "during-outage") // Fibonacci needs no Redis

	// Hold every write (HSET, PUBLISH, EVAL) of the gateways and tickers from the first instant
	// of the new Redis until this test's subscription to the events is confirmed, so a join
	// published by the write-back could not slip by unseen. go-redis clients redial about once
	// a second after repeated failures; this raw connection tries every 2 ms.
	paused := make(chan pauseResult, 1)
	go func() { paused <- pauseWrites(c.RedisAddr, 30*time.Second) }()
	if err := c.RestartRedisEmpty(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	t.Logf("Redis down for %v", up.Sub(down).Round(time.Millisecond))
	pr := <-paused
	if pr.err != nil {
		t.Fatalf("CLIENT PAUSE: %v", pr.err)
	}
	defer pr.conn.Close()
	early, err := rc.DBSize(bg).Result()
	if err != nil {
		t.Fatal(err)
	}
	if early != 0 { // a writer hit the first 2 ms: the no-join check below covers less
		t.Logf("note: %d keys were written before CLIENT PAUSE took effect", early)
	}
	events := subscribeEvents(t, rc, keys.Events())
	if err := pr.command("CLIENT UNPAUSE"); err != nil {
		t.Fatalf("CLIENT UNPAUSE: %v", err)
	}

	gwIDs := sortedKeys(gateways)
	waitFor(t, 10*time.Second-time.Since(up), "presence, heartbeats and ws:gateways back", func() error {
		if err := presenceMatches(rc, live, gateways, len(ids)); err != nil {
			return err
		}
		for _, id := range gwIDs {
			if n, err := rc.Exists(bg, keys.Heartbeat(id)).Result(); err != nil || n != 1 {
				return fmt.Errorf("heartbeat of %s: EXISTS %d (%v)", id, n, err)
			}
		}
		if m, err := rc.SMembers(bg, keys.Gateways()).Result(); err != nil || !slices.Equal(sorted(m), sorted(gwIDs)) {
			return fmt.Errorf("ws:gateways %v (%v)", m, err)
		}
		return nil
	})
	presenceBack := time.Since(up)
	var ticksBack time.Duration
	for _, cl := range clients {
		f := cl.waitTick(10*time.Second-time.Since(up), lastBefore+1)
		ticksBack = max(ticksBack, f.At.Sub(up))
	}
	for _, g := range c.Gateways {
		waitFor(t, 10*time.Second, g.ID+" /readyz 200 again", readyzIs(g.Addr, http.StatusOK))
	}
	measure(t, "redis_restart_empty", "presence of %d connections written back %v, ticks resumed %v after the restart; /readyz 200 by %v",
		len(ids), presenceBack.Round(time.Millisecond), ticksBack.Round(time.Millisecond), time.Since(up).Round(time.Millisecond))

	// The same sockets: open all along, and serving.
	for i, cl := range clients {
		if err := cl.lastErr(); err != nil || len(cl.history()) != 1 {
			t.Errorf("client %s lost its socket (%d connections): %v", cl.user, len(cl.history()), err)
			continue
		}
		cl.fibRoundTrip(5*time.Second, 50+i, fmt.Sprintf("after-restart-%d", i))
		checkTicks(t, cl, func(prev, next frame) bool { return !prev.At.After(up) && next.At.After(down) })
	}

	time.Sleep(1500 * time.Millisecond) // events are published within 1 s of a change
	if evs := events.all(); len(evs) != 0 {
		t.Errorf("events after the restart, want none (the write-back publishes nothing): %+v", evs)
	}
	if bad := events.invalid(); len(bad) != 0 {
		t.Errorf("malformed presence events: %q", bad)
	}
}

// pauseResult is the connection that paused the writes, to unpause them with.
type pauseResult struct {
	conn net.Conn
	err  error
}

func (p pauseResult) command(cmd string) error {
	_ = p.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.conn.Write([]byte(cmd + "\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(p.conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("%s: %q", cmd, line)
	}
	return nil
}

// pauseWrites dials addr every 2 ms until it answers, then sends CLIENT PAUSE 3000 WRITE (an
// inline command) on that connection.
func pauseWrites(addr string, timeout time.Duration) pauseResult {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			p := pauseResult{conn: conn}
			if p.err = p.command("CLIENT PAUSE 3000 WRITE"); p.err != nil {
				conn.Close()
			}
			return p
		}
		if time.Now().After(deadline) {
			return pauseResult{err: err}
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestSlowRedisKeepsBackend: Redis answers 1–2 s late for 20 s (Toxiproxy between the
// cluster and Redis). Slow is not unreachable: every gateway stays ready, so HAProxy keeps its
// servers and /readyz through the load balancer answers 200 throughout.
//
// Fails before /readyz answered from state: each gateway's /readyz waited on a Redis GET
// bounded at 2 s against HAProxy's 1 s check, every gateway was marked down, and HAProxy
// refused new connections for most of the slow period.
func TestSlowRedisKeepsBackend(t *testing.T) {
	srv := testkit.StartRedis(t)
	proxy := testkit.StartToxiproxy(t, srv.Addr())
	c := startCluster(t, localcluster.Options{RedisURL: "redis://" + proxy.Addr() + "/0"})

	proxy.Latency(t, 1500*time.Millisecond, 500*time.Millisecond)
	hc := &http.Client{Timeout: 2 * time.Second}
	const period, poll = 20 * time.Second, 250 * time.Millisecond
	var polls, failed int
	var unready time.Duration
	for end := time.Now().Add(period); time.Now().Before(end); time.Sleep(poll) {
		polls++
		start := time.Now()
		resp, err := hc.Get("http://" + c.LBAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			failed++
			unready += time.Since(start) + poll
		}
	}
	proxy.Remove(t, "latency")
	measure(t, "slow Redis (1–2 s) for 20 s, seconds without a ready gateway behind HAProxy", "%.1f s (%d of %d polls)", unready.Seconds(), failed, polls)
	if failed > 0 {
		t.Errorf("HAProxy had no ready gateway for %.1f s of %v (%d of %d polls), want 0", unready.Seconds(), period, failed, polls)
	}
}

// TestSubscriptionDeaf: a subscription that is up but hears nothing, made genuinely: the
// gateway reaches Redis through a TCP proxy that, on demand, keeps the subscriber's connection
// open but drops everything Redis sends on it (a half-dead path, which go-redis's health check
// does not notice: its pings are written fine). The ticker goes on publishing and moving
// ws:ticker:last, so the gateway's own canary must catch it without anyone polling /readyz: a
// new subscription and ticks at the client again.
func TestSubscriptionDeaf(t *testing.T) {
	binDir(t) // skips under -short before Redis is started
	srv := testkit.StartRedis(t)
	px := testkit.StartDeafProxy(t, srv.Addr())
	c := startCluster(t, localcluster.Options{Gateways: 1, Tickers: 1, NoLB: true, RedisURL: "redis://" + px.Addr() + "/0"})
	g := c.Gateways[0]
	cl := dial(t, g.Addr, "deaf")
	cl.waitTicks(10*time.Second, 2)

	if n := px.Deafen(); n != 1 {
		t.Fatalf("%d subscriber connections through the proxy, want 1", n)
	}
	deafened := time.Now()
	before := cl.lastSeq()
	// Nobody asks /readyz: the gateway's own canary (every 2 s) must notice within a few
	// seconds and resubscribe, and ticks reach the client again.
	f := cl.waitTick(15*time.Second, max(before, seqNow()))
	recovered := f.At
	t.Logf("deaf subscription, /readyz never polled: ticks back after %v (seq %d → %d)",
		recovered.Sub(deafened).Round(time.Millisecond), before, f.Seq)
	if !logHas(t, g.LogPath(), "subscription wedged") {
		t.Errorf("the gateway log does not mention the wedged subscription")
	}
	if code := httpStatus(g.Addr, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d after the recovery, want 200", code)
	}
	cl.waitTick(5*time.Second, f.Seq+1)
	checkTicks(t, cl, func(prev, next frame) bool { return !prev.At.After(recovered) && next.At.After(deafened) })
}

// TestSubscriptionLostAndWedged: a subscription cut by Redis (CLIENT KILL TYPE pubsub) comes
// back by itself (go-redis reconnects): ticks resume and /readyz is 200. A subscription that is
// up but deaf (ws:ticker:last moving ahead with no tick arriving) makes /readyz answer 503 and
// resubscribe, after which it is 200 again and ticks flow. A stopped ticker alone never makes
// the gateway unready.
func TestSubscriptionLostAndWedged(t *testing.T) {
	c := startCluster(t, localcluster.Options{Gateways: 1, Tickers: 1, NoLB: true})
	rc := c.RedisClient()
	g, tk := c.Gateways[0], c.Tickers[0]
	cl := dial(t, g.Addr, "wedge")
	cl.waitTicks(10*time.Second, 2)
	reconnects0 := metric(t, g.Addr, "pubsub_reconnects_total")

	// 1. Redis drops the subscriber's connection.
	killed := time.Now()
	n, err := rc.Do(bg, "CLIENT", "KILL", "TYPE", "pubsub").Int64()
	if err != nil || n < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d (%v), want ≥ 1 connection killed", n, err)
	}
	before := cl.lastSeq()
	f := cl.waitTick(10*time.Second, max(before, seqNow()))
	resumed := f.At.Sub(killed)
	ready := waitFor(t, 5*time.Second, "/readyz 200 after the pub/sub connection was killed", readyzIs(g.Addr, http.StatusOK))
	waitFor(t, 5*time.Second, "pubsub_reconnects_total counts it", func() error {
		if got := metric(t, g.Addr, "pubsub_reconnects_total"); got <= reconnects0 {
			return fmt.Errorf("pubsub_reconnects_total %v (was %v)", got, reconnects0)
		}
		return nil
	})
	t.Logf("CLIENT KILL TYPE pubsub (%d connection): next tick after %v (seq %d → %d), /readyz 200 within %v",
		n, resumed.Round(time.Millisecond), before, f.Seq, ready.Round(time.Millisecond))

	// 2. The ticker stops: the gateway stays ready.
	if err := tk.Term(5 * time.Second); err != nil {
		t.Fatalf("SIGTERM ticker: %v", err)
	}
	lastTick := cl.lastSeq()
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if code := httpStatus(g.Addr, "/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz %d with the ticker stopped, want 200 (a stopped ticker alone never makes gateways unready)", code)
		}
	}

	// 3. A deaf subscription: ws:ticker:last runs ahead of every tick the gateway got, as if
	// the ticker went on publishing (it publishes before it sets ws:ticker:last) and the
	// gateway heard nothing. The gateway's own canary (every 2 s, whether or not anyone polls
	// /readyz) must see it and resubscribe; the value seen at the resubscription then counts,
	// so /readyz is 200 afterwards. A /readyz polled inside the window answers 503: the broker
	// tests pin that; here the point is that the process heals itself.
	ahead := lastTick + 100
	if err := rc.Set(bg, keys.TickerLast(), ahead, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	healed := waitFor(t, 10*time.Second, "the gateway to notice the wedged subscription by itself", func() error {
		if !logHas(t, g.LogPath(), "subscription wedged") {
			return errors.New("not yet")
		}
		return nil
	})
	for range 5 { // and /readyz is 200 from then on
		if code := httpStatus(g.Addr, "/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz %d after the resubscription, want 200 (the value at resubscription counts)", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("ws:ticker:last set 100 ahead: noticed and resubscribed after %v without any /readyz poll", healed.Round(time.Millisecond))

	// 4. The ticker comes back: ticks flow through the new subscription, seq continuing.
	if err := tk.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	f = cl.waitTick(10*time.Second, lastTick)
	t.Logf("ticker restarted: ticks resumed after %v (seq %d → %d)", f.At.Sub(restarted).Round(time.Millisecond), lastTick, f.Seq)
	cl.waitTick(5*time.Second, f.Seq+1)
	if code := httpStatus(g.Addr, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d with the ticker back, want 200", code)
	}
	checkTicks(t, cl, func(prev, next frame) bool { return true }) // never a repeat or a step back
	if err := cl.lastErr(); err != nil {
		t.Errorf("socket closed: %v", err)
	}
}

// seqNow is the seq of the tick standing for now.
func seqNow() int64 { return protocol.TickSeq(time.Now(), tickInterval) }
