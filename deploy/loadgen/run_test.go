package loadgen

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/gateway"
	"github.com/wsgw/wsgw/pkg/protocol"
)

func runOK(t *testing.T, cfg Config) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Failed != 0 || len(res.FailReasons) > 0 || len(res.Dropped) > 0 {
		t.Fatalf("failed %d %v, dropped %v", res.Failed, res.FailReasons, res.Dropped)
	}
	if res.Opened != cfg.N {
		t.Fatalf("opened %d, want %d", res.Opened, cfg.N)
	}
	return res
}

// checkTicks asserts every socket got every tick of the window exactly once.
func checkTicks(t *testing.T, tk *TickStats, n int, window time.Duration) {
	t.Helper()
	if tk == nil {
		t.Fatal("no tick figures")
	}
	wantSeqs := int64(window / tickInterval)
	if tk.Seqs < wantSeqs-1 || tk.Seqs > wantSeqs+1 {
		t.Errorf("seqs in window = %d, want %d±1", tk.Seqs, wantSeqs)
	}
	if tk.Expected != tk.Seqs*int64(n) || tk.Received != tk.Expected {
		t.Errorf("received %d, expected %d (%d seqs × %d sockets)", tk.Received, tk.Expected, tk.Seqs, n)
	}
	if tk.Gaps != 0 || tk.Dups != 0 {
		t.Errorf("gaps %d, dups %d, want 0", tk.Gaps, tk.Dups)
	}
	if tk.Latency.Count != uint64(tk.Received) || tk.Latency.P50ms <= 0 || tk.Latency.MaxMS > 1000 {
		t.Errorf("latency %+v for %d ticks", tk.Latency, tk.Received)
	}
}

func TestIdle(t *testing.T) {
	url := startGateway(t, gateway.Options{})
	const n = 50
	res := runOK(t, Config{URL: url, Mode: ModeIdle, N: n, Hold: 1500 * time.Millisecond, Grace: 300 * time.Millisecond, PIDs: []int{os.Getpid()}})
	checkTicks(t, res.Ticks, n, 1200*time.Millisecond)
	s := res.Server
	if s == nil || s.RSSBaselineMiB <= 0 || s.RSSLoadedMiB <= 0 || s.Error != "" {
		t.Fatalf("server stats of our own process: %+v", s)
	}
	if res.Handshake.Count != n || res.OpenSec <= 0 || res.ClientCPUSec <= 0 {
		t.Errorf("handshake %+v, open %.3fs, client CPU %.3fs", res.Handshake, res.OpenSec, res.ClientCPUSec)
	}
}

func TestTicks(t *testing.T) {
	url := startGateway(t, gateway.Options{})
	const n = 30
	res := runOK(t, Config{URL: url, Mode: ModeTicks, N: n, Duration: time.Second, Grace: 300 * time.Millisecond, Inflight: 7, Src: 3})
	checkTicks(t, res.Ticks, n, time.Second)
	if res.WindowSec < 0.99 || res.WindowSec > 1.5 {
		t.Errorf("window %.3fs, want 1s", res.WindowSec)
	}
}

// TestFibRateLimited runs at the gateway's default 20 req/s per connection: the burst is
// answered and verified, and the rest come back as rate_limited, counted apart.
func TestFibRateLimited(t *testing.T) {
	url := startGateway(t, gateway.Options{})
	const n = 4
	res := runOK(t, Config{URL: url, Mode: ModeFib, N: n, FibN: 90, Duration: time.Second, Grace: time.Second, RetryAfter: 5 * time.Millisecond})
	f := res.Fib
	if f.Mismatches != 0 || f.Unmatched != 0 {
		t.Fatalf("mismatches %d, unmatched %d", f.Mismatches, f.Unmatched)
	}
	// Burst 40 + 20/s for ~1 s per socket.
	if f.OK < n*40 || f.OK > n*70 {
		t.Errorf("ok = %d, want ≈ %d", f.OK, n*60)
	}
	if f.Verified != f.OK {
		t.Errorf("verified %d of %d answers for a fixed n", f.Verified, f.OK)
	}
	if f.Errors[protocol.CodeRateLimited] == 0 {
		t.Errorf("errors %v, want rate_limited", f.Errors)
	}
	if f.Sent != f.OK+f.Errors[protocol.CodeRateLimited] {
		t.Errorf("sent %d ≠ ok %d + errors %v", f.Sent, f.OK, f.Errors)
	}
}

