package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
)

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
