package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/pkg/protocol"
)

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
