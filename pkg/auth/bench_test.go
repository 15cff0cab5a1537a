package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkVerify is the cost a token adds to an upgrade or a refresh, by algorithm, and what a
// refused garbage token costs.
func BenchmarkVerify(b *testing.B) {
	exp := time.Now().Add(time.Hour)
	secret := []byte("bench-secret-bench-secret-bench!")
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	claims := jwt.MapClaims{"sub": "ana", "exp": exp.Unix()}
	cases := []struct {
		name string
		opts Options
		tok  string
		ok   bool
	}{
		{"HS256", Options{Secret: secret}, sign(b, jwt.SigningMethodHS256, secret, claims, nil), true},
		{"RS256", Options{PublicKeyPEM: pemOf(b, &rsaKey.PublicKey)}, sign(b, jwt.SigningMethodRS256, rsaKey, claims, nil), true},
		{"ES256", Options{PublicKeyPEM: pemOf(b, &ecKey.PublicKey)}, sign(b, jwt.SigningMethodES256, ecKey, claims, nil), true},
		{"garbage", Options{Secret: secret}, "not-a-jwt", false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			v, err := New(c.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer v.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, c.tok); (err == nil) != c.ok {
					b.Fatal(err)
				}
			}
		})
	}
}
