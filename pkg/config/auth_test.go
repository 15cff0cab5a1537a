package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuthOffByDefault(t *testing.T) {
	c, err := LoadGateway([]string{"AUTH_JWT_SECRET=", "AUTH_USER_CLAIM="})
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.Enabled() || c.Auth.UserClaim != "sub" || c.AdminAddr != "" {
		t.Fatalf("auth defaults = %+v", c.Auth)
	}
}

func TestAuthSettings(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	good := filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadGateway([]string{"AUTH_JWT_PUBLIC_KEY_FILE=" + good, "AUTH_JWT_ISSUER=https://id.example",
		"AUTH_JWT_AUDIENCE=wsgw", "AUTH_USER_CLAIM=preferred_username", "ADMIN_ADDR=127.0.0.1:9090"})
	if err != nil {
		t.Fatal(err)
	}
	o := c.Auth.Options()
	if !c.Auth.Enabled() || len(o.PublicKeyPEM) == 0 || o.Issuer != "https://id.example" || o.Audience != "wsgw" ||
		o.UserClaim != "preferred_username" || c.AdminAddr != "127.0.0.1:9090" {
		t.Fatalf("settings = %+v", c.Auth)
	}
	for _, env := range []string{"AUTH_JWT_SECRET=" + strings.Repeat("s", 32), "AUTH_JWKS_URL=https://id.example/jwks.json"} {
		if c, err := LoadGateway([]string{env}); err != nil || !c.Auth.Enabled() {
			t.Errorf("%s: %v", env, err)
		}
	}
}

// TestAuthErrorsNameTheVariable: a bad PEM file, a short secret, a bad URL stop the gateway at
// start, naming the variable.
func TestAuthErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(notPEM, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for env, name := range map[string]string{
		"AUTH_JWT_PUBLIC_KEY_FILE=" + notPEM:           "AUTH_JWT_PUBLIC_KEY_FILE",
		"AUTH_JWT_PUBLIC_KEY_FILE=" + dir + "/missing": "AUTH_JWT_PUBLIC_KEY_FILE",
		"AUTH_JWT_SECRET=short":                        "AUTH_JWT_SECRET",
		"AUTH_JWKS_URL=ftp://x":                        "AUTH_JWKS_URL",
		"AUTH_JWKS_URL=not a url":                      "AUTH_JWKS_URL",
		"AUTH_JWT_ISSUER=i":                            "AUTH_JWT_ISSUER",
		"ADMIN_ADDR=9090":                              "ADMIN_ADDR",
	} {
		_, err := LoadGateway([]string{env})
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n\n") {
			t.Errorf("%s: err = %v", env, err)
		}
	}
	if _, err := LoadTicker([]string{"REDIS_URL=redis://127.0.0.1:6379/0", "ADMIN_ADDR=x"}); err == nil || !strings.Contains(err.Error(), "ADMIN_ADDR") {
		t.Errorf("ticker ADMIN_ADDR=x: %v", err)
	}
}
