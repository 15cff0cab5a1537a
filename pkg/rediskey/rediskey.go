// Package rediskey is the one place the Redis key and channel names of docs/PROTOCOL.md are
// built. Every program, store and tool takes its names from a Keys, so a prefix (REDIS_PREFIX,
// "{ws}:" in Cluster mode) applies everywhere at once and no name is spelled twice.
package rediskey

// DefaultPrefix is the prefix of every key and channel when REDIS_PREFIX is unset.
const DefaultPrefix = "ws:"

// ClusterPrefix is the default in Redis Cluster mode: the hash tag puts every key a script
// touches in one slot.
const ClusterPrefix = "{ws}:"

// Keys builds names under one prefix. The zero value uses no prefix at all; use New.
type Keys struct{ prefix string }

// New returns the names under prefix; an empty prefix means DefaultPrefix.
func New(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{prefix: prefix}
}

// Prefix returns the prefix the names are built under.
func (k Keys) Prefix() string { return k.prefix }

// Presence is the hash of open connections: field conn_id, value the connection's JSON.
func (k Keys) Presence() string { return k.prefix + "presence" }

// Users is the hash of distinct users online: field user, value their open connections.
func (k Keys) Users() string { return k.prefix + "users" }

// Events is the pub/sub channel of join and leave events.
func (k Keys) Events() string { return k.prefix + "presence:events" }

// Gateways is the set of gateways that may still own presence fields (the sweeper's index).
func (k Keys) Gateways() string { return k.prefix + "gateways" }

// Heartbeat is a gateway's heartbeat key, with a TTL of PRESENCE_TTL.
func (k Keys) Heartbeat(gateway string) string { return k.prefix + "gateway:" + gateway }

// Swept marks a gateway whose connections a sweeper removed while it may still be alive: when it
// comes back it writes them again with a "rejoined" join each, then deletes the mark.
func (k Keys) Swept(gateway string) string { return k.prefix + "gateway:" + gateway + ":swept" }

// Sweeper is the lease of the one gateway that checks the others' heartbeats.
func (k Keys) Sweeper() string { return k.prefix + "presence:sweeper" }

// GatewayConns is the set of conn_ids a gateway owns, so a sweep never scans the presence hash.
func (k Keys) GatewayConns(gateway string) string { return k.prefix + "gateway:" + gateway + ":conns" }

// Time is the pub/sub channel of time frames.
func (k Keys) Time() string { return k.prefix + "time" }

// TickerLeader is the publishing lease's key.
func (k Keys) TickerLeader() string { return k.prefix + "ticker:leader" }

// TickerLast holds the seq of the last tick published: the gateways' canary.
func (k Keys) TickerLast() string { return k.prefix + "ticker:last" }