// TestFibRandom pipelines random n against a gateway without a practical rate limit and
// checks every result against math/big.
func TestFibRandom(t *testing.T) {
	url := startGateway(t, gateway.Options{Rate: 1e6, Burst: 1e6})
	res := runOK(t, Config{URL: url, Mode: ModeFib, N: 5, FibMax: 2000, Pipeline: 4, VerifyEvery: 1, Duration: 700 * time.Millisecond, PIDs: []int{os.Getpid()}})
	f := res.Fib
	if f.OK < 100 || f.Verified != f.OK || f.Mismatches != 0 || f.Unmatched != 0 || len(f.Errors) != 0 {
		t.Fatalf("fib %+v", f)
	}
	if f.Sent != f.OK {
		t.Errorf("sent %d, answered %d: every outstanding request must be answered in the grace", f.Sent, f.OK)
	}
	if f.RTT.Count != uint64(f.OK) || f.ReqPerSec <= 0 {
		t.Errorf("rtt %+v, %.0f req/s", f.RTT, f.ReqPerSec)
	}
	if res.Server == nil || res.Server.CPUPerRequestUS <= 0 {
		t.Errorf("server %+v: want CPU per request", res.Server)
	}
}

func TestStormWithoutRedis(t *testing.T) {
	url := startGateway(t, gateway.Options{})
	res := runOK(t, Config{URL: url, Mode: ModeStorm, N: 200, Inflight: 50})
	if res.PresentSec != 0 || res.HandshakesPerSec <= 0 {
		t.Errorf("present %.3fs, %.0f handshakes/s", res.PresentSec, res.HandshakesPerSec)
	}
}

func TestHandshakeFailuresAreCounted(t *testing.T) {
	url := startGateway(t, gateway.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// "a b" is not a valid user name: every handshake gets HTTP 400.
	res, err := Run(ctx, Config{URL: url, Mode: ModeStorm, N: 5, User: "a b"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 0 || res.Failed != 5 || len(res.FailReasons) != 1 {
		t.Fatalf("opened %d, failed %d, reasons %v", res.Opened, res.Failed, res.FailReasons)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "ws://127.0.0.1:1/ws", Mode: "nope"},
		{URL: "http://127.0.0.1:1/ws", Mode: ModeIdle},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) = nil error", cfg)
		}
	}
}

func TestShare(t *testing.T) {
	total := 0
	seen := map[int]bool{}
	for i := range 3 {
		c := Config{URL: "ws://127.0.0.1:1/ws", N: 50001, Procs: 3, ChildIndex: i}
		c.defaults()
		n, off := c.share()
		total += n
		if seen[off] {
			t.Errorf("child %d reuses source offset %d", i, off)
		}
		seen[off] = true
	}
	if total != 50001 {
		t.Errorf("shares add up to %d", total)
	}
	c := Config{URL: "ws://example.com/ws", N: 100}
	if got := c.srcCount(100); got != 0 {
		t.Errorf("non-loopback host: %d source addresses, want none", got)
	}
	c = Config{URL: "ws://127.0.0.1:8080/ws"}
	if got := c.srcCount(45000); got != 4 {
		t.Errorf("45000 sockets: %d source addresses, want 4", got)
	}
}

// TestTimeoutStopsRun: the run's hard stop (-timeout) ends every socket at once, though they
// read without a cancellable context, and the run returns what it measured so far.
func TestTimeoutStopsRun(t *testing.T) {
	url := startGateway(t, gateway.Options{})
	const n = 20
	start := time.Now()
	res, err := Run(context.Background(), Config{URL: url, Mode: ModeTicks, N: n, Duration: time.Minute, Timeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run returned %v after its 1.5 s timeout", d)
	}
	if res.Opened != n || len(res.Dropped) > 0 || res.WindowSec > 5 {
		t.Errorf("opened %d, dropped %v, window %.1fs", res.Opened, res.Dropped, res.WindowSec)
	}
}
