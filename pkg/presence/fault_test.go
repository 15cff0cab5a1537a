package presence

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestRedisOutOfMemoryNoSweep: Redis refuses writes (maxmemory 1, noeviction) while clients
// join, for longer than PRESENCE_TTL, so every heartbeat expires. Nobody may sweep then:
// ws:presence never loses an entry while its users are online, and once memory is freed it
// holds exactly the online connections.
//
// Fails before the sweep guard ("sweep only while your own heartbeat writes succeed"): DEL,
// SPOP and the sweep script still run under OOM, so the gateways swept each other and
// ws:presence went from 60 entries to 0 with 90 online.
func TestRedisOutOfMemoryNoSweep(t *testing.T) {
	t.Parallel()
	_, c, prefix := startPrefixed(t)
	ctx := context.Background()
	const ttl = 1500 * time.Millisecond
	var stores []*Redis
	for _, gw := range []string{"gw-a", "gw-b", "gw-c"} {
		s := newTestStore(t, c, prefix, gw, ttl, nil)
		for i := range 20 {
			s.Join(user(gw, i))
		}
		stores = append(stores, s)
	}
	testkit.Eventually(t, 3*time.Second, "60 joins", func() bool { return c.HLen(ctx, prefix+"presence").Val() == 60 })
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		for i := 20; i < 30; i++ {
			s.Join(user(s.id, i))
		}
	}
	start := time.Now()
	min := int64(60)
	for time.Since(start) < 4*ttl {
		n, err := c.HLen(ctx, prefix+"presence").Result()
		if err != nil {
			t.Fatal(err)
		}
		min = minInt(min, n)
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Set(ctx, prefix+"probe", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("Redis was not refusing writes: %v", err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if min < 60 {
		t.Fatalf("ws:presence fell to %d entries while Redis refused writes, with 90 online", min)
	}
	freed := time.Now()
	testkit.Eventually(t, 10*time.Second, "90 entries after memory is freed", func() bool {
		return c.HLen(ctx, prefix+"presence").Val() == 90
	})
	t.Logf("exact %v after memory was freed", time.Since(freed))
	testkit.Eventually(t, 2*time.Second, "heartbeats back", func() bool {
		return c.Exists(ctx, heartbeatKey(prefix, "gw-a"), heartbeatKey(prefix, "gw-b"), heartbeatKey(prefix, "gw-c")).Val() == 3
	})
	usersInStep(t, c, prefix)
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n := c.HLen(ctx, prefix+"presence").Val(); n != 90 {
			t.Fatalf("ws:presence has %d entries after recovery, want 90", n)
		}
	}
}

func minInt(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// alternating checks that each connection's events alternate join, leave, join, … starting
// with a join, that every join after the first is a rejoin, and returns how many connections
// ended with a leave.
func alternating(t *testing.T, evs []protocol.PresenceEvent) map[string][]string {
	t.Helper()
	seq := make(map[string][]string)
	for _, e := range evs {
		seq[e.ConnID] = append(seq[e.ConnID], e.Type+":"+e.Reason)
	}
	for id, s := range seq {
		for i, e := range s {
			want := protocol.EventJoin
			if i%2 == 1 {
				want = protocol.EventLeave
			}
			if !strings.HasPrefix(e, want+":") {
				t.Fatalf("%s: events %v do not alternate join/leave", id, s)
			}
			if i > 0 && want == protocol.EventJoin && e != protocol.EventJoin+":"+protocol.ReasonRejoined {
				t.Fatalf("%s: events %v: a join after a leave must be a rejoin", id, s)
			}
		}
	}
	return seq
}

// TestRedisBlackholedLinkRejoins: one gateway's link to Redis drops everything for longer than
// PRESENCE_TTL. Its users are swept (right: nobody can tell it from a dead gateway). When the
// link returns, within 10 s its connections are back in ws:presence with a join whose reason is
// "rejoined", so every conn_id's events alternate join/leave, and closing it later publishes
// exactly one more leave each.
//
// Fails before rejoin: the gateway wrote its connections back silently (no join) and its later
// drain published a second leave for each (join, leave gateway_lost, leave drained).
func TestRedisBlackholedLinkRejoins(t *testing.T) {
	t.Parallel()
	srv, c, prefix := startPrefixed(t)
	ctx := context.Background()
	const ttl = time.Second
	p := testkit.StartToxiproxy(t, srv.Addr())
	bc := redis.NewClient(&redis.Options{Addr: p.Addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1,
		ContextTimeoutEnabled: true})
	t.Cleanup(func() { bc.Close() })
	ev := subscribeEvents(t, c, prefix)
	a := newTestStore(t, c, prefix, "gw-a", ttl, nil)
	a.Join(user("gw-a", 0))
	b := newTestStore(t, bc, prefix, "gw-b", ttl, nil)
	const n = 20
	for i := range n {
		b.Join(user("gw-b", i))
	}
	testkit.Eventually(t, 3*time.Second, "joins", func() bool { return c.HLen(ctx, prefix+"presence").Val() == n+1 })

	heal := p.Blackhole(t)
	cut := time.Now()
	testkit.Eventually(t, 5*ttl, "gw-b swept", func() bool { return c.HLen(ctx, prefix+"presence").Val() == 1 })
	t.Logf("swept %v after the link went dark", time.Since(cut))
	time.Sleep(time.Until(cut.Add(3 * ttl)))
	heal()
	healed := time.Now()
	testkit.Eventually(t, 10*time.Second, "gw-b's connections back", func() bool {
		return c.HLen(ctx, prefix+"presence").Val() == n+1
	})
	t.Logf("rejoined %v after the link returned", time.Since(healed))
	usersInStep(t, c, prefix)
	evs := ev.wait(t, 1+3*n, 3*time.Second)
	seq := alternating(t, evs)
	for i := range n {
		id := user("gw-b", i).ConnID
		if want := []string{"join:", "leave:gateway_lost", "join:rejoined"}; fmt.Sprint(seq[id]) != fmt.Sprint(want) {
			t.Fatalf("%s: events %v, want %v", id, seq[id], want)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.Close(cctx); err != nil {
		t.Fatal(err)
	}
	seq = alternating(t, ev.wait(t, 1+4*n, 3*time.Second))
	for i := range n {
		if s := seq[user("gw-b", i).ConnID]; len(s) != 4 {
			t.Fatalf("events %v, want join, leave, join, leave", s)
		}
	}
}

// TestRedisRetryAfterLostReply: a batch whose reply was lost (applied, but the writer saw a
// timeout) is sent again. Nothing is published twice, and a join whose field a sweeper removed
// in between comes back as a "rejoined" join, so the conn_id's events still alternate.
//
// Fails before the shards' applied marks: the retried join was published as a plain join
// (TestRedisBlackholedLinkRejoins saw it once, when the black hole swallowed a reply).
func TestRedisRetryAfterLostReply(t *testing.T) {
	t.Parallel()
	c, prefix, ev := startWithEvents(t)
	ctx := context.Background()
	sweeper := newTestStore(t, c, prefix, "gw-sweeper", time.Minute, nil)
	r := newTestStore(t, c, prefix, "gw-r", time.Minute, nil)
	testkit.Eventually(t, 2*time.Second, "heartbeats", func() bool {
		return c.Exists(ctx, heartbeatKey(prefix, "gw-sweeper"), heartbeatKey(prefix, "gw-r")).Val() == 2
	})
	r.kill() // its writer stops: the test sends the batches itself
	u1, u2 := user("gw-r", 1), user("gw-r", 2)
	u1.Gateway, u2.Gateway = "gw-r", "gw-r"
	first := []change{{seq: 1, join: true, user: u1}}
	for range 2 { // the batch, then its retry with nothing changed: one join
		if _, err := r.flush(ctx, first); err != nil {
			t.Fatal(err)
		}
	}
	c.Del(ctx, heartbeatKey(prefix, "gw-r")) // its heartbeat lapses; it is swept
	if err := sweeper.sweepGateway(ctx, "gw-r"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.flush(ctx, first); err != nil { // the retry after the sweep
		t.Fatal(err)
	}
	if _, err := r.flush(ctx, []change{{seq: 2, join: true, user: u2}, {seq: 3, user: u2, reason: protocol.ReasonClosed}}); err != nil {
		t.Fatal(err)
	}
	seq := alternating(t, ev.wait(t, 5, 2*time.Second))
	if got := fmt.Sprint(seq[u1.ConnID]); got != "[join: leave:gateway_lost join:rejoined]" {
		t.Fatalf("%s: %s", u1.ConnID, got)
	}
	if got := fmt.Sprint(seq[u2.ConnID]); got != "[join: leave:closed]" {
		t.Fatalf("%s: %s", u2.ConnID, got)
	}
	usersInStep(t, c, prefix)
}
