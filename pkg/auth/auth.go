// Package auth checks the bearer tokens of docs/PROTOCOL.md's optional authentication: a JWT
// carried in `Authorization: Bearer` or in the `wsgw.bearer` subprotocol, signed with an HMAC
// secret (HS256/384/512), a PEM public key (RS*, PS*, ES*, EdDSA) or a key from a JWKS endpoint
// that rotates without a restart.
//
// Entry points: New builds the JWT verifier from Options; FromRequest takes the token out of an
// upgrade request; Sign makes an HS256 token (`gateway token`). The gateway sees only the
// Verifier interface.
package auth

import (
	"context"
	"errors"
	"time"
)

// Verifier checks a token and says whom it names and until when.
//
// Verify is called concurrently, from every upgrade and every in-band refresh; implementations
// are safe for that. It returns quickly: a signature check, and at most one bounded key fetch
// (JWKS, an unknown key id) per minute for the whole process. The error is one line a client may
// read (the body of a 401, the message of a bad_token error) and never echoes the token.
type Verifier interface {
	Verify(ctx context.Context, token string) (Claims, error)
}

// Claims is what a verified token grants: a connection for User until Expiry.
type Claims struct {
	User   string    // the user claim, a valid user name (protocol.ValidateUser)
	Expiry time.Time // the token's exp; a connection ends then unless refreshed
}

// ErrNoToken means the request carried no token at all.
var ErrNoToken = errors.New("token missing: send Authorization: Bearer <token> or the subprotocols wsgw.bearer, <token>")

// Defaults of Options.
const (
	DefaultUserClaim   = "sub"
	DefaultLeeway      = 5 * time.Second
	DefaultJWKSRefresh = 5 * time.Minute
	// DefaultUnknownKIDInterval is the least time between two fetches of the JWKS caused by a
	// token whose key id is not known: a rotation is seen at once, a flood of made-up key ids
	// costs one request a minute.
	DefaultUnknownKIDInterval = time.Minute
	// DefaultJWKSTimeout bounds one fetch of the JWKS.
	DefaultJWKSTimeout = 5 * time.Second
)
