package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Authentication (docs/PROTOCOL.md, "Authentication (optional)"): with Options.Auth set, every
// upgrade carries a token checked before the upgrade, the connection lives until the token's
// exp (plus the verifier's clock-skew leeway), and a refresh frame moves that moment.

// verifyTimeout bounds one token check: a signature, or at most one JWKS fetch.
const verifyTimeout = 5 * time.Second

// authenticate checks the upgrade's token when authentication is on. It answers 401 (bad or
// missing token) or 403 (a user parameter naming someone else) itself and returns ok false;
// with authentication off it returns a zero Claims and ok true. query is the user parameter as
// sent (empty when absent).
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, query string) (auth.Claims, bool) {
	if s.opts.Auth == nil {
		return auth.Claims{}, true
	}
	token, _, err := auth.FromRequest(r.Header)
	var claims auth.Claims
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), verifyTimeout)
		claims, err = s.opts.Auth.Verify(ctx, token)
		cancel()
	}
	if err != nil {
		s.m.Rejected.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="wsgw"`)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		s.log.Debug("upgrade refused", "status", http.StatusUnauthorized, "err", err, "remote", r.RemoteAddr)
		return auth.Claims{}, false
	}
	if query != "" && query != claims.User {
		s.m.Rejected.WithLabelValues("forbidden_user").Inc()
		http.Error(w, "forbidden: user "+query+" does not match the token's user", http.StatusForbidden)
		return auth.Claims{}, false
	}
	return claims, true
}

// acceptOptions are the upgrade's options: the origin patterns, and with authentication on the
// wsgw.bearer subprotocol, chosen when a browser offers it with its token.
func (s *Server) acceptOptions() *websocket.AcceptOptions {
	o := &websocket.AcceptOptions{OriginPatterns: s.opts.AllowedOrigins}
	if s.opts.Auth != nil {
		o.Subprotocols = []string{auth.Subprotocol}
	}
	return o
}

// armExpiry starts c's expiry timer (authentication on): a timer, not a goroutine, waits.
func (c *conn) armExpiry() {
	if c.exp.IsZero() {
		return
	}
	c.expiry = time.AfterFunc(c.untilExpiry(c.exp), c.expire)
}

// untilExpiry is how long a token expiring at exp keeps its connection: exp passes once the
// verifier's leeway is also spent, so a token accepted at the upgrade is never closed at once.
func (c *conn) untilExpiry(exp time.Time) time.Duration {
	return time.Until(exp.Add(c.s.opts.AuthLeeway))
}

func (c *conn) expire() {
	c.kick(reasonTokenExpired, protocol.CloseTokenExpired, protocol.TokenExpiredReason)
}

// stopExpiry stops the expiry timer; the reader calls it when the connection ends.
func (c *conn) stopExpiry() {
	if c.expiry != nil {
		c.expiry.Stop()
	}
}

// expUnix is the welcome's exp: 0 (omitted) with authentication off.
func (c *conn) expUnix() int64 {
	if c.exp.IsZero() {
		return 0
	}
	return c.exp.Unix()
}

// refresh handles a refresh frame on the reader goroutine: a valid token for the same user
// moves the expiry and is answered with refreshed; anything else is a bad_token error and the
// connection keeps its old expiry.
func (s *Server) refresh(c *conn, req protocol.Request) {
	s.m.FramesIn.WithLabelValues(protocol.TypeRefresh).Inc()
	fail := func(msg string) {
		s.m.FibResults.WithLabelValues(protocol.CodeBadToken).Inc()
		c.send(protocol.EncodeError(req.ID, protocol.CodeBadToken, msg), protocol.TypeError)
	}
	if s.opts.Auth == nil || c.exp.IsZero() {
		s.m.FibResults.WithLabelValues(protocol.CodeBadRequest).Inc()
		c.send(protocol.EncodeError(req.ID, protocol.CodeBadRequest, "authentication is off: nothing to refresh"), protocol.TypeError)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
	claims, err := s.opts.Auth.Verify(ctx, req.Token)
	cancel()
	switch {
	case err != nil:
		fail(err.Error())
		return
	case claims.User != c.user:
		fail("token is for another user")
		return
	}
	// Reset reports false when the timer already fired: the 4001 is on its way, and a
	// refreshed frame would be a lie.
	if !c.expiry.Reset(c.untilExpiry(claims.Expiry)) {
		return
	}
	c.exp = claims.Expiry
	c.send(protocol.EncodeRefreshed(claims.Expiry.Unix()), protocol.TypeRefreshed)
}
