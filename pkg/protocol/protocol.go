// Package protocol is the one place the wire format of docs/PROTOCOL.md lives: the frames
// exchanged over /ws, the presence and heartbeat JSON kept in Redis, and the close reasons.
// It does no I/O. Gateway, ticker, client, tests and load tools all import it, so nobody builds
// JSON by hand elsewhere.
//
// Entry points: ParseRequest (client → server), EncodeWelcome, TimeFrame, EncodeFib, EncodeError,
// EncodeRefreshed (server → client), EncodeRefresh (client → server, for clients), Decode (any
// server frame, for clients), ValidateUser.
package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// Frame types.
const (
	TypeWelcome = "welcome"
	TypeTime    = "time"
	TypeFib     = "fib"
	TypeError   = "error"

	// TypeRefresh (client → server) carries a new token; TypeRefreshed answers it. Both exist
	// only with authentication on.
	TypeRefresh   = "refresh"
	TypeRefreshed = "refreshed"
)

// Error codes carried by error frames.
const (
	CodeBadRequest  = "bad_request"
	CodeInvalidN    = "invalid_n"
	CodeRateLimited = "rate_limited"
	CodeBusy        = "busy"
	CodeBadToken    = "bad_token" // a refresh whose token is invalid, expired or for another user
)

// Close codes used by the gateway, as numbers so this package stays free of a WebSocket library.
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001 // drain; reason is RetryReason
	ClosePolicy        = 1008 // rate-limit abuse or slow consumer
	CloseMessageTooBig = 1009
	CloseTokenExpired  = 4001 // authentication on: exp passed without a refresh
)

// TokenExpiredReason is the reason of a CloseTokenExpired close.
const TokenExpiredReason = "token expired"

// Defaults shared by the server and its clients.
const (
	DefaultMaxN = 100000
	MaxIDLen    = 64
	MaxUserLen  = 64
	TimeLayout  = "2006-01-02T15:04:05.000Z"
	GuestPrefix = "guest-"
)

// Welcome is the first frame on every connection.
type Welcome struct {
	Type    string `json:"type"`
	ConnID  string `json:"conn_id"`
	User    string `json:"user"`
	Gateway string `json:"gateway"`
	MaxN    int    `json:"max_n"`
	Exp     int64  `json:"exp,omitempty"` // the token's expiry, Unix seconds; authentication on only
}

// Refreshed answers a valid refresh with the connection's new expiry, Unix seconds.
type Refreshed struct {
	Type string `json:"type"`
	Exp  int64  `json:"exp"`
}

// Refresh is the client's request to extend its connection with a new token.
type Refresh struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

// Time is the tick frame. Seq is the tick's instant in Unix milliseconds divided by the tick
// interval in milliseconds; Time is that instant, RFC 3339 UTC with milliseconds.
type Time struct {
	Type string `json:"type"`
	Seq  int64  `json:"seq"`
	Time string `json:"time"`
}

// Fib answers a Fibonacci request. Result is the decimal value of F(N).
type Fib struct {
	Type   string `json:"type"`
	ID     string `json:"id,omitempty"`
	N      int    `json:"n"`
	Result string `json:"result"`
}

