package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// A process of the cluster lost: a gateway killed or drained, HAProxy killed, the ticker that
// holds the lease killed or stopped.

// TestGatewayKilledAndDrained: three gateways behind HAProxy, with real `client` programs and
// redialing in-process clients through HAProxy, and clients dialed to each gateway directly.
//
// SIGKILL of one gateway: its clients reconnect through HAProxy to the others; the others sweep
// it within 2 × PRESENCE_TTL, with exactly one gateway_lost leave per connection and its id gone
// from ws:gateways; ws:presence then holds exactly the live connections.
//
// SIGTERM of another: by the time it has exited it has removed its fields (drained leaves) and
// its heartbeat, and closed its sockets with 1001 and a retry_ms.
func TestGatewayKilledAndDrained(t *testing.T) {
	c := startCluster(t, localcluster.Options{Gateways: 3, Tickers: 2})
	rc := c.RedisClient()

	// One real client per gateway: leastconn sends each new one to an empty gateway.
	var terms []*termClient
	for i := range 3 {
		tc := startTermClient(t, c.LBAddr, fmt.Sprintf("term%d", i))
		tc.waitWelcomes(t, 1, 15*time.Second)
		terms = append(terms, tc)
	}
	cs := startClients(t, c.LBAddr, "kill", 27, true, 20*time.Second)

	dead := c.GatewayByID(terms[0].welcomes()[0].Gateway)
	if dead == nil {
		t.Fatalf("welcome names gateway %q, not one of the cluster's", terms[0].welcomes()[0].Gateway)
	}
	var drained, survivor *localcluster.Gateway
	for _, g := range c.Gateways {
		switch {
		case g == dead:
		case drained == nil:
			drained = g
		default:
			survivor = g
		}
	}
	deadCls := []*client{dial(t, dead.Addr, "lost-a"), dial(t, dead.Addr, "lost-b"), dial(t, dead.Addr, "lost-c")}
	drainCls := []*client{dial(t, drained.Addr, "drain-a"), dial(t, drained.Addr, "drain-b")}
	stay := dial(t, survivor.Addr, "stay")
	direct := append(append(append([]*client{}, deadCls...), drainCls...), stay)

	var victimTerms []*termClient
	for _, tc := range terms {
		if tc.welcomes()[0].Gateway == dead.ID {
			victimTerms = append(victimTerms, tc)
		}
	}
	var victimClients []*client
	for _, cl := range cs {
		if cl.current().Gateway == dead.ID {
			victimClients = append(victimClients, cl)
		}
	}
	lost := refs(deadCls...)
	for _, tc := range victimTerms {
		lost = append(lost, tc.welcomes()[0])
	}
	for _, cl := range victimClients {
		lost = append(lost, connRef{cl.current().ID, cl.user, dead.ID})
	}
	all := append(append([]*client{}, cs...), direct...)
	// Join is written to Redis asynchronously (a socket never waits for Redis), so a welcome can
	// precede its HSET by a round trip. Kill only once every connection is in ws:presence: an
	// entry the victim never wrote cannot be swept, and would have no leave event to check.
	waitFor(t, 10*time.Second, "presence before the kill", func() error {
		return presenceMatches(rc, liveConns(terms, all), gatewayIDs(c), len(terms)+len(all))
	})
	events := subscribeEvents(t, rc, keys.Events())
	if len(victimClients) == 0 {
		t.Fatalf("no in-process client of HAProxy on %s", dead.ID)
	}
	t.Logf("killing %s (pid %d) with %d real, %d in-process and %d direct clients", dead.ID, dead.Pid(),
		len(victimTerms), len(victimClients), len(deadCls))

	// SIGKILL: nobody cleans up but the sweep.
	killed := time.Now()
	if err := dead.Kill(); err != nil {
		t.Fatal(err)
	}

	// Every client of HAProxy on the victim reconnects to another gateway.
	var slowest time.Duration
	for _, tc := range victimTerms {
		ws := tc.waitWelcomes(t, 2, 20*time.Second)
		if g := ws[1].Gateway; g == dead.ID || c.GatewayByID(g) == nil {
			t.Errorf("client %s reconnected to %q, want another live gateway", tc.user, g)
		}
		slowest = max(slowest, time.Since(killed)) // an upper bound: output is polled
	}
	measure(t, "kill9_term_reconnect", "real clients of the killed gateway reconnected within %v", slowest.Round(time.Millisecond))
	waitFor(t, 20*time.Second, "the in-process clients of the killed gateway reconnected", func() error {
		for _, cl := range victimClients {
			if cur := cl.current(); cur == nil || cur.Gateway == dead.ID {
				return fmt.Errorf("%s not reconnected (last error %v)", cl.user, cl.lastErr())
			}
		}
		return nil
	})
	slowest = 0
	for _, cl := range victimClients {
		slowest = max(slowest, cl.current().Welcomed.Sub(killed))
	}
	measure(t, "kill9_reconnect", "%d in-process clients of the killed gateway reconnected within %v", len(victimClients), slowest.Round(time.Millisecond))

	bound := 2*presenceTTL + time.Second
	swept := waitFor(t, bound, "fields of the killed gateway swept", func() error {
		return hasNone(presence(t, rc, keys.Presence()), connIDs(deadCls...))
	})
	waitFor(t, bound-time.Since(killed), "killed gateway out of ws:gateways", func() error {
		if ok, err := rc.SIsMember(bg, keys.Gateways(), dead.ID).Result(); err != nil || ok {
			return fmt.Errorf("still a member (%v)", err)
		}
		return nil
	})
	t.Logf("SIGKILL of %s: its %d direct fields swept after %v (bound %v), ws:gateways done by %v",
		dead.ID, len(deadCls), swept.Round(time.Millisecond), bound, time.Since(killed).Round(time.Millisecond))
	// Presence converges to exactly the live connections.
	liveGateways := gatewayIDs(c)
	delete(liveGateways, dead.ID)
	live := append(append([]*client{}, cs...), drainCls...)
	live = append(live, stay)
	exact := 2*presenceTTL + 5*time.Second
	waitFor(t, exact-time.Since(killed), "presence exact after the kill", func() error {
		return presenceMatches(rc, liveConns(terms, live), liveGateways, len(terms)+len(live))
	})
	measure(t, "kill9_presence", "ws:presence exact (%d live, none on %s) %v after the kill (bound 2×PRESENCE_TTL+5s = %v, PRESENCE_TTL %v)",
		len(terms)+len(live), dead.ID, time.Since(killed).Round(time.Millisecond), exact, presenceTTL)
	// Exactly one leave per lost connection, reason gateway_lost, however many gateways swept.
	events.checkLeaves(t, protocol.ReasonGatewayLost, 5*time.Second, lost...)
	for _, cl := range deadCls {
		cl.waitClosed(5 * time.Second)
	}

	// SIGTERM: the gateway drains and cleans up before it exits.
	termed := time.Now()
	if err := drained.Term(shutdownTimeout + 5*time.Second); err != nil {
		t.Fatalf("SIGTERM %s: %v", drained.ID, err)
	}
	exitedAfter := time.Since(termed)
	if err := hasNone(presence(t, rc, keys.Presence()), connIDs(drainCls...)); err != nil {
		t.Errorf("after %s exited: %v", drained.ID, err)
	}
	if n, err := rc.Exists(bg, keys.Heartbeat(drained.ID)).Result(); err != nil || n != 0 {
		t.Errorf("heartbeat of %s after it exited: EXISTS %d (%v)", drained.ID, n, err)
	}
	if ok, err := rc.SIsMember(bg, keys.Gateways(), drained.ID).Result(); err != nil || ok {
		t.Errorf("%s still in ws:gateways after it exited (%v)", drained.ID, err)
	}
	t.Logf("SIGTERM of %s: exited after %v, fields and heartbeat already gone", drained.ID, exitedAfter.Round(time.Millisecond))
	events.checkLeaves(t, protocol.ReasonDrained, 2*time.Second, refs(drainCls...)...)
	for _, cl := range drainCls {
		cl.waitClosed(2 * time.Second)
		err := cl.lastErr()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseGoingAway {
			t.Errorf("%s: closed with %v, want 1001", cl.user, err)
		} else if d, ok := protocol.ParseRetry(ce.Reason); !ok || d > 5*time.Second {
			t.Errorf("%s: 1001 reason %q, want {\"retry_ms\":0..5000}", cl.user, ce.Reason)
		}
	}

	// Let one more sweep round pass: still exactly one leave per connection, none for the
	// survivor, and nothing malformed.
	time.Sleep(presenceTTL/3 + 500*time.Millisecond)
	events.checkLeaves(t, protocol.ReasonGatewayLost, 0, lost...)
	events.checkLeaves(t, protocol.ReasonDrained, 0, refs(drainCls...)...)
	if evs := events.about(connIDs(stay)); len(evs) != 0 {
		t.Errorf("events about the survivor's connection: %+v", evs)
	}
	if bad := events.invalid(); len(bad) != 0 {
		t.Errorf("malformed presence events: %q", bad)
	}
	if got := events.about(connIDs(direct...)); len(got) != len(deadCls)+len(drainCls) {
		t.Errorf("%d events about the direct clients, want %d: %+v", len(got), len(deadCls)+len(drainCls), got)
	}
	hash := presence(t, rc, keys.Presence())
	if hasNone(hash, connIDs(deadCls...)) != nil || hasNone(hash, connIDs(drainCls...)) != nil || hasAll(hash, connIDs(stay)) != nil {
		t.Errorf("ws:presence after both: %v, want %s and none of the killed or drained direct clients", hash, stay.welcome.ConnID)
	}
	if err := stay.lastErr(); err != nil {
		t.Errorf("survivor's socket closed: %v", err)
	}
}

