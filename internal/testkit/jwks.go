package testkit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// JWKS is an identity provider's key endpoint on a loopback httptest server: it serves the
// public halves of its current ES256 keys and signs tokens with any key it ever made, so a test
// can rotate keys and see a gateway follow without a restart. Safe for concurrent use.
type JWKS struct {
	URL string

	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey // every key made, by kid
	served  []string                     // kids in the served set
	fetches atomic.Int64
}

// StartJWKS starts the endpoint, closed when the test ends, serving one key per kid given.
func StartJWKS(t testing.TB, kids ...string) *JWKS {
	t.Helper()
	j := &JWKS{keys: map[string]*ecdsa.PrivateKey{}}
	j.Serve(t, kids...)
	srv := httptest.NewServer(http.HandlerFunc(j.handle))
	t.Cleanup(srv.Close)
	j.URL = srv.URL + "/.well-known/jwks.json"
	return j
}

// Serve makes kids (creating their keys on first use) the whole served set: a rotation.
func (j *JWKS) Serve(t testing.TB, kids ...string) {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, kid := range kids {
		if j.keys[kid] == nil {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			j.keys[kid] = k
		}
	}
	j.served = append([]string(nil), kids...)
}

// Fetches is how many times the set was requested.
func (j *JWKS) Fetches() int64 { return j.fetches.Load() }

// Sign signs claims with kid's key (served or not), putting kid in the header.
func (j *JWKS) Sign(t testing.TB, kid string, claims jwt.MapClaims) string {
	t.Helper()
	j.mu.Lock()
	k := j.keys[kid]
	j.mu.Unlock()
	if k == nil {
		var err error
		if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil { // a key nobody serves
			t.Fatal(err)
		}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (j *JWKS) handle(w http.ResponseWriter, r *http.Request) {
	j.fetches.Add(1)
	store := jwkset.NewMemoryStorage()
	j.mu.Lock()
	for _, kid := range j.served {
		jwk, err := jwkset.NewJWKFromKey(&j.keys[kid].PublicKey, jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgES256, USE: jwkset.UseSig},
		})
		if err == nil {
			err = store.KeyWrite(r.Context(), jwk)
		}
		if err != nil {
			j.mu.Unlock()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	j.mu.Unlock()
	b, err := store.JSONPublic(context.WithoutCancel(r.Context()))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
