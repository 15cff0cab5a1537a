package admission

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func request(peer string, xff ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.RemoteAddr = peer
	for _, h := range xff {
		r.Header.Add("X-Forwarded-For", h)
	}
	return r
}

func mustReserve(t *testing.T, c *Controller, r *http.Request) *Ticket {
	t.Helper()
	tk, err := c.Reserve(r)
	if err != nil {
		t.Fatalf("reserve for %s: %v", r.RemoteAddr, err)
	}
	return tk
}

func wantRefused(t *testing.T, c *Controller, r *http.Request, reason string) {
	t.Helper()
	tk, err := c.Reserve(r)
	var ref *Refused
	if !errors.As(err, &ref) || ref.Reason != reason {
		t.Fatalf("reserve for %s = %v, %v; want refused %s", r.RemoteAddr, tk, err, reason)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("reason %q is not one line", err)
	}
}

func TestMaxConnections(t *testing.T) {
	c := New(Options{MaxConnections: 3})
	var ts []*Ticket
	for range 3 {
		if c.Full() {
			t.Fatalf("full at %d of 3", c.Count())
		}
		ts = append(ts, mustReserve(t, c, request("10.0.0.1:1")))
	}
	if !c.Full() || c.Count() != 3 {
		t.Fatalf("Full=%v Count=%d after 3 of 3", c.Full(), c.Count())
	}
	wantRefused(t, c, request("10.0.0.2:1"), ReasonFull)
	if c.Count() != 3 {
		t.Fatalf("a refusal counted: %d", c.Count())
	}
	ts[0].Release()
	if c.Full() {
		t.Fatal("still full after a release")
	}
	mustReserve(t, c, request("10.0.0.2:1"))
}

func TestMaxPerIP(t *testing.T) {
	c := New(Options{MaxConnections: 100, MaxPerIP: 2})
	a1 := mustReserve(t, c, request("10.0.0.1:1"))
	mustReserve(t, c, request("10.0.0.1:2"))
	wantRefused(t, c, request("10.0.0.1:3"), ReasonPerIP)
	mustReserve(t, c, request("10.0.0.2:1")) // another address is not affected
	a1.Release()
	mustReserve(t, c, request("10.0.0.1:4"))
	if c.Count() != 3 {
		t.Fatalf("Count = %d, want 3", c.Count())
	}
}

// TestReleaseIdempotent: a deferred Release beside an explicit one (the gateway's pattern for
// "released when the upgrade fails or the connection ends, whichever path runs") frees the
// slot once, per address too; a nil ticket is a no-op.
func TestReleaseIdempotent(t *testing.T) {
	c := New(Options{MaxConnections: 2, MaxPerIP: 1})
	a := mustReserve(t, c, request("10.0.0.1:1"))
	b := mustReserve(t, c, request("10.0.0.2:1"))
	a.Release()
	a.Release()
	if c.Count() != 1 {
		t.Fatalf("Count = %d after releasing one of two twice, want 1", c.Count())
	}
	wantRefused(t, c, request("10.0.0.2:2"), ReasonPerIP) // b's address still counted once
	b.Release()
	(*Ticket)(nil).Release()
	if c.Count() != 0 || len(c.byIP) != 0 {
		t.Fatalf("after all released: Count=%d byIP=%v", c.Count(), c.byIP)
	}
}

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	c := New(Options{MaxConnections: 10, TrustedProxies: trusted})
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer ignores XFF", "203.0.113.9:4000", []string{"1.1.1.1"}, "203.0.113.9"},
		{"trusted peer without XFF", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"trusted peer, one hop", "10.1.2.3:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"spoofed left entries ignored", "10.1.2.3:4000", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"trusted hops skipped", "10.1.2.3:4000", []string{"6.6.6.6, 198.51.100.7, 10.9.9.9"}, "198.51.100.7"},
		{"several headers in order", "10.1.2.3:4000", []string{"6.6.6.6", "198.51.100.7, 10.0.0.8"}, "198.51.100.7"},
		{"every hop trusted: leftmost", "10.1.2.3:4000", []string{"10.0.0.5, 10.0.0.6"}, "10.0.0.5"},
		{"garbage: the peer", "10.1.2.3:4000", []string{"nonsense"}, "10.1.2.3"},
		{"garbage on the right: the peer", "10.1.2.3:4000", []string{"198.51.100.7, unknown"}, "10.1.2.3"},
		{"entry with a port", "10.1.2.3:4000", []string{"198.51.100.7:5555"}, "198.51.100.7"},
		{"ipv6 peer and client", "[fd00::1]:4000", []string{"2001:db8::5"}, "2001:db8::5"},
		{"bracketed ipv6 entry", "[fd00::1]:4000", []string{"[2001:db8::5]:80"}, "2001:db8::5"},
		{"ipv4-mapped peer", "[::ffff:10.1.2.3]:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"untrusted ipv6 peer", "[2001:db8::9]:1", []string{"198.51.100.7"}, "2001:db8::9"},
	} {
		if got := c.ClientAddr(request(tc.peer, tc.xff...)); got.String() != tc.want {
			t.Errorf("%s: ClientAddr(peer %s, XFF %q) = %s, want %s", tc.name, tc.peer, tc.xff, got, tc.want)
		}
	}
	none := New(Options{MaxConnections: 10})
	if got := none.ClientAddr(request("10.1.2.3:4000", "198.51.100.7")); got.String() != "10.1.2.3" {
		t.Errorf("no trusted proxies: ClientAddr = %s, want the peer", got)
	}
}