// TestHAProxyKill9: the load balancer dies. Every client loses its socket; the gateways notice
// (the kernel closes HAProxy's sockets) and empty ws:presence; once HAProxy is back the clients
// reconnect and presence is exact again.
func TestHAProxyKill9(t *testing.T) {
	c := startCluster(t, localcluster.Options{})
	const n = 20
	cs := startClients(t, c.LBAddr, "lb", n, true, 20*time.Second)
	rc := c.RedisClient()
	gateways := gatewayIDs(c)
	// A welcome can precede its HSET (written asynchronously): kill only once every connection
	// is listed, so that an empty ws:presence below means the gateways removed them.
	waitFor(t, 10*time.Second, "presence before the kill", func() error {
		return presenceMatches(rc, liveConns(nil, cs), gateways, n)
	})

	killed := time.Now()
	if err := c.LB.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ws:presence empty with the load balancer dead", func() error {
		if got, err := rc.HLen(bg, keys.Presence()).Result(); err != nil || got != 0 {
			return fmt.Errorf("HLEN ws:presence = %d (%v), want 0", got, err)
		}
		return nil
	})
	measure(t, "haproxy_kill9_presence", "ws:presence emptied %v after HAProxy died (%d clients)", time.Since(killed).Round(time.Millisecond), n)
	time.Sleep(time.Second) // clients are retrying meanwhile
	restarted := time.Now()
	if err := c.LB.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "every client reconnected", func() error {
		for _, cl := range cs {
			if cur := cl.current(); cur == nil || cur.Welcomed.Before(restarted) {
				return fmt.Errorf("%s not reconnected (last error %v)", cl.user, cl.lastErr())
			}
		}
		return nil
	})
	measure(t, "haproxy_restart_reconnect", "all %d clients reconnected %v after HAProxy restarted (client backoff up to 2 s)", n, time.Since(restarted).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "presence exact again", func() error {
		return presenceMatches(rc, liveConns(nil, cs), gateways, n)
	})
}

