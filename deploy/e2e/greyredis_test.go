package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
)

// TestSlowRedisKeepsBackend: Redis answers 1–2 s late for 20 s (Toxiproxy between the
// cluster and Redis). Slow is not unreachable: every gateway stays ready, so HAProxy keeps its
// servers and /readyz through the load balancer answers 200 throughout.
//
// Fails before /readyz answered from state: each gateway's /readyz waited on a Redis GET
// bounded at 2 s against HAProxy's 1 s check, every gateway was marked down, and HAProxy
// refused new connections for most of the slow period.
func TestSlowRedisKeepsBackend(t *testing.T) {
	srv := testkit.StartRedis(t)
	proxy := testkit.StartToxiproxy(t, srv.Addr())
	c := startCluster(t, localcluster.Options{RedisURL: "redis://" + proxy.Addr() + "/0"})

	proxy.Latency(t, 1500*time.Millisecond, 500*time.Millisecond)
	hc := &http.Client{Timeout: 2 * time.Second}
	const period, poll = 20 * time.Second, 250 * time.Millisecond
	var polls, failed int
	var unready time.Duration
	for end := time.Now().Add(period); time.Now().Before(end); time.Sleep(poll) {
		polls++
		start := time.Now()
		resp, err := hc.Get("http://" + c.LBAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			failed++
			unready += time.Since(start) + poll
		}
	}
	proxy.Remove(t, "latency")
	measure(t, "slow Redis (1–2 s) for 20 s, seconds without a ready gateway behind HAProxy", "%.1f s (%d of %d polls)", unready.Seconds(), failed, polls)
	if failed > 0 {
		t.Errorf("HAProxy had no ready gateway for %.1f s of %v (%d of %d polls), want 0", unready.Seconds(), period, failed, polls)
	}
}
