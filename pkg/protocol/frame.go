package protocol

import (
	"encoding/json"
	"fmt"
	"time"
)

// Frame is any server → client frame, decoded: the union of the fields of every type. Clients,
// tests and the load generator use it; the gateway never decodes its own frames.
type Frame struct {
	Type    string `json:"type"`
	ConnID  string `json:"conn_id,omitempty"`
	User    string `json:"user,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	MaxN    int    `json:"max_n,omitempty"`
	Exp     int64  `json:"exp,omitempty"`
	Seq     int64  `json:"seq,omitempty"`
	Time    string `json:"time,omitempty"`
	ID      string `json:"id,omitempty"`
	N       int    `json:"n,omitempty"`
	Result  string `json:"result,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Decode decodes a server frame.
func Decode(b []byte) (Frame, error) {
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return Frame{}, fmt.Errorf("protocol: decode frame: %w", err)
	}
	if f.Type == "" {
		return Frame{}, fmt.Errorf("protocol: decode frame: missing type")
	}
	return f, nil
}

// ParseTickTime parses a time frame's Time field.
func ParseTickTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("protocol: parse tick time %q: %w", s, err)
	}
	return t, nil
}

// Presence is the value of one field of the presence hash (field = conn_id).
type Presence struct {
	User        string    `json:"user"`
	Gateway     string    `json:"gateway"`
	ConnectedAt time.Time `json:"connected_at"`
}

// User is one online connection as GET /users lists it.
type User struct {
	ConnID      string    `json:"conn_id"`
	User        string    `json:"user"`
	Gateway     string    `json:"gateway"`
	ConnectedAt time.Time `json:"connected_at"`
}

// Users is the body of GET /users: one page of the online connections. Count is all of them
// (HLEN), DistinctUsers how many different users that is; an empty NextCursor marks the last
// page.
type Users struct {
	Count         int    `json:"count"`
	DistinctUsers int    `json:"distinct_users"`
	Users         []User `json:"users"`
	NextCursor    string `json:"next_cursor"`
}

// Presence event types and leave reasons, published on the presence events channel.
const (
	EventJoin  = "join"
	EventLeave = "leave"

	ReasonClosed      = "closed"
	ReasonDrained     = "drained"
	ReasonGatewayLost = "gateway_lost"
	// ReasonRejoined is the reason of a join that writes back a connection swept while its
	// gateway was alive (its Redis link was down longer than PRESENCE_TTL).
	ReasonRejoined = "rejoined"
)

// PresenceEvent is one message on the presence events channel.
type PresenceEvent struct {
	Type    string `json:"type"`
	ConnID  string `json:"conn_id"`
	User    string `json:"user"`
	Gateway string `json:"gateway"`
	Reason  string `json:"reason,omitempty"`
}

// Heartbeat is the value of a gateway's heartbeat key.
type Heartbeat struct {
	Addr        string    `json:"addr"`
	StartedAt   time.Time `json:"started_at"`
	Connections int       `json:"connections"`
}
