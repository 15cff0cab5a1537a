package gateway

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/admission"
)

// upgradeRequest sends a WebSocket handshake by hand, so a refusal's status, headers and body
// can be read as sent.
func upgradeRequest(t *testing.T, g *testGateway, xff string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.http.URL+"/ws?user=extra", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func wantRefusal(t *testing.T, resp *http.Response, body, reason string) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("upgrade: %s Retry-After=%q, want 503 with Retry-After: 1", resp.Status, resp.Header.Get("Retry-After"))
	}
	if strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") || !strings.Contains(body, reason) {
		t.Fatalf("refusal body %q, want one line mentioning %q", body, reason)
	}
}

// TestMaxConnections: with MAX_CONNECTIONS=5 the 6th upgrade gets 503 + Retry-After before any
// upgrade, /readyz answers 503 `full` while 5 are open and 200 again once one closes.
func TestMaxConnections(t *testing.T) {
	g := startGateway(t, Options{Admission: admission.Options{MaxConnections: 5}}, 0)
	var conns []*websocket.Conn
	for i := range 5 {
		if code, _ := readyz(t, g); code != http.StatusOK {
			t.Fatalf("/readyz %d with %d of 5 open", code, i)
		}
		c, _ := g.dial(t, "u"+string(rune('a'+i)))
		conns = append(conns, c)
	}
	resp, body := upgradeRequest(t, g, "")
	wantRefusal(t, resp, body, "full")
	if _, _, err := websocket.Dial(context.Background(), g.url, nil); err == nil {
		t.Fatal("a 6th WebSocket was accepted")
	}
	if got := testutil.ToFloat64(g.m.Rejected.WithLabelValues(admission.ReasonFull)); got != 2 {
		t.Errorf("ws_rejected_total{reason=full} = %v, want 2", got)
	}
	if code, body := readyz(t, g); code != http.StatusServiceUnavailable || !strings.Contains(body, "\nfull\n") {
		t.Errorf("/readyz while full: %d %q, want 503 \"full\"", code, body)
	}

	conns[0].Close(websocket.StatusNormalClosure, "")
	testkit.Eventually(t, 5*time.Second, "/readyz 200 after one closed", func() bool { code, _ := readyz(t, g); return code == http.StatusOK })
	g.dial(t, "again")
	if code, _ := readyz(t, g); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d at 5 of 5 again, want 503", code)
	}
}

// TestMaxPerIPBehindProxy: behind a trusted proxy (the test's own 127.0.0.1), clients are counted
// by their X-Forwarded-For address, 2 each; without the header, the proxy itself is the client.
func TestMaxPerIPBehindProxy(t *testing.T) {
	g := startGateway(t, Options{Admission: admission.Options{
		MaxPerIP: 2, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}}, 0)
	dialAs := func(xff string) (*websocket.Conn, error) {
		h := http.Header{}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, g.url, &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			t.Cleanup(func() { c.CloseNow() })
		}
		return c, err
	}
	first, err := dialAs("198.51.100.7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialAs("6.6.6.6, 198.51.100.7"); err != nil { // a spoofed left entry changes nothing
		t.Fatal(err)
	}
	resp, body := upgradeRequest(t, g, "198.51.100.7")
	wantRefusal(t, resp, body, "198.51.100.7")
	if _, err := dialAs("198.51.100.8"); err != nil {
		t.Fatalf("another client behind the proxy: %v", err)
	}
	for range 2 {
		if _, err := dialAs(""); err != nil {
			t.Fatalf("the proxy's own address: %v", err)
		}
	}
	resp, body = upgradeRequest(t, g, "")
	wantRefusal(t, resp, body, "127.0.0.1")
	if got := testutil.ToFloat64(g.m.Rejected.WithLabelValues(admission.ReasonPerIP)); got != 2 {
		t.Errorf("ws_rejected_total{reason=per_ip} = %v, want 2", got)
	}
	if code, _ := readyz(t, g); code != http.StatusOK {
		t.Errorf("/readyz %d: a per-address limit must not make the gateway unready", code)
	}
	first.Close(websocket.StatusNormalClosure, "")
	testkit.Eventually(t, 5*time.Second, "198.51.100.7 admitted again", func() bool {
		c, err := dialAs("198.51.100.7")
		if err == nil {
			c.CloseNow()
		}
		return err == nil
	})
}

// TestAdmissionReleasedOnEveryPath: with MAX_CONNECTIONS=1, every upgrade that does not happen
// (bad user, foreign origin, not an upgrade) and every connection that ends (client close, abrupt
// close, kick for a too-big frame) gives its slot back.
func TestAdmissionReleasedOnEveryPath(t *testing.T) {
	g := startGateway(t, Options{Admission: admission.Options{MaxConnections: 1}}, 0)
	back := func(what string) {
		t.Helper()
		testkit.Eventually(t, 5*time.Second, what+": slot released", func() bool { return g.srv.adm.Count() == 0 })
	}
	get := func(path string, h http.Header) int {
		req, _ := http.NewRequest(http.MethodGet, g.http.URL+path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/ws?user=bad%20name", nil); code != http.StatusBadRequest {
		t.Fatalf("bad user: %d", code)
	}
	back("bad user")
	if code := get("/ws", nil); code != http.StatusUpgradeRequired {
		t.Fatalf("plain GET /ws: %d", code)
	}
	back("not an upgrade")
	if _, _, err := websocket.Dial(context.Background(), g.url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}}); err == nil {
		t.Fatal("foreign origin accepted")
	}
	back("foreign origin")

	c, _ := g.dial(t, "a")
	c.Close(websocket.StatusNormalClosure, "")
	back("client close")
	c, _ = g.dial(t, "b")
	c.CloseNow()
	back("abrupt close")
	c, _ = g.dial(t, "c")
	// The gateway closes with 1009 at the frame's header, so the rest of the write may meet a
	// reset: either way the slot must come back.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = c.Write(ctx, websocket.MessageText, []byte(strings.Repeat("x", int(g.srv.opts.ReadLimit)+1)))
	cancel()
	back("too big")
	g.dial(t, "last") // and the slot is usable
}