// TestTickerFailover, with the default LEASE_TTL: the lease holder killed with SIGKILL is replaced within LEASE_TTL + 1 s;
// the holder stopped with SIGTERM releases the lease and is replaced at the standby's next tick.
// At the clients (two dialed to gateways, three redialing through HAProxy) seq never repeats
// and never goes back, no client reconnects, and every gateway forwards the same ticks.
func TestTickerFailover(t *testing.T) {
	leaseTTL := defaultLeaseTTL // the figure README.md's failure table quotes
	c := startCluster(t, localcluster.Options{Gateways: 3, Tickers: 2, Env: []string{"LEASE_TTL=" + leaseTTL.String()}})
	rc := c.RedisClient()
	a, b := dial(t, c.Gateways[0].Addr, "tf-a"), dial(t, c.Gateways[1].Addr, "tf-b")
	clients := append([]*client{a, b}, startClients(t, c.LBAddr, "tk", 3, true, 20*time.Second)...)
	for _, cl := range clients {
		cl.waitTicks(10*time.Second, 3)
	}

	holder := func() *localcluster.Proc {
		t.Helper()
		id, err := rc.Get(bg, keys.TickerLeader()).Result()
		if err != nil {
			t.Fatalf("GET ws:ticker:leader: %v", err)
		}
		for _, p := range c.Tickers {
			if p.Name == id { // localcluster sets TICKER_ID to the process name
				return p
			}
		}
		t.Fatalf("ws:ticker:leader is %q, not one of the tickers", id)
		return nil
	}
	// failover stops the holder with stop and returns the new holder, how long after the stop
	// the first tick the old holder cannot have published reached both clients, and the seq jump.
	failover := func(how string, stop func(p *localcluster.Proc) error) (*localcluster.Proc, time.Duration, int64) {
		t.Helper()
		old := holder()
		stopped := time.Now()
		if err := stop(old); err != nil {
			t.Fatalf("%s %s: %v", how, old.Name, err)
		}
		// The old holder published nothing after its exit: no seq past the current one.
		exitSeq := seqNow()
		lastBefore := min(a.lastSeq(), b.lastSeq())
		var gap time.Duration
		var next int64
		for _, cl := range clients {
			f := cl.waitTick(10*time.Second, exitSeq)
			gap = max(gap, f.At.Sub(stopped))
			next = f.Seq
		}
		newHolder := holder()
		if newHolder == old {
			t.Fatalf("after %s the lease is still held by %s", how, old.Name)
		}
		t.Logf("%s of holder %s: %s took over, ticks at both clients %v after the signal, seq %d → %d",
			how, old.Name, newHolder.Name, gap.Round(time.Millisecond), lastBefore, next)
		return old, gap, next - lastBefore
	}

	// SIGKILL: the lease expires at most LEASE_TTL after the last renewal (the last tick); the
	// standby takes it at its next tick. Ticks are on whole seconds, so the seq jump measures
	// that exactly; the time, taken at the clients, gets slack for a loaded machine.
	killed, gap, jump := failover("SIGKILL", (*localcluster.Proc).Kill)
	if maxJump := int64((leaseTTL + time.Second) / tickInterval); jump > maxJump {
		t.Errorf("after SIGKILL seq jumped by %d, want ≤ %d (LEASE_TTL + 1 s)", jump, maxJump)
	}
	if bound := leaseTTL + time.Second + 500*time.Millisecond; gap > bound {
		t.Errorf("after SIGKILL ticks resumed after %v, want ≤ LEASE_TTL + 1 s (%v, with 500 ms slack)", gap, leaseTTL+time.Second)
	}
	var largest int64 // the largest jump between consecutive seqs a client saw
	for _, cl := range clients {
		ts := cl.ticks()
		for i := 1; i < len(ts); i++ {
			largest = max(largest, ts[i].Seq-ts[i-1].Seq)
		}
	}
	measure(t, "ticker_kill9", "leader %s killed; %s publishing, ticks resumed %v later, largest seq jump %d (LEASE_TTL %v)",
		killed.Name, holder().Name, gap.Round(time.Millisecond), largest, leaseTTL)

	// The killed one comes back as a standby and does not take the lease.
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	seq := a.lastSeq()
	a.waitTick(5*time.Second, seq+2)
	if h := holder(); h == killed {
		t.Fatalf("restarted %s took the lease from the holder", killed.Name)
	}

	// SIGTERM: the holder releases the lease before it exits, so the standby publishes the very
	// next tick, or the one after when the release lands just after the standby's try.
	_, gap, jump = failover("SIGTERM", func(p *localcluster.Proc) error { return p.Term(5 * time.Second) })
	if bound := 2*tickInterval + 500*time.Millisecond; gap > bound {
		t.Errorf("after SIGTERM ticks resumed after %v, want ≤ 2 ticks (%v, with 500 ms slack)", gap, 2*tickInterval)
	}
	if jump > 2 {
		t.Errorf("after SIGTERM seq jumped by %d, want ≤ 2 (at most one tick missed)", jump)
	}

	a.waitTick(5*time.Second, a.lastSeq()+1)
	for _, cl := range clients {
		checkTicks(t, cl, func(prev, next frame) bool { return true }) // gaps allowed, repeats and going back not
		if err := cl.lastErr(); err != nil || len(cl.history()) != 1 {
			t.Errorf("client %s: socket closed (%d connections): %v", cl.user, len(cl.history()), err)
		}
		if n := cl.duplicates(); n != 0 {
			t.Errorf("%s received %d duplicate ticks", cl.user, n)
		}
	}
	// Every gateway forwarded the same ticks: identical seqs over the common range.
	common := func(cl *client, from, to int64) []int64 {
		var out []int64
		for _, f := range cl.ticks() {
			if f.Seq >= from && f.Seq <= to {
				out = append(out, f.Seq)
			}
		}
		return out
	}
	from, to := int64(0), a.lastSeq()
	for _, cl := range clients {
		from, to = max(from, cl.ticks()[0].Seq), min(to, cl.lastSeq())
	}
	for _, cl := range clients[1:] {
		if sa, sb := common(a, from, to), common(cl, from, to); fmt.Sprint(sa) != fmt.Sprint(sb) {
			t.Errorf("%s and %s got different ticks:\n%v\n%v", a.user, cl.user, sa, sb)
		}
	}
}
