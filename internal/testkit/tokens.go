package testkit

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BadToken is a token an authenticating gateway must refuse, with a word its one-line reason
// contains.
type BadToken struct {
	Name  string
	Token string
	Want  string
}

// BadTokens returns the classic bad tokens for a verifier that trusts the RSA public key of key
// and requires iss and aud, checked at now: none at all, `alg: none`, HS256 signed with the PEM
// public key as the secret (algorithm confusion), a wrong iss, a wrong aud, expired, nbf in the
// future, no exp, a forged signature, garbage, and a 16 KB token. Each is otherwise valid for
// user "ana".
func BadTokens(t testing.TB, key *rsa.PrivateKey, iss, aud string, now time.Time) []BadToken {
	t.Helper()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "ana", "iss": iss, "aud": aud, "iat": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	signed := func(m jwt.SigningMethod, k any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(k)
		if err != nil {
			t.Fatalf("testkit: sign %s: %v", m.Alg(), err)
		}
		return s
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := "-----BEGIN PUBLIC KEY-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END PUBLIC KEY-----\n"
	good := signed(jwt.SigningMethodRS256, key, claims(nil))
	parts := strings.Split(good, ".")
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":4102444800}`)) + "." + parts[2]
	huge := parts[0] + "." + strings.Repeat("A", 16<<10) + "." + parts[2]
	return []BadToken{
		{"none", "", "missing"},
		{"alg none", signed(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)), "not accepted"},
		{"HS256 with the public key as secret", signed(jwt.SigningMethodHS256, []byte(pubPEM), claims(nil)), "not accepted"},
		{"wrong iss", signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), "issuer"},
		{"wrong aud", signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["aud"] = "other" })), "audience"},
		{"expired", signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })), "expired"},
		{"nbf in the future", signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), "not valid yet"},
		{"no exp", signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { delete(c, "exp") })), "exp"},
		{"forged payload", forged, "signature"},
		{"garbage", "not-a-jwt", "malformed"},
		{"16 KB", huge, "longer than"},
	}
}
