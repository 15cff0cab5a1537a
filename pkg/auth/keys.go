package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Algorithms by key type. A key is only ever used with the algorithms of its own type, so a
// token cannot pick an algorithm that makes a public key act as an HMAC secret.
var (
	hmacAlgs = []string{"HS256", "HS384", "HS512"}
	rsaAlgs  = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	edAlgs   = []string{"EdDSA"}
	// jwksAlgs are every asymmetric algorithm: a JWKS may hold keys of any type, and keyfunc
	// hands each token the key of its kid, which jwt then checks is of the algorithm's type.
	jwksAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// ParsePublicKey reads a PEM public key: "PUBLIC KEY" (PKIX: RSA, ECDSA or Ed25519), "RSA PUBLIC
// KEY" (PKCS #1) or a "CERTIFICATE" whose key is used. It returns the key and the algorithms it
// verifies (ECDSA: only the one of its curve).
func ParsePublicKey(data []byte) (key any, algs []string, err error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, nil, fmt.Errorf("PEM block is %q, want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE (never a private key)", block.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, nil, fmt.Errorf("RSA key of %d bits is too small (at least 2048)", k.N.BitLen())
		}
		return k, rsaAlgs, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, []string{"ES256"}, nil
		case elliptic.P384():
			return k, []string{"ES384"}, nil
		case elliptic.P521():
			return k, []string{"ES512"}, nil
		}
		return nil, nil, fmt.Errorf("ECDSA curve %s is not P-256, P-384 or P-521", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return k, edAlgs, nil
	}
	return nil, nil, fmt.Errorf("unsupported public key type %T", key)
}
