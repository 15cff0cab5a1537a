package gateway

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/protocol"
)

var testSecret = []byte("gateway-test-secret-of-32-bytes!")

// startAuthGateway starts a gateway whose verifier is built from o (closed with the test).
func startAuthGateway(t *testing.T, o auth.Options, opts Options) *testGateway {
	t.Helper()
	v, err := auth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	opts.Auth = v
	return startGateway(t, opts, 0)
}

func token(t testing.TB, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Sign(testSecret, auth.TokenSpec{User: user, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// dialAuth dials g with headers and subprotocols; on a refused handshake it returns the status
// and the body.
func (g *testGateway) dialAuth(t testing.TB, query string, h http.Header, subprotocols ...string) (*websocket.Conn, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	c, resp, err := websocket.Dial(ctx, g.url+query, &websocket.DialOptions{HTTPHeader: h, Subprotocols: subprotocols, HTTPClient: hc})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
		return c, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return nil, resp.StatusCode, string(body)
}

// TestAuthBadTokens: every bad token of the table gets 401 with a one-line reason before any
// upgrade, and 50 rounds of the whole table leave no goroutine, no connection and no memory
// behind.
func TestAuthBadTokens(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	g := startAuthGateway(t, auth.Options{
		PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		Issuer:       "https://id.example", Audience: "wsgw",
	}, Options{})
	bad := testkit.BadTokens(t, key, "https://id.example", "wsgw", time.Now())
	try := func(c testkit.BadToken, check bool) {
		h := http.Header{}
		if c.Token != "" {
			h = bearer(c.Token)
		}
		conn, status, body := g.dialAuth(t, "", h)
		if conn != nil {
			t.Fatalf("%s: upgraded", c.Name)
		}
		if check && (status != http.StatusUnauthorized || !strings.Contains(body, c.Want) || strings.Count(strings.TrimSpace(body), "\n") != 0) {
			t.Errorf("%s: %d %q, want 401 with a one-line reason containing %q", c.Name, status, body, c.Want)
		}
	}
	for _, c := range bad {
		try(c, true)
	}
	// The same through the subprotocol a browser uses.
	for _, c := range bad[1:] {
		if c.Token == "" || len(c.Token) > protocol.MaxTokenLen {
			continue
		}
		if conn, status, body := g.dialAuth(t, "", nil, auth.Subprotocol, c.Token); conn != nil || status != http.StatusUnauthorized {
			t.Errorf("%s via subprotocol: %d %q", c.Name, status, body)
		}
	}

	settle := func() (int, uint64) {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapInuse
	}
	goroutines, heap := settle()
	const rounds = 50
	for range rounds {
		for _, c := range bad {
			try(c, false)
		}
	}
	testkit.Eventually(t, 5*time.Second, "goroutines back to where they were", func() bool {
		n, _ := settle()
		return n <= goroutines
	})
	_, heapAfter := settle()
	if grew := int64(heapAfter) - int64(heap); grew > 4<<20 {
		t.Errorf("heap in use grew by %d KiB over %d refused upgrades", grew>>10, rounds*len(bad))
	}
	if n := g.srv.Connections(); n != 0 {
		t.Errorf("%d connections tracked after refused upgrades", n)
	}
	if got, want := testutil.ToFloat64(g.m.Rejected.WithLabelValues("unauthorized")), float64((rounds+1)*len(bad)+len(bad)-2); got != want {
		t.Errorf("ws_rejected_total{reason=unauthorized} = %v, want %v", got, want)
	}
}

// TestAuthUser: the user is the token's; a user parameter must agree (else 403); welcome
// carries exp; the subprotocol form is answered with wsgw.bearer.
func TestAuthUser(t *testing.T) {
	g := startAuthGateway(t, auth.Options{Secret: testSecret}, Options{})
	tok := token(t, "ana", time.Hour)
	exp := time.Now().Add(time.Hour).Unix()

	if conn, status, body := g.dialAuth(t, "?user=bob", bearer(tok)); conn != nil || status != http.StatusForbidden || !strings.Contains(body, "bob") {
		t.Fatalf("mismatched user: %d %q, want 403", status, body)
	}
	for _, q := range []string{"", "?user=ana"} {
		conn, status, body := g.dialAuth(t, q, bearer(tok))
		if conn == nil {
			t.Fatalf("%q: %d %q", q, status, body)
		}
		w := readFrame(t, conn)
		if w.Type != protocol.TypeWelcome || w.User != "ana" || w.Exp < exp-2 || w.Exp > exp {
			t.Fatalf("%q: welcome %+v, want user ana and exp ≈ %d", q, w, exp)
		}
		if conn.Subprotocol() != "" {
			t.Fatalf("header form chose subprotocol %q", conn.Subprotocol())
		}
	}
	conn, status, body := g.dialAuth(t, "", nil, auth.Subprotocol, tok)
	if conn == nil {
		t.Fatalf("subprotocol: %d %q", status, body)
	}
	if conn.Subprotocol() != auth.Subprotocol {
		t.Fatalf("subprotocol answered %q, want %s", conn.Subprotocol(), auth.Subprotocol)
	}
	if w := readFrame(t, conn); w.User != "ana" || w.Exp == 0 {
		t.Fatalf("subprotocol welcome %+v", w)
	}
	if got := testutil.ToFloat64(g.m.Rejected.WithLabelValues("forbidden_user")); got != 1 {
		t.Fatalf("ws_rejected_total{reason=forbidden_user} = %v", got)
	}
}

// TestAuthOriginStillChecked: a valid token does not let a foreign page in.
func TestAuthOriginStillChecked(t *testing.T) {
	g := startAuthGateway(t, auth.Options{Secret: testSecret}, Options{AllowedOrigins: []string{"*.trusted.example"}})
	checkOrigins(t, g, bearer(token(t, "ana", time.Hour)))
}

// readClose reads until the connection closes and returns the close error and when it came.
func readClose(t *testing.T, c *websocket.Conn, within time.Duration) (websocket.CloseError, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read ended without a close frame: %v", err)
			}
			return ce, time.Now()
		}
		if f, _ := protocol.Decode(b); f.Type == protocol.TypeError {
			t.Fatalf("unexpected error frame %s", b)
		}
	}
}

