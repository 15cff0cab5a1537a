package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Subprotocol is the WebSocket subprotocol a browser offers, followed by its token as a second
// "subprotocol", since it cannot set an Authorization header. The gateway answers with it.
const Subprotocol = "wsgw.bearer"

// FromRequest returns the bearer token of an upgrade request: from `Authorization: Bearer`
// when that header is present, else from the subprotocol pair `wsgw.bearer, <token>`.
// viaSubprotocol tells which. The error is one line for a 401 (ErrNoToken when there is none);
// a returned token is non-empty, at most protocol.MaxTokenLen bytes, and holds only the
// characters of a JWT (base64url and dots).
func FromRequest(h http.Header) (token string, viaSubprotocol bool, err error) {
	if authz := h.Values("Authorization"); len(authz) > 0 {
		if len(authz) > 1 {
			return "", false, errors.New("more than one Authorization header")
		}
		scheme, tok, _ := strings.Cut(strings.TrimSpace(authz[0]), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", false, errors.New("Authorization must use the Bearer scheme")
		}
		tok = strings.TrimSpace(tok)
		if err := checkTokenSyntax(tok); err != nil {
			return "", false, err
		}
		return tok, false, nil
	}
	var protos []string
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			protos = append(protos, strings.TrimSpace(p))
		}
	}
	for i, p := range protos {
		if p != Subprotocol {
			continue
		}
		if i+1 == len(protos) {
			return "", true, errors.New("subprotocol " + Subprotocol + " must be followed by the token")
		}
		if err := checkTokenSyntax(protos[i+1]); err != nil {
			return "", true, err
		}
		return protos[i+1], true, nil
	}
	return "", false, ErrNoToken
}

// checkTokenSyntax rejects, before any parsing, what cannot be a JWT: empty, too long, or
// holding characters outside base64url and '.'.
func checkTokenSyntax(tok string) error {
	if tok == "" {
		return ErrNoToken
	}
	if len(tok) > protocol.MaxTokenLen {
		return fmt.Errorf("token longer than %d bytes", protocol.MaxTokenLen)
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return errors.New("token malformed: a JWT holds only base64url characters and dots")
		}
	}
	return nil
}

// TokenSpec describes a token for Sign.
type TokenSpec struct {
	User      string        // the user named by the token
	TTL       time.Duration // lifetime from Now. Defaults to 1h.
	UserClaim string        // the claim naming the user. Defaults to "sub".
	Issuer    string        // iss, when not empty
	Audience  string        // aud, when not empty
	Now       time.Time     // issue time. Defaults to time.Now().
}

// Sign makes an HS256 token signed with secret, for development and tests (`gateway token`):
// iat and exp, the user claim, and iss / aud when given.
func Sign(secret []byte, s TokenSpec) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: sign: empty secret")
	}
	if err := protocol.ValidateUser(s.User); err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	if s.TTL <= 0 {
		s.TTL = time.Hour
	}
	if s.UserClaim == "" {
		s.UserClaim = DefaultUserClaim
	}
	if s.Now.IsZero() {
		s.Now = time.Now()
	}
	claims := jwt.MapClaims{
		s.UserClaim: s.User,
		"iat":       jwt.NewNumericDate(s.Now),
		"exp":       jwt.NewNumericDate(s.Now.Add(s.TTL)),
	}
	if s.Issuer != "" {
		claims["iss"] = s.Issuer
	}
	if s.Audience != "" {
		claims["aud"] = s.Audience
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return tok, nil
}
