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