// TestAuthExpiry: at exp the connection is closed with 4001 "token expired".
func TestAuthExpiry(t *testing.T) {
	g := startAuthGateway(t, auth.Options{Secret: testSecret}, Options{})
	conn, _, _ := g.dialAuth(t, "", bearer(token(t, "ana", 2*time.Second)))
	w := readFrame(t, conn)
	ce, at := readClose(t, conn, 10*time.Second)
	if ce.Code != protocol.CloseTokenExpired || ce.Reason != protocol.TokenExpiredReason {
		t.Fatalf("close = %d %q, want 4001 %q", ce.Code, ce.Reason, protocol.TokenExpiredReason)
	}
	if late := at.Sub(time.Unix(w.Exp, 0)); late < -100*time.Millisecond || late > 2*time.Second {
		t.Fatalf("closed %v after exp, want within [0, 2s]", late)
	}
	testkit.Eventually(t, 5*time.Second, "the connection to end", func() bool { return g.srv.Connections() == 0 })
	if got := testutil.ToFloat64(g.m.Disconnects.WithLabelValues(reasonTokenExpired)); got != 1 {
		t.Fatalf("ws_disconnects_total{reason=token_expired} = %v", got)
	}
}

// TestAuthRefresh: a refresh with a valid token for the same user moves the expiry (the
// connection outlives its first token); a bad one gets bad_token and changes nothing.
func TestAuthRefresh(t *testing.T) {
	g := startAuthGateway(t, auth.Options{Secret: testSecret}, Options{})
	conn, _, _ := g.dialAuth(t, "", bearer(token(t, "ana", 2*time.Second)))
	w := readFrame(t, conn)

	for name, tok := range map[string]string{
		"other user": token(t, "bob", time.Hour),
		"garbage":    "x.y.z",
		"expired":    mustSign(t, jwt.MapClaims{"sub": "ana", "exp": time.Now().Add(-time.Hour).Unix()}),
	} {
		write(t, conn, string(protocol.EncodeRefresh(tok)))
		if f := readReply(t, conn); f.Type != protocol.TypeError || f.Code != protocol.CodeBadToken {
			t.Fatalf("refresh with %s: %+v, want bad_token", name, f)
		}
	}
	write(t, conn, `{"type":"refresh","id":"r9"}`)
	if f := readReply(t, conn); f.Code != protocol.CodeBadToken || f.ID != "r9" {
		t.Fatalf("refresh without token: %+v", f)
	}

	write(t, conn, string(protocol.EncodeRefresh(token(t, "ana", 4*time.Second))))
	f := readReply(t, conn)
	if f.Type != protocol.TypeRefreshed || f.Exp <= w.Exp {
		t.Fatalf("refresh: %+v, want refreshed with exp after %d", f, w.Exp)
	}
	write(t, conn, "10") // still served
	if r := readReply(t, conn); r.Type != protocol.TypeFib || r.Result != "55" {
		t.Fatalf("after refresh: %+v", r)
	}
	ce, at := readClose(t, conn, 15*time.Second)
	if ce.Code != protocol.CloseTokenExpired {
		t.Fatalf("close = %d %q", ce.Code, ce.Reason)
	}
	if at.Before(time.Unix(w.Exp, 0).Add(time.Second)) || at.After(time.Unix(f.Exp, 0).Add(2*time.Second)) {
		t.Fatalf("closed at %v: want at the refreshed exp %v, not the first one %v", at, time.Unix(f.Exp, 0), time.Unix(w.Exp, 0))
	}
}

