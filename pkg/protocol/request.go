package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Request is a parsed client request: a Fibonacci request (Type TypeFib, N) or a token refresh
// (Type TypeRefresh, Token).
type Request struct {
	Type  string // TypeFib or TypeRefresh
	ID    string // echoed in the answer; empty when the request had none
	N     int
	Token string // the new token of a refresh; never empty then
}

// MaxTokenLen bounds a token, in a refresh frame or an upgrade request. Real JWTs are well under
// 2 KiB; the bound keeps a made-up one from costing a signature check on kilobytes.
const MaxTokenLen = 8192

// ParseRequest parses one client frame. binary tells whether it arrived as a binary frame.
// On failure it returns the error frame to send (its ID set whenever the request carried a
// valid one); the connection stays open either way.
//
// Accepted forms: {"type":"fib","n":10,"id":"r1"}, plain "10" and "fib 10", and
// {"type":"refresh","token":"…"} (a refresh without a usable token is a bad_token error).
func ParseRequest(data []byte, binary bool, maxN int) (Request, *Error) {
	if binary {
		return Request{}, newError("", CodeBadRequest, "binary frames are not supported; send text")
	}
	text := bytes.TrimSpace(data)
	if len(text) == 0 {
		return Request{}, newError("", CodeBadRequest, "empty frame")
	}
	switch text[0] {
	case '{':
		return parseJSON(text, maxN)
	case '[':
		return Request{}, newError("", CodeBadRequest, "expected a JSON object with a \"type\"")
	}
	// Plain-text shortcuts for wscat: "10" or "fib 10".
	s := string(text)
	if rest, ok := strings.CutPrefix(s, "fib"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
		return parseN(strings.TrimSpace(rest), "", maxN)
	}
	if looksScalar(s) {
		return parseN(s, "", maxN)
	}
	return Request{}, newError("", CodeBadRequest, `unknown message; send a number like 10, "fib 10" or {"type":"fib","n":10}`)
}

// looksScalar reports whether plain text was meant as a number (so a bad one is invalid_n,
// not bad_request): it starts like a JSON number or string.
func looksScalar(s string) bool {
	c := s[0]
	return c == '-' || c == '+' || c == '.' || c == '"' || (c >= '0' && c <= '9')
}

func parseJSON(text []byte, maxN int) (Request, *Error) {
	var msg struct {
		Type  *string         `json:"type"`
		ID    json.RawMessage `json:"id"`
		N     json.RawMessage `json:"n"`
		Token json.RawMessage `json:"token"`
	}
	if err := json.Unmarshal(text, &msg); err != nil {
		return Request{}, newError("", CodeBadRequest, "malformed JSON: "+jsonErr(err))
	}
	var id string
	if len(msg.ID) > 0 && string(msg.ID) != "null" {
		if err := json.Unmarshal(msg.ID, &id); err != nil {
			return Request{}, newError("", CodeBadRequest, "id must be a string")
		}
		if len(id) > MaxIDLen {
			return Request{}, newError("", CodeBadRequest, fmt.Sprintf("id must be at most %d characters", MaxIDLen))
		}
	}
	if msg.Type == nil {
		return Request{}, newError(id, CodeBadRequest, `missing "type"`)
	}
	switch *msg.Type {
	case TypeFib:
		return parseN(string(msg.N), id, maxN)
	case TypeRefresh:
		return parseRefresh(msg.Token, id)
	}
	return Request{}, newError(id, CodeBadRequest, fmt.Sprintf("unknown type %q", truncate(*msg.Type, 32)))
}

// parseRefresh accepts a token that is a non-empty JSON string of at most MaxTokenLen bytes.
// Whether it is a valid token is for the gateway's verifier to say.
func parseRefresh(raw json.RawMessage, id string) (Request, *Error) {
	var token string
	if len(raw) == 0 || json.Unmarshal(raw, &token) != nil || strings.TrimSpace(token) == "" {
		return Request{}, newError(id, CodeBadToken, `refresh needs "token": a JWT as a string`)
	}
	if len(token) > MaxTokenLen {
		return Request{}, newError(id, CodeBadToken, fmt.Sprintf("token must be at most %d bytes", MaxTokenLen))
	}
	return Request{Type: TypeRefresh, ID: id, Token: token}, nil
}

// parseN accepts a JSON number (the raw token s) whose value is a whole number in [0, maxN]:
// 10 and 1e2 and 10.0 pass; 10.5, -1, "10", 1e400, null and anything else are invalid_n.
func parseN(s, id string, maxN int) (Request, *Error) {
	bad := func() (Request, *Error) { // built only on failure: success is the per-frame path
		return Request{}, newError(id, CodeInvalidN, fmt.Sprintf("n must be an integer from 0 to %d", maxN))
	}
	if !isJSONNumber(s) { // also rejects "" and null
		return bad()
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		if v < 0 || v > int64(maxN) {
			return bad()
		}
		return Request{Type: TypeFib, ID: id, N: int(v)}, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || f != math.Trunc(f) || f < 0 || f > float64(maxN) {
		return bad()
	}
	return Request{Type: TypeFib, ID: id, N: int(f)}, nil
}

// isJSONNumber reports whether s is exactly one JSON number token (RFC 8259 grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), so "0x10", "+1", "01" and "1 2" are rejected.
func isJSONNumber(s string) bool {
	i := 0
	digits := func() bool {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(s)
}

func newError(id, code, msg string) *Error {
	return &Error{Type: TypeError, ID: id, Code: code, Message: msg}
}

func jsonErr(err error) string {
	return truncate(strings.TrimPrefix(err.Error(), "json: "), 120)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
