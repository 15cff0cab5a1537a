package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
)

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
