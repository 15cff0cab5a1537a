package termclient

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Backoff bounds. The first retry after a drop comes quickly (a load balancer usually has
// another replica ready); repeated failures back off to MaxBackoff so a cluster that is down is
// not hammered by every client at once.
const (
	baseBackoff = 500 * time.Millisecond
	maxBackoff  = 10 * time.Second
	// stableAfter is how long a connection must have lived for the next failure to count as a
	// first one again; without it a server that accepts and drops at once would be retried at
	// the base delay forever.
	stableAfter = maxBackoff
)

// backoff returns the wait before retry number attempt (0 for the first): exponential from
// baseBackoff, capped at maxBackoff, drawn uniformly from its upper half so that clients cut off
// together do not come back together.
func backoff(attempt int) time.Duration {
	d := maxBackoff
	if attempt < 16 {
		d = min(baseBackoff<<attempt, maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// closeInfo describes why a connection ended, from the error its Read returned.
type closeInfo struct {
	code   websocket.StatusCode // -1 when no close frame arrived (reset, EOF, gateway killed)
	reason string
	err    error
}

func classify(err error) closeInfo {
	ci := closeInfo{code: websocket.CloseStatus(err), err: err}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		ci.reason = ce.Reason
	}
	return ci
}

// reconnect reports whether the client should connect again. 1001 is a drain (another replica
// will take us); 1006 and a missing close frame mean the gateway or the network died; 1011–1014
// are server-side trouble a retry may fix. Everything else (1000, 1008 policy, 1009 too big,
// protocol errors) would happen again, so the client stops and says why.
func (ci closeInfo) reconnect() bool {
	switch ci.code {
	case -1, websocket.StatusGoingAway, websocket.StatusAbnormalClosure, websocket.StatusInternalError,
		websocket.StatusServiceRestart, websocket.StatusTryAgainLater, websocket.StatusBadGateway:
		return true
	}
	return false
}

// retryAfter is the delay the server asked for in a 1001 drain, if it asked.
func (ci closeInfo) retryAfter() (time.Duration, bool) {
	if ci.code != websocket.StatusGoingAway {
		return 0, false
	}
	return protocol.ParseRetry(ci.reason)
}

// String renders the cause for a person: "1001 going away", "1008 policy violation: too slow",
// "connection lost: connection reset by peer".
func (ci closeInfo) String() string {
	if ci.code == -1 {
		return "connection lost: " + rootCause(ci.err).Error()
	}
	s := fmt.Sprintf("%d %s", int(ci.code), statusName(ci.code))
	if ci.reason != "" && ci.code != websocket.StatusGoingAway {
		s += ": " + ci.reason
	}
	return s
}

func statusName(code websocket.StatusCode) string {
	switch code {
	case websocket.StatusNormalClosure:
		return "normal closure"
	case websocket.StatusGoingAway:
		return "going away"
	case websocket.StatusProtocolError:
		return "protocol error"
	case websocket.StatusUnsupportedData:
		return "unsupported data"
	case websocket.StatusAbnormalClosure:
		return "abnormal closure"
	case websocket.StatusInvalidFramePayloadData:
		return "invalid payload"
	case websocket.StatusPolicyViolation:
		return "policy violation"
	case websocket.StatusMessageTooBig:
		return "message too big"
	case websocket.StatusInternalError:
		return "internal error"
	case websocket.StatusServiceRestart:
		return "service restart"
	case websocket.StatusTryAgainLater:
		return "try again later"
	}
	return "close"
}

// rootCause strips coder/websocket's "failed to get reader: failed to read frame header:"
// wrapping, which says nothing to a person, down to the cause (EOF, connection reset).
func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// handshakeError is a dial that the server refused with an HTTP status: a 4xx (bad user name,
// forbidden origin) will be refused again, so the client stops instead of retrying.
type handshakeError struct {
	status int
	body   string
	err    error
}

func (e *handshakeError) Error() string {
	s := fmt.Sprintf("server refused the connection: HTTP %d %s", e.status, http.StatusText(e.status))
	if e.body != "" {
		s += ": " + e.body
	}
	return s
}

func (e *handshakeError) Unwrap() error { return e.err }

func (e *handshakeError) permanent() bool { return e.status >= 400 && e.status < 500 }