// TestAuthOffRefresh: with authentication off a refresh is a request this server does not
// understand, as any unknown type was in v1, and welcome has no exp.
func TestAuthOffRefresh(t *testing.T) {
	g := startGateway(t, Options{}, 0)
	c, w := g.dial(t, "ana")
	if w.Exp != 0 {
		t.Fatalf("welcome carries exp with authentication off: %+v", w)
	}
	write(t, c, string(protocol.EncodeRefresh("a.b.c")))
	if f := readReply(t, c); f.Type != protocol.TypeError || f.Code != protocol.CodeBadRequest {
		t.Fatalf("refresh with authentication off: %+v", f)
	}
}

// TestAuthJWKSRotation: keys rotated at the provider are followed without a restart, for new
// connections and for an in-band refresh of an open one.
func TestAuthJWKSRotation(t *testing.T) {
	idp := testkit.StartJWKS(t, "k1")
	g := startAuthGateway(t, auth.Options{JWKSURL: idp.URL}, Options{})
	claims := func() jwt.MapClaims { return jwt.MapClaims{"sub": "ana", "exp": time.Now().Add(time.Hour).Unix()} }
	conn, status, body := g.dialAuth(t, "", bearer(idp.Sign(t, "k1", claims())))
	if conn == nil {
		t.Fatalf("k1: %d %q", status, body)
	}
	readFrame(t, conn)

	idp.Serve(t, "k2")
	if c2, status, body := g.dialAuth(t, "", bearer(idp.Sign(t, "k2", claims()))); c2 == nil {
		t.Fatalf("k2 after rotation: %d %q", status, body)
	}
	if c3, status, _ := g.dialAuth(t, "", bearer(idp.Sign(t, "k1", claims()))); c3 != nil || status != http.StatusUnauthorized {
		t.Fatalf("rotated-out k1: %d", status)
	}
	write(t, conn, string(protocol.EncodeRefresh(idp.Sign(t, "k2", claims()))))
	if f := readReply(t, conn); f.Type != protocol.TypeRefreshed {
		t.Fatalf("refresh with k2: %+v", f)
	}
}

func mustSign(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
