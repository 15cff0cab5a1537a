package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Options configure New. At least one of Secret, PublicKeyPEM and JWKSURL must be set; several
// may be, and each token is then checked with the key its algorithm calls for.
type Options struct {
	Secret       []byte // HMAC key: HS256, HS384, HS512
	PublicKeyPEM []byte // PEM public key: RS*/PS* (RSA), ES* (ECDSA, its curve's), EdDSA (Ed25519)
	JWKSURL      string // JWKS endpoint: every asymmetric algorithm, keys picked by kid

	Issuer    string // required iss when set
	Audience  string // required aud when set
	UserClaim string // the claim naming the user. Defaults to "sub".

	// Leeway is the clock skew tolerated on exp, nbf and iat. Defaults to 5s; negative means none.
	Leeway time.Duration
	// JWKSRefresh is how often the JWKS is fetched in the background. Defaults to 5m.
	JWKSRefresh time.Duration
	// UnknownKIDInterval is the least time between fetches caused by an unknown kid. Defaults to 1m.
	UnknownKIDInterval time.Duration
	// HTTPClient fetches the JWKS. Defaults to http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock tokens are checked against. Defaults to time.Now.
	Now func() time.Time
	// Logger receives JWKS fetch failures. Defaults to discarding them.
	Logger *slog.Logger
}

// JWT is the Verifier for JSON Web Tokens. Build it with New; Close stops its JWKS refresh.
// Verify is safe for concurrent use.
type JWT struct {
	parser    *jwt.Parser
	algs      []string // every accepted algorithm, for error messages
	secret    []byte
	pub       any
	pubAlgs   []string
	jwks      *jwks
	userClaim string
}

var _ Verifier = (*JWT)(nil)

// New builds the verifier. With JWKSURL it fetches the key set once before returning (a failure
// is logged, not returned: the keys are fetched again in the background and on the first token
// with an unknown kid) and keeps it fresh until Close.
func New(o Options) (*JWT, error) {
	if o.UserClaim == "" {
		o.UserClaim = DefaultUserClaim
	}
	switch {
	case o.Leeway == 0:
		o.Leeway = DefaultLeeway
	case o.Leeway < 0:
		o.Leeway = 0
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	v := &JWT{userClaim: o.UserClaim}
	if len(o.Secret) > 0 {
		v.secret = o.Secret
		v.algs = append(v.algs, hmacAlgs...)
	}
	if len(o.PublicKeyPEM) > 0 {
		key, algs, err := ParsePublicKey(o.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("auth: public key: %w", err)
		}
		v.pub, v.pubAlgs = key, algs
		v.algs = append(v.algs, algs...)
	}
	if o.JWKSURL != "" {
		j, err := newJWKS(o)
		if err != nil {
			return nil, err
		}
		v.jwks = j
		v.algs = append(v.algs, jwksAlgs...)
	}
	if len(v.algs) == 0 {
		return nil, errors.New("auth: no key: set a secret, a public key or a JWKS URL")
	}
	slices.Sort(v.algs)
	v.algs = slices.Compact(v.algs)
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(v.algs), // never "none", never an algorithm of another key type
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(o.Leeway),
		jwt.WithTimeFunc(o.Now),
	}
	if o.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		popts = append(popts, jwt.WithAudience(o.Audience))
	}
	v.parser = jwt.NewParser(popts...)
	return v, nil
}

// Close stops the background JWKS refresh, if any.
func (v *JWT) Close() {
	if v.jwks != nil {
		v.jwks.close()
	}
}

// Verify checks token's signature, exp (required), nbf, iat, and iss and aud when configured,
// and returns its user and expiry.
func (v *JWT) Verify(ctx context.Context, token string) (Claims, error) {
	if err := checkTokenSyntax(token); err != nil {
		return Claims{}, err
	}
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, v.keyfunc(ctx))
	if err != nil {
		return Claims{}, v.describe(t, err)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil { // WithExpirationRequired makes this unreachable
		return Claims{}, errors.New("token has no valid exp claim")
	}
	user, ok := claims[v.userClaim].(string)
	if !ok {
		return Claims{}, fmt.Errorf("token has no string claim %q naming the user", v.userClaim)
	}
	if err := protocol.ValidateUser(user); err != nil {
		return Claims{}, fmt.Errorf("token claim %q: %v", v.userClaim, err)
	}
	return Claims{User: user, Expiry: exp.Time}, nil
}

// keyfunc hands jwt the key for t: the secret for HMAC, the PEM key for its algorithms, else
// the JWKS. With both a PEM key and a JWKS, a token carrying a kid is the JWKS's.
func (v *JWT) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
			if v.secret == nil {
				return nil, errors.New("no HMAC secret configured")
			}
			return v.secret, nil
		}
		if v.pub != nil && slices.Contains(v.pubAlgs, t.Method.Alg()) {
			if _, hasKID := t.Header["kid"]; v.jwks == nil || !hasKID {
				return v.pub, nil
			}
		}
		if v.jwks != nil {
			return v.jwks.key(ctx, t)
		}
		return nil, fmt.Errorf("no key for algorithm %s", t.Method.Alg())
	}
}

// describe turns jwt's error into one line for the client. It never includes the token.
func (v *JWT) describe(t *jwt.Token, err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("token malformed: not a JWT")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if t != nil && t.Method != nil && !slices.Contains(v.algs, t.Method.Alg()) {
			return fmt.Errorf("token algorithm %q not accepted (accepted: %s)", truncate(t.Method.Alg(), 16), strings.Join(v.algs, ", "))
		}
		return errors.New("token signature invalid")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		if t != nil && t.Method == nil {
			return errors.New("token algorithm not accepted")
		}
		var ke *keyError
		if errors.As(err, &ke) {
			return ke
		}
		return errors.New("token key not found")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errors.New("token has no exp claim (required)")
	case errors.Is(err, jwt.ErrTokenExpired):
		return errors.New("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errors.New("token not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errors.New("token issued in the future (iat)")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errors.New("token issuer not accepted")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errors.New("token audience not accepted")
	}
	return errors.New("token invalid: " + truncate(strings.ReplaceAll(err.Error(), "\n", "; "), 120))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
