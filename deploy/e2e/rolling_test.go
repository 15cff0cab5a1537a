package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestRollingRestart: each gateway in turn gets SIGTERM, drains (1001 with retry_ms), exits 0,
// starts again and becomes ready. Every client ends connected; a connection that is open never
// misses from ws:presence for more than 2 s; no stale entry remains.
func TestRollingRestart(t *testing.T) {
	c := startCluster(t, localcluster.Options{})
	ctx := context.Background()
	rc := c.RedisClient()
	const nInProc, nTerm = 28, 2
	var terms []*termClient
	for i := range nTerm {
		tc := startTermClient(t, c.LBAddr, fmt.Sprintf("rterm%d", i))
		tc.waitWelcomes(t, 1, 15*time.Second)
		terms = append(terms, tc)
	}
	cs := startClients(t, c.LBAddr, "roll", nInProc, true, 20*time.Second)
	ev := subscribeEvents(t, rc, keys.Events())

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
	defer func() { stopSampling(); <-sampled }()
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
			p, err := readPresence(rc, keys.Presence())
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
		waitFor(t, 20*time.Second, "every client back after "+g.ID+" restarted", func() error {
			for _, cl := range cs {
				if cl.current() == nil {
					return fmt.Errorf("%s not reconnected (last error %v)", cl.user, cl.lastErr())
				}
			}
			return nil
		})
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
	var drainedConns []connRef
	for _, cl := range cs {
		for _, cn := range cl.history() {
			if cn.CloseCode == 1001 {
				drainedConns = append(drainedConns, connRef{cn.ID, cl.user, cn.Gateway})
			}
		}
	}
	ev.checkLeaves(t, protocol.ReasonDrained, 5*time.Second, drainedConns...)
	measure(t, "drain_reconnect", "after 1001 a client was welcomed again at most %v after its retry_ms", worstExtra.Round(time.Millisecond))
	for _, tc := range terms {
		tc.waitWelcomes(t, 2, 10*time.Second)
	}

	// No stale entry: presence holds exactly the open connections.
	live, gateways := liveConns(terms, cs), gatewayIDs(c)
	waitFor(t, 10*time.Second, "presence exact after the roll", func() error {
		return presenceMatches(rc, live, gateways, nInProc+nTerm)
	})
	stopSampling()
	<-sampled
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