// TestPerIPBehindProxy: clients behind a trusted proxy are counted one by one, not as the proxy.
func TestPerIPBehindProxy(t *testing.T) {
	c := New(Options{MaxConnections: 100, MaxPerIP: 2, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	for range 2 {
		mustReserve(t, c, request("127.0.0.1:1", "198.51.100.7"))
	}
	wantRefused(t, c, request("127.0.0.1:1", "198.51.100.7"), ReasonPerIP)
	mustReserve(t, c, request("127.0.0.1:1", "198.51.100.8"))
	mustReserve(t, c, request("127.0.0.1:1", "6.6.6.6, 198.51.100.9")) // spoofing the left changes nothing
	mustReserve(t, c, request("127.0.0.1:1", "6.6.6.6, 198.51.100.9"))
	wantRefused(t, c, request("127.0.0.1:1", "7.7.7.7, 198.51.100.9"), ReasonPerIP)
}

// TestConcurrentReserveRelease hammers one controller from many goroutines (run with -race):
// the limits hold at every instant and everything is released at the end.
func TestConcurrentReserveRelease(t *testing.T) {
	const maxConns, perIP = 20, 3
	c := New(Options{MaxConnections: maxConns, MaxPerIP: perIP})
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := map[string]int{}
	var peak, violations int
	for g := range 16 {
		wg.Go(func() {
			addr := []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.5:1", "10.0.0.6:1", "10.0.0.7:1", "10.0.0.8:1"}[g%8]
			for range 2000 {
				tk, err := c.Reserve(request(addr))
				if err != nil {
					continue
				}
				mu.Lock()
				held[addr]++
				if held[addr] > perIP || c.Count() > maxConns {
					violations++
				}
				peak = max(peak, c.Count())
				mu.Unlock()
				_ = c.Full()
				mu.Lock()
				held[addr]--
				mu.Unlock()
				tk.Release()
				tk.Release()
			}
		})
	}
	wg.Wait()
	if violations > 0 {
		t.Errorf("%d times a limit was exceeded", violations)
	}
	if c.Count() != 0 || len(c.byIP) != 0 {
		t.Errorf("after every release: Count=%d byIP=%v", c.Count(), c.byIP)
	}
	t.Logf("peak %d of %d", peak, maxConns)
}

func TestDefaultMaxConnections(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Skip(err)
	}
	want := max(int(rl.Cur)-FDReserve, int(rl.Cur)/2)
	if got := New(Options{}).Max(); got != want {
		t.Errorf("default Max = %d with soft limit %d, want %d", got, rl.Cur, want)
	}
}

func TestRefuse(t *testing.T) {
	w := httptest.NewRecorder()
	Refuse(w, &Refused{Reason: ReasonFull, msg: "gateway full"})
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" || w.Header().Get("Connection") != "close" {
		t.Errorf("Refuse: %d %v", w.Code, w.Header())
	}
	if body := w.Body.String(); body != "gateway full\n" {
		t.Errorf("body %q, want one line", body)
	}
}
