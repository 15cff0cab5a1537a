package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
)

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
