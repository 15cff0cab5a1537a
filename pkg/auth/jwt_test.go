package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgw/wsgw/internal/testkit"
)

var testNow = time.Date(2026, 11, 22, 7, 30, 0, 0, time.UTC)

func pemOf(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claimsFor(user string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": user, "exp": exp.Unix(), "iat": testNow.Add(-time.Minute).Unix()}
}

func newVerifier(t testing.TB, o Options) *JWT {
	t.Helper()
	if o.Now == nil {
		o.Now = func() time.Time { return testNow }
	}
	v, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestVerifyAlgorithms(t *testing.T) {
	exp := testNow.Add(time.Hour)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	secret := []byte("a secret of thirty-two bytes....")

	cases := []struct {
		name string
		opts Options
		m    jwt.SigningMethod
		key  any
	}{
		{"HS256", Options{Secret: secret}, jwt.SigningMethodHS256, secret},
		{"HS384", Options{Secret: secret}, jwt.SigningMethodHS384, secret},
		{"HS512", Options{Secret: secret}, jwt.SigningMethodHS512, secret},
		{"RS256", Options{PublicKeyPEM: pemOf(t, &rsaKey.PublicKey)}, jwt.SigningMethodRS256, rsaKey},
		{"RS512", Options{PublicKeyPEM: pemOf(t, &rsaKey.PublicKey)}, jwt.SigningMethodRS512, rsaKey},
		{"PS256", Options{PublicKeyPEM: pemOf(t, &rsaKey.PublicKey)}, jwt.SigningMethodPS256, rsaKey},
		{"ES256", Options{PublicKeyPEM: pemOf(t, &ec256.PublicKey)}, jwt.SigningMethodES256, ec256},
		{"ES384", Options{PublicKeyPEM: pemOf(t, &ec384.PublicKey)}, jwt.SigningMethodES384, ec384},
		{"EdDSA", Options{PublicKeyPEM: pemOf(t, edPub)}, jwt.SigningMethodEdDSA, edPriv},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVerifier(t, c.opts)
			got, err := v.Verify(context.Background(), sign(t, c.m, c.key, claimsFor("ana", exp), nil))
			if err != nil || got.User != "ana" || !got.Expiry.Equal(exp.Truncate(time.Second)) {
				t.Fatalf("Verify = %+v, %v", got, err)
			}
		})
	}
	// A P-256 key verifies ES256 only: an ES384 token signed by another key of the right
	// type is refused by the algorithm list, not by luck.
	v := newVerifier(t, Options{PublicKeyPEM: pemOf(t, &ec256.PublicKey)})
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodES384, ec384, claimsFor("ana", exp), nil)); err == nil || !strings.Contains(err.Error(), "not accepted") {
		t.Fatalf("ES384 on a P-256 key: %v", err)
	}
}

// TestVerifyRejects is the table of bad tokens at the verifier; the gateway's table checks the
// same list end to end (401, nothing left behind).
func TestVerifyRejects(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	pubPEM := pemOf(t, &rsaKey.PublicKey)
	exp := testNow.Add(time.Hour)
	v := newVerifier(t, Options{PublicKeyPEM: pubPEM, Issuer: "https://id.example", Audience: "wsgw"})
	good := claimsFor("ana", exp)
	good["iss"], good["aud"] = "https://id.example", "wsgw"
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, rsaKey, good, nil)); err != nil {
		t.Fatalf("good token: %v", err)
	}
	for _, c := range testkit.BadTokens(t, rsaKey, "https://id.example", "wsgw", testNow) {
		t.Run(c.Name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), c.Token)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.Want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line containing %q", err, c.Want)
			}
			if len(c.Token) > 20 && strings.Contains(err.Error(), c.Token[:20]) {
				t.Fatalf("error echoes the token: %q", err)
			}
		})
	}
}

func TestVerifyUserClaim(t *testing.T) {
	secret := []byte("s3cret-s3cret-s3cret-s3cret-s3cr")
	exp := testNow.Add(time.Hour)
	v := newVerifier(t, Options{Secret: secret, UserClaim: "preferred_username"})
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "x", "preferred_username": "Zoë", "exp": exp.Unix()}, nil)
	if c, err := v.Verify(context.Background(), tok); err != nil || c.User != "Zoë" {
		t.Fatalf("custom claim: %+v %v", c, err)
	}
	for name, claims := range map[string]jwt.MapClaims{
		"missing":  {"sub": "x", "exp": exp.Unix()},
		"not text": {"preferred_username": 7, "exp": exp.Unix()},
		"bad name": {"preferred_username": "a b", "exp": exp.Unix()},
		"too long": {"preferred_username": strings.Repeat("a", 65), "exp": exp.Unix()},
		"slash":    {"preferred_username": "admin/", "exp": exp.Unix()},
	} {
		if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, claims, nil)); err == nil || !strings.Contains(err.Error(), "preferred_username") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestLeeway(t *testing.T) {
	secret := []byte("s3cret-s3cret-s3cret-s3cret-s3cr")
	tok := sign(t, jwt.SigningMethodHS256, secret, claimsFor("ana", testNow.Add(-3*time.Second)), nil)
	if _, err := newVerifier(t, Options{Secret: secret}).Verify(context.Background(), tok); err != nil {
		t.Fatalf("3 s past exp within the default 5 s leeway: %v", err)
	}
	if _, err := newVerifier(t, Options{Secret: secret, Leeway: -1}).Verify(context.Background(), tok); err == nil {
		t.Fatal("no leeway accepted an expired token")
	}
}

func TestParsePublicKey(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(priv)
	for name, data := range map[string][]byte{
		"empty":       nil,
		"not PEM":     []byte("hello"),
		"private key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		"garbage":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
		"small RSA":   pemOf(t, &small.PublicKey),
	} {
		if _, _, err := ParsePublicKey(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})
	if _, algs, err := ParsePublicKey(pkcs1); err != nil || len(algs) != 6 {
		t.Fatalf("PKCS #1: %v %v", algs, err)
	}
}

func TestSign(t *testing.T) {
	secret := []byte("s3cret-s3cret-s3cret-s3cret-s3cr")
	tok, err := Sign(secret, TokenSpec{User: "ana", TTL: time.Minute, Issuer: "i", Audience: "a", Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	c, err := newVerifier(t, Options{Secret: secret, Issuer: "i", Audience: "a"}).Verify(context.Background(), tok)
	if err != nil || c.User != "ana" || !c.Expiry.Equal(testNow.Add(time.Minute)) {
		t.Fatalf("Verify(Sign) = %+v, %v", c, err)
	}
	if _, err := Sign(secret, TokenSpec{User: "a b"}); err == nil {
		t.Fatal("signed an invalid user")
	}
	if _, err := Sign(nil, TokenSpec{User: "ana"}); err == nil {
		t.Fatal("signed with no secret")
	}
}
