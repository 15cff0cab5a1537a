package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestGatewayKilledAndDrained: a gateway killed with SIGKILL is swept by the others within
// 2 × PRESENCE_TTL, with exactly one gateway_lost leave per connection and its id gone from
// ws:gateways; a gateway stopped with SIGTERM has removed its fields (drained leaves) and its
// heartbeat by the time it has exited.
func TestGatewayKilledAndDrained(t *testing.T) {
	c := startCluster(t, 3, 2)
	rc := c.RedisClient()
	dead, drained, survivor := c.Gateways[0], c.Gateways[1], c.Gateways[2]
	deadCls := []*wsClient{dial(t, dead.Addr, "lost-a"), dial(t, dead.Addr, "lost-b"), dial(t, dead.Addr, "lost-c")}
	drainCls := []*wsClient{dial(t, drained.Addr, "drain-a"), dial(t, drained.Addr, "drain-b")}
	stay := dial(t, survivor.Addr, "stay")
	all := append(append(append([]*wsClient{}, deadCls...), drainCls...), stay)
	waitFor(t, 5*time.Second, "every connection in ws:presence", func() error {
		return hasAll(presence(t, rc, key("presence")), connIDs(all...))
	})
	events := subscribeEvents(t, rc, key("presence:events"))

	// SIGKILL: nobody cleans up but the sweep.
	killed := time.Now()
	if err := dead.Kill(); err != nil {
		t.Fatal(err)
	}
	bound := 2*presenceTTL + time.Second
	swept := waitFor(t, bound, "fields of the killed gateway swept", func() error {
		return hasNone(presence(t, rc, key("presence")), connIDs(deadCls...))
	})
	waitFor(t, 2*time.Second, "its gateway_lost leaves", func() error {
		if n := len(events.about(connIDs(deadCls...))); n < len(deadCls) {
			return fmt.Errorf("%d leaves", n)
		}
		return nil
	})
	waitFor(t, bound-time.Since(killed), "killed gateway out of ws:gateways", func() error {
		if ok, err := rc.SIsMember(bg, key("gateways"), dead.ID).Result(); err != nil || ok {
			return fmt.Errorf("still a member (%v)", err)
		}
		return nil
	})
	t.Logf("SIGKILL of %s: its %d fields swept after %v (bound %v), leaves and ws:gateways done by %v",
		dead.ID, len(deadCls), swept.Round(time.Millisecond), bound, time.Since(killed).Round(time.Millisecond))
	for _, cl := range deadCls {
		cl.waitClosed(5 * time.Second)
	}

	// SIGTERM: the gateway drains and cleans up before it exits.
	termed := time.Now()
	if err := drained.Term(shutdownTimeout + 5*time.Second); err != nil {
		t.Fatalf("SIGTERM %s: %v", drained.ID, err)
	}
	exitedAfter := time.Since(termed)
	if err := hasNone(presence(t, rc, key("presence")), connIDs(drainCls...)); err != nil {
		t.Errorf("after %s exited: %v", drained.ID, err)
	}
	if n, err := rc.Exists(bg, key("gateway:"+drained.ID)).Result(); err != nil || n != 0 {
		t.Errorf("heartbeat of %s after it exited: EXISTS %d (%v)", drained.ID, n, err)
	}
	if ok, err := rc.SIsMember(bg, key("gateways"), drained.ID).Result(); err != nil || ok {
		t.Errorf("%s still in ws:gateways after it exited (%v)", drained.ID, err)
	}
	waitFor(t, 2*time.Second, "the drained leaves", func() error {
		if n := len(events.about(connIDs(drainCls...))); n < len(drainCls) {
			return fmt.Errorf("%d leaves", n)
		}
		return nil
	})
	t.Logf("SIGTERM of %s: exited after %v, fields and heartbeat already gone", drained.ID, exitedAfter.Round(time.Millisecond))
	for _, cl := range drainCls {
		cl.waitClosed(2 * time.Second)
		err := cl.err()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseGoingAway {
			t.Errorf("%s: closed with %v, want 1001", cl.welcome.User, err)
		} else if d, ok := protocol.ParseRetry(ce.Reason); !ok || d > 5*time.Second {
			t.Errorf("%s: 1001 reason %q, want {\"retry_ms\":0..5000}", cl.welcome.User, ce.Reason)
		}
	}

	// Let one more sweep round pass: still exactly one leave per connection, none for the
	// survivor, and nothing malformed.
	time.Sleep(presenceTTL/3 + 500*time.Millisecond)
	checkLeaves(t, events.about(connIDs(deadCls...)), protocol.ReasonGatewayLost, deadCls...)
	checkLeaves(t, events.about(connIDs(drainCls...)), protocol.ReasonDrained, drainCls...)
	if evs := events.about(connIDs(stay)); len(evs) != 0 {
		t.Errorf("events about the survivor's connection: %+v", evs)
	}
	if bad := events.invalid(); len(bad) != 0 {
		t.Errorf("malformed presence events: %q", bad)
	}
	if got := len(events.all()); got != len(deadCls)+len(drainCls) {
		t.Errorf("%d events in all, want %d: %+v", got, len(deadCls)+len(drainCls), events.all())
	}
	hash := presence(t, rc, key("presence"))
	if len(hash) != 1 || hasAll(hash, connIDs(stay)) != nil {
		t.Errorf("ws:presence after both: %v, want only %s", hash, stay.welcome.ConnID)
	}
	if err := stay.err(); err != nil {
		t.Errorf("survivor's socket closed: %v", err)
	}
}

// hasAll reports an error when any of ids is missing from the hash.
func hasAll(hash map[string]protocol.Presence, ids []string) error {
	for _, id := range ids {
		if _, ok := hash[id]; !ok {
			return fmt.Errorf("field %s missing (have %d fields)", id, len(hash))
		}
	}
	return nil
}
