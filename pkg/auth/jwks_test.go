package auth

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgw/wsgw/internal/testkit"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestJWKSRotation: a key rotated in at the provider is used at once (the unknown kid fetches
// the set again), a rotated-out key stops working, and made-up kids cost at most one fetch a
// minute, without waiting.
func TestJWKSRotation(t *testing.T) {
	idp := testkit.StartJWKS(t, "k1")
	clock := &fakeClock{t: testNow}
	v := newVerifier(t, Options{JWKSURL: idp.URL, Now: clock.Now})
	ctx := context.Background()
	verify := func(kid string) error {
		_, err := v.Verify(ctx, idp.Sign(t, kid, claimsFor("ana", clock.Now().Add(time.Hour))))
		return err
	}
	if err := verify("k1"); err != nil {
		t.Fatalf("k1: %v", err)
	}
	if n := idp.Fetches(); n != 1 {
		t.Fatalf("fetches after start = %d, want 1", n)
	}

	idp.Serve(t, "k2") // rotation: k1 out, k2 in
	if err := verify("k2"); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	if n := idp.Fetches(); n != 2 {
		t.Fatalf("fetches after rotation = %d, want 2", n)
	}
	if err := verify("k1"); err == nil || !strings.Contains(err.Error(), "key id unknown") {
		t.Fatalf("rotated-out k1: %v", err)
	}

	// A flood of made-up kids within the minute: no fetch, and no waiting for one.
	start := time.Now()
	for i := range 200 {
		if err := verify("made-up-" + string(rune('a'+i%26))); err == nil {
			t.Fatal("made-up kid accepted")
		}
	}
	if n := idp.Fetches(); n != 2 {
		t.Fatalf("fetches after 200 made-up kids = %d, want 2", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("200 refusals took %v: callers waited for the limiter", d)
	}

	clock.Add(61 * time.Second)
	_ = verify("made-up-again")
	if n := idp.Fetches(); n != 3 {
		t.Fatalf("fetches a minute later = %d, want 3", n)
	}
	// An HMAC token is refused outright: a JWKS never makes a public key an HMAC secret.
	hs := sign(t, jwt.SigningMethodHS256, []byte("whatever-whatever-whatever-whate"), claimsFor("ana", clock.Now().Add(time.Hour)), map[string]any{"kid": "k2"})
	if _, err := v.Verify(ctx, hs); err == nil || !strings.Contains(err.Error(), "not accepted") {
		t.Fatalf("HS256 against a JWKS: %v", err)
	}
}

// TestJWKSBackgroundRefresh: with the unknown-kid fetch spent, the background refresh alone
// picks up a new key.
func TestJWKSBackgroundRefresh(t *testing.T) {
	idp := testkit.StartJWKS(t, "k1")
	clock := &fakeClock{t: testNow}
	v := newVerifier(t, Options{JWKSURL: idp.URL, Now: clock.Now, JWKSRefresh: 100 * time.Millisecond})
	ctx := context.Background()
	_, _ = v.Verify(ctx, idp.Sign(t, "spent", claimsFor("ana", testNow.Add(time.Hour)))) // uses the minute's fetch
	idp.Serve(t, "k1", "k3")
	tok := idp.Sign(t, "k3", claimsFor("ana", testNow.Add(time.Hour)))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := v.Verify(ctx, tok)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("k3 still refused after 10 s of 100 ms refreshes: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJWKSUnreachable: a provider that is down at start does not stop the gateway from starting
// (it is fetched again in the background); tokens are refused meanwhile.
func TestJWKSUnreachable(t *testing.T) {
	v := newVerifier(t, Options{JWKSURL: "http://127.0.0.1:1/jwks.json"})
	if _, err := v.Verify(context.Background(), "a.b.c"); err == nil {
		t.Fatal("accepted with no keys")
	}
}
