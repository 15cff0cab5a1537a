package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestGatewayKill9: a gateway with clients dies (SIGKILL). Its clients, the real client program
// and in-process ones, reconnect through HAProxy to the other gateways, and within
// 2 × PRESENCE_TTL plus a few seconds ws:presence holds exactly the live connections.
func TestGatewayKill9(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()

	// One real client per gateway: leastconn sends each new one to an empty gateway.
	var terms []*termClient
	for i := range 3 {
		tc := startTermClient(t, c.LBAddr, fmt.Sprintf("term%d", i))
		if _, err := tc.waitWelcomes(1, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		terms = append(terms, tc)
	}
	cs := startClients(t, c.LBAddr, "kill", 27, true, 20*time.Second)

	victim := c.GatewayByID(terms[0].welcomes()[0].Gateway)
	if victim == nil {
		t.Fatalf("welcome names gateway %q, not one of the cluster's", terms[0].welcomes()[0].Gateway)
	}
	var victimTerms []*termClient
	for _, tc := range terms {
		if tc.welcomes()[0].Gateway == victim.ID {
			victimTerms = append(victimTerms, tc)
		}
	}
	var victimClients []*client
	for _, cl := range cs {
		if cl.current().Gateway == victim.ID {
			victimClients = append(victimClients, cl)
		}
	}
	var victimConns []string
	for _, tc := range victimTerms {
		victimConns = append(victimConns, tc.welcomes()[0].ConnID)
	}
	for _, cl := range victimClients {
		victimConns = append(victimConns, cl.current().ID)
	}
	// Join is written to Redis asynchronously (a socket never waits for Redis), so a welcome can
	// precede its HSET by a round trip. Kill only once every connection is in ws:presence: an
	// entry the victim never wrote cannot be swept, and would have no leave event to check.
	ev := subscribeEvents(t, c.RedisClient())
	err := waitFor(10*time.Second, 20*time.Millisecond, func() error {
		return presenceMatches(ctx, c.RedisClient(), liveConns(terms, cs), gatewayIDs(c), 30)
	})
	if err != nil {
		t.Fatalf("presence before the kill: %v", err)
	}
	t.Logf("killing %s (pid %d) with %d real and %d in-process clients", victim.ID, victim.Pid(), len(victimTerms), len(victimClients))
	if len(victimClients) == 0 {
		t.Fatalf("no in-process client on %s", victim.ID)
	}
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}

	// Every client of the victim reconnects to another gateway.
	var slowest time.Duration
	for _, tc := range victimTerms {
		ws, err := tc.waitWelcomes(2, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if g := ws[1].Gateway; g == victim.ID || c.GatewayByID(g) == nil {
			t.Errorf("client %s reconnected to %q, want another live gateway", tc.user, g)
		}
		slowest = max(slowest, time.Since(killed)) // an upper bound: output is polled
	}
	measure(t, "kill9_term_reconnect", "real clients of the killed gateway reconnected within %v", slowest.Round(time.Millisecond))
	slowest = 0
	err = waitFor(20*time.Second, 20*time.Millisecond, func() error {
		for _, cl := range victimClients {
			cur := cl.current()
			if cur == nil || cur.Gateway == victim.ID {
				return fmt.Errorf("%s not reconnected (last error %v)", cl.user, cl.lastErr())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range victimClients {
		slowest = max(slowest, cl.current().Welcomed.Sub(killed))
	}
	measure(t, "kill9_reconnect", "%d in-process clients of the killed gateway reconnected within %v", len(victimClients), slowest.Round(time.Millisecond))

	// Presence converges to exactly the live connections.
	liveGateways := gatewayIDs(c)
	delete(liveGateways, victim.ID)
	bound := 2*presenceTTL + 5*time.Second
	rc := c.RedisClient()
	err = waitFor(bound-time.Since(killed), 100*time.Millisecond, func() error {
		return presenceMatches(ctx, rc, liveConns(terms, cs), liveGateways, 30)
	})
	if err != nil {
		t.Fatalf("presence did not converge within %v of the kill: %v", bound, err)
	}
	measure(t, "kill9_presence", "ws:presence exact (30 live, none on %s) %v after the kill (bound 2×PRESENCE_TTL+5s = %v, PRESENCE_TTL %v)",
		victim.ID, time.Since(killed).Round(time.Millisecond), bound, presenceTTL)
	// Exactly one leave per lost connection, reason gateway_lost, however many gateways swept.
	ev.checkLeaves(t, victimConns, protocol.ReasonGatewayLost, 5*time.Second)
}

// liveConns is the set of connection ids the clients hold now: the last welcome of each real
// client and the current connection of each in-process one.
func liveConns(terms []*termClient, cs []*client) map[string]bool {
	m := map[string]bool{}
	for _, tc := range terms {
		ws := tc.welcomes()
		m[ws[len(ws)-1].ConnID] = true
	}
	for _, cl := range cs {
		if cur := cl.current(); cur != nil {
			m[cur.ID] = true
		}
	}
	return m
}

// gatewayIDs is the set of the cluster's gateway ids.
func gatewayIDs(c *localcluster.Cluster) map[string]bool {
	m := make(map[string]bool, len(c.Gateways))
	for _, g := range c.Gateways {
		m[g.ID] = true
	}
	return m
}

// presenceMatches checks that ws:presence holds exactly the connections in live, n of them,
// each on one of gateways.
func presenceMatches(ctx context.Context, rc *redis.Client, live, gateways map[string]bool, n int) error {
	if len(live) != n {
		return fmt.Errorf("%d clients connected, want %d", len(live), n)
	}
	p, err := presence(ctx, rc)
	if err != nil {
		return err
	}
	var stale, missing []string
	for id, v := range p {
		if !live[id] || !gateways[v.Gateway] {
			stale = append(stale, id+" ("+v.User+" on "+v.Gateway+")")
		}
	}
	for id := range live {
		if _, ok := p[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(p) != n || len(stale) > 0 || len(missing) > 0 {
		return fmt.Errorf("HLEN ws:presence = %d, want %d; stale %v; missing %v", len(p), n, stale, missing)
	}
	return nil
}

// TestRollingRestart: each gateway in turn gets SIGTERM, drains (1001 with retry_ms), exits 0,
// starts again and becomes ready. Every client ends connected; a connection that is open never
// misses from ws:presence for more than 2 s; no stale entry remains.
func TestRollingRestart(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	rc := c.RedisClient()
	const nInProc, nTerm = 28, 2
	var terms []*termClient
	for i := range nTerm {
		tc := startTermClient(t, c.LBAddr, fmt.Sprintf("rterm%d", i))
		if _, err := tc.waitWelcomes(1, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		terms = append(terms, tc)
	}
	cs := startClients(t, c.LBAddr, "roll", nInProc, true, 20*time.Second)
	ev := subscribeEvents(t, rc)

	// Sample presence every 200 ms while the gateways restart.
	type violation struct {
		user, conn, gateway string
		age                 time.Duration
	}
	var (
		violations  []violation
		samples     int
		firstSeen   = map[string]time.Time{} // conn id → first sample listing it
		maxWriteLag time.Duration            // welcome → first sample listing the conn
	)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-tick.C:
			}
			before := snapshot(cs)
			p, err := presence(sampleCtx, rc)
			at := time.Now()
			if err != nil {
				continue
			}
			after := snapshot(cs)
			samples++
			for id := range p {
				if _, ok := firstSeen[id]; !ok {
					firstSeen[id] = at
				}
			}
			for user, b := range before {
				a, ok := after[user]
				if !ok || a.ID != b.ID {
					continue // it closed or changed around the sample
				}
				if _, listed := p[b.ID]; !listed && at.Sub(b.Welcomed) > 2*time.Second {
					violations = append(violations, violation{user, b.ID, b.Gateway, at.Sub(b.Welcomed)})
				}
			}
		}
	}()

	restartStart := time.Now()
	for _, g := range c.Gateways {
		termAt := time.Now()
		if err := g.Term(shutdownTimeout + 5*time.Second); err != nil {
			t.Errorf("%s: %v", g.ID, err)
		}
		drained := time.Since(termAt)
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := c.WaitReady(readyCtx, g)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		ready := time.Since(termAt)
		// Every client is back before the next gateway goes (retry_ms is at most 5 s).
		err = waitFor(20*time.Second, 20*time.Millisecond, func() error {
			for _, cl := range cs {
				if cl.current() == nil {
					return fmt.Errorf("%s not reconnected (last error %v)", cl.user, cl.lastErr())
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		measure(t, "rolling_step", "%s: SIGTERM to exit %v, to ready again %v, all clients back %v",
			g.ID, drained.Round(time.Millisecond), ready.Round(time.Millisecond), time.Since(termAt).Round(time.Millisecond))
	}
	measure(t, "rolling_total", "3 gateways restarted one at a time in %v", time.Since(restartStart).Round(time.Millisecond))

	// Every client was drained at least once, with 1001, and came back after its retry_ms.
	var worstExtra time.Duration
	for _, cl := range cs {
		h := cl.history()
		if len(h) < 2 {
			t.Errorf("%s held %d connection(s), want a reconnect after a drain", cl.user, len(h))
			continue
		}
		for i, cn := range h[:len(h)-1] {
			if cn.CloseCode != 1001 {
				t.Errorf("%s: connection %s on %s closed with %d, want 1001", cl.user, cn.ID, cn.Gateway, cn.CloseCode)
				continue
			}
			gap := h[i+1].Welcomed.Sub(cn.Closed)
			if gap < cn.Retry {
				t.Errorf("%s: reconnected %v after the 1001, before its retry_ms %v", cl.user, gap, cn.Retry)
			}
			worstExtra = max(worstExtra, gap-cn.Retry)
		}
	}
	var drainedConns []string
	for _, cl := range cs {
		for _, cn := range cl.history() {
			if cn.CloseCode == 1001 {
				drainedConns = append(drainedConns, cn.ID)
			}
		}
	}
	ev.checkLeaves(t, drainedConns, protocol.ReasonDrained, 5*time.Second)
	measure(t, "drain_reconnect", "after 1001 a client was welcomed again at most %v after its retry_ms", worstExtra.Round(time.Millisecond))
	for _, tc := range terms {
		ws, err := tc.waitWelcomes(2, 10*time.Second)
		if err != nil {
			t.Error(err)
			continue
		}
		if len(ws) < 2 {
			t.Errorf("client %s never reconnected", tc.user)
		}
	}

	// No stale entry: presence holds exactly the open connections.
	live, gateways := liveConns(terms, cs), gatewayIDs(c)
	err := waitFor(10*time.Second, 100*time.Millisecond, func() error {
		return presenceMatches(ctx, rc, live, gateways, nInProc+nTerm)
	})
	stopSampling()
	<-sampled
	if err != nil {
		t.Error(err)
	}
	for id, seen := range firstSeen {
		for _, cl := range cs {
			for _, cn := range cl.history() {
				if cn.ID == id {
					maxWriteLag = max(maxWriteLag, seen.Sub(cn.Welcomed))
				}
			}
		}
	}
	measure(t, "rolling_presence", "%d samples, %d violations; a new connection was listed at most %v after its welcome (200 ms sampling)",
		samples, len(violations), maxWriteLag.Round(time.Millisecond))
	sort.Slice(violations, func(i, j int) bool { return violations[i].age > violations[j].age })
	for i, v := range violations {
		if i == 10 {
			break
		}
		t.Errorf("open connection %s (%s on %s, welcomed %v before the sample) missing from ws:presence",
			v.conn, v.user, v.gateway, v.age.Round(time.Millisecond))
	}
}

// snapshot maps each connected client's user to its open connection.
func snapshot(cs []*client) map[string]conn {
	m := make(map[string]conn, len(cs))
	for _, cl := range cs {
		if cur := cl.current(); cur != nil {
			m[cl.user] = *cur
		}
	}
	return m
}