// Error reports a request that cannot be served; the connection stays open.
type Error struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error makes *Error usable as a Go error (for ParseRequest's callers).
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// EncodeWelcome encodes a welcome frame. exp is the token's expiry in Unix seconds, omitted
// when 0 (authentication off).
func EncodeWelcome(connID, user, gateway string, maxN int, exp int64) []byte {
	return mustMarshal(Welcome{Type: TypeWelcome, ConnID: connID, User: user, Gateway: gateway, MaxN: maxN, Exp: exp})
}

// EncodeRefreshed encodes the answer to a valid refresh.
func EncodeRefreshed(exp int64) []byte {
	return mustMarshal(Refreshed{Type: TypeRefreshed, Exp: exp})
}

// EncodeRefresh encodes a client's refresh request carrying token.
func EncodeRefresh(token string) []byte {
	return mustMarshal(Refresh{Type: TypeRefresh, Token: token})
}

// EncodeError encodes an error frame; id is omitted when empty.
func EncodeError(id, code, message string) []byte {
	return mustMarshal(Error{Type: TypeError, ID: id, Code: code, Message: message})
}

// EncodeFib encodes a fib answer. result is a decimal string of up to hundreds of kilobytes,
// so it is appended directly instead of going through encoding/json's escaping scan.
func EncodeFib(id string, n int, result string) []byte {
	b := make([]byte, 0, len(result)+len(id)+48)
	b = append(b, `{"type":"fib"`...)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"result":"`...)
	b = append(b, result...)
	b = append(b, `"}`...)
	return b
}

// TickSeq returns the seq of the tick that stands for instant t (t truncated to the interval).
func TickSeq(t time.Time, interval time.Duration) int64 {
	ms := interval.Milliseconds()
	if ms <= 0 {
		ms = 1
	}
	return t.UnixMilli() / ms
}

// TickTime returns the instant a seq stands for.
func TickTime(seq int64, interval time.Duration) time.Time {
	ms := interval.Milliseconds()
	if ms <= 0 {
		ms = 1
	}
	return time.UnixMilli(seq * ms).UTC()
}

// TimeFrame encodes the tick frame for seq. Encoded once per tick and shared by every
// connection, so the bytes must be treated as immutable.
func TimeFrame(seq int64, interval time.Duration) []byte {
	b := make([]byte, 0, 96) // 68 bytes for a seconds seq today: one allocation
	b = append(b, `{"type":"time","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"time":"`...)
	b = TickTime(seq, interval).AppendFormat(b, TimeLayout)
	b = append(b, `"}`...)
	return b
}

// TickSeqOf extracts the seq of a time frame without a full JSON decode: the gateway calls it
// once per received tick to drop duplicates. It accepts any valid time frame, falling back to
// encoding/json when the fast path does not match.
func TickSeqOf(frame []byte) (int64, error) {
	const prefix = `{"type":"time","seq":`
	if len(frame) > len(prefix) && string(frame[:len(prefix)]) == prefix {
		i := len(prefix)
		j := i
		for j < len(frame) && frame[j] >= '0' && frame[j] <= '9' {
			j++
		}
		if j > i && j < len(frame) && (frame[j] == ',' || frame[j] == '}') {
			if v, err := strconv.ParseInt(string(frame[i:j]), 10, 64); err == nil {
				return v, nil
			}
		}
	}
	var t Time
	if err := json.Unmarshal(frame, &t); err != nil {
		return 0, fmt.Errorf("protocol: decode time frame: %w", err)
	}
	if t.Type != TypeTime {
		return 0, fmt.Errorf("protocol: not a time frame: type %q", t.Type)
	}
	return t.Seq, nil
}

// TickTimeOf extracts the instant a time frame stands for (its "time" field), without a full
// JSON decode when the frame is in the form TimeFrame writes. Gateways compare it with their
// own clock to refuse ticks from the future; unlike seq it does not depend on TICK_INTERVAL.
func TickTimeOf(frame []byte) (time.Time, error) {
	const key = `,"time":"`
	if i := bytes.Index(frame, []byte(key)); i >= 0 {
		rest := frame[i+len(key):]
		if j := bytes.IndexByte(rest, '"'); j > 0 {
			if t, err := time.Parse(TimeLayout, string(rest[:j])); err == nil {
				return t, nil
			}
		}
	}
	var t Time
	if err := json.Unmarshal(frame, &t); err != nil {
		return time.Time{}, fmt.Errorf("protocol: decode time frame: %w", err)
	}
	if t.Type != TypeTime {
		return time.Time{}, fmt.Errorf("protocol: not a time frame: type %q", t.Type)
	}
	parsed, err := time.Parse(time.RFC3339Nano, t.Time)
	if err != nil {
		return time.Time{}, fmt.Errorf("protocol: time frame: bad time %q: %w", t.Time, err)
	}
	return parsed, nil
}

// ValidateUser checks a display name: 1–64 characters, each a Unicode letter or digit or one of
// `_` `.` `-`. The error is one line, suitable as an HTTP 400 body.
func ValidateUser(user string) error {
	if !utf8.ValidString(user) {
		return fmt.Errorf("user must be valid UTF-8")
	}
	n := 0
	for _, r := range user {
		n++
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("user may contain only letters, digits, '_', '.' and '-' (got %q)", r)
		}
	}
	if n == 0 {
		return fmt.Errorf("user must not be empty")
	}
	if n > MaxUserLen {
		return fmt.Errorf("user must be at most %d characters (got %d)", MaxUserLen, n)
	}
	return nil
}

// RetryReason is the close reason of a 1001 drain: the delay after which the client should
// reconnect.
func RetryReason(retry time.Duration) string {
	return `{"retry_ms":` + strconv.FormatInt(retry.Milliseconds(), 10) + `}`
}

// ParseRetry reads a RetryReason. ok is false when reason is not one.
func ParseRetry(reason string) (time.Duration, bool) {
	var r struct {
		RetryMS *int64 `json:"retry_ms"`
	}
	if err := json.Unmarshal([]byte(reason), &r); err != nil || r.RetryMS == nil || *r.RetryMS < 0 {
		return 0, false
	}
	return time.Duration(*r.RetryMS) * time.Millisecond, true
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("protocol: marshal %T: %v", v, err)) // only fixed struct types reach here
	}
	return b
}
