package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// TestReadyzLines: /readyz lists one line per check; with Redis gone it turns 503 within the
// 3 s unreachable threshold (plus a check interval) and says since when, answering at once.
func TestReadyzLines(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	g := startClusterGateway(t, srv.Addr(), testkit.Prefix(t))
	get := func() (int, string, time.Duration) {
		start := time.Now()
		resp, err := http.Get(g.http.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	if code, body, _ := get(); code != http.StatusOK || body != "ready\nredis ok\nsubscription ok\n" {
		t.Fatalf("/readyz %d %q", code, body)
	}
	srv.Kill()
	killed := time.Now()
	var body string
	var code int
	var slowest time.Duration
	var answers, slow int
	for code != http.StatusServiceUnavailable && time.Since(killed) < 10*time.Second {
		var took time.Duration
		code, body, took = get()
		slowest = max(slowest, took)
		answers++
		if took > 100*time.Millisecond {
			slow++
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := time.Since(killed)
	t.Logf("Redis killed: /readyz 503 after %v, slowest answer %v: %q", after.Round(time.Millisecond), slowest, body)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "redis unreachable since ") {
		t.Fatalf("/readyz %d %q with Redis down", code, body)
	}
	if after < 2500*time.Millisecond || after > 5*time.Second {
		t.Errorf("503 after %v, want about 3 s (no round trip for 3 s)", after)
	}
	// Every answer comes from state, so it takes the HTTP round trip alone: within 100 ms.
	// The test process itself may be descheduled on a loaded two-core machine under -race, so
	// one answer in ten may be late, but none by the seconds a Redis round trip would take.
	if slow*10 > answers || slowest > time.Second {
		t.Errorf("%d of %d /readyz answers over 100 ms, slowest %v: want within 100 ms", slow, answers, slowest)
	}
}
