package rediskey

import (
	"strconv"
	"strings"
)

// Shard names the keys of one presence shard: the hash of connections, the hash of users, and
// each gateway's index, heartbeat copy and swept mark in that shard. Every key of a shard lives
// in one Cluster hash slot, so a Lua script can update them together; with PRESENCE_SHARDS > 1
// each shard has a slot of its own, so presence work spreads over the cluster's masters.
//
// With one shard the names are the documented single ones (`ws:presence`, `ws:users`,
// `ws:gateway:<id>`, …), in the prefix's slot. With N > 1, shard i holds `<p>presence:<i>`
// and `<p>users:<i>` (a user's connections all live in one shard, so distinct users are the
// sum of the shards' HLEN), and per gateway `<p>presence:<i>:gateway:<id>` (its heartbeat
// copy) with `…:conns` and `…:swept`. <p> is the prefix, except that a hash tag in it is
// replaced by one per shard: `{ws}:` becomes `{ws:<i>}:`, or `{ws:<i>.<j>}:` with the smallest
// j that puts shard i's slot in the i-th N-th of the 16384 slots. A cluster created with its
// slots spread evenly over M masters (redis-cli --cluster create) then holds one shard per
// master when N = M.
type Shard struct {
	prefix string // the shard's own prefix (hash tag replaced)
	suffix string // "" with one shard, "presence:<i>:" before per-gateway names otherwise
	single bool
	index  int
}

// Shards returns the names of n presence shards (n < 1 means 1).
func (k Keys) Shards(n int) []Shard {
	if n <= 1 {
		return []Shard{{prefix: k.prefix, single: true}}
	}
	out := make([]Shard, n)
	for i := range out {
		p := shardPrefix(k.prefix, i, n)
		out[i] = Shard{prefix: p, suffix: "presence:" + strconv.Itoa(i) + ":", index: i}
	}
	return out
}

// shardPrefix replaces the prefix's hash tag, if any, by one whose slot falls in the i-th n-th
// of the slot space.
func shardPrefix(prefix string, i, n int) string {
	open := strings.IndexByte(prefix, '{')
	if open < 0 {
		return prefix
	}
	end := strings.IndexByte(prefix[open+1:], '}')
	if end <= 0 {
		return prefix // no hash tag: Redis hashes the whole key
	}
	tag := prefix[open+1 : open+1+end]
	lo, hi := i*16384/n+1, (i+1)*16384/n-1 // clear of the edges, where masters split
	cand := tag + ":" + strconv.Itoa(i)
	for j := 1; j < 100000; j++ {
		if s := int(Slot(cand)); s >= lo && s < hi {
			break
		}
		cand = tag + ":" + strconv.Itoa(i) + "." + strconv.Itoa(j)
	}
	return prefix[:open+1] + cand + prefix[open+1+end:]
}

// Presence is the shard's hash of connections: field conn_id, value the connection's JSON.
func (s Shard) Presence() string {
	if s.single {
		return s.prefix + "presence"
	}
	return s.prefix + "presence:" + strconv.Itoa(s.index)
}

// Users is the shard's hash of users: field user, value their open connections.
func (s Shard) Users() string {
	if s.single {
		return s.prefix + "users"
	}
	return s.prefix + "users:" + strconv.Itoa(s.index)
}

// Heartbeat is the gateway's heartbeat as the shard sees it: the heartbeat key itself with one
// shard, a copy with the same TTL in the shard's slot otherwise.
func (s Shard) Heartbeat(gateway string) string { return s.prefix + s.suffix + "gateway:" + gateway }

// Conns is the set of the gateway's conn_ids in this shard, so a sweep never scans the hash.
func (s Shard) Conns(gateway string) string {
	return s.prefix + s.suffix + "gateway:" + gateway + ":conns"
}

// Swept is the gateway's swept mark in this shard (see Keys.Swept).
func (s Shard) Swept(gateway string) string {
	return s.prefix + s.suffix + "gateway:" + gateway + ":swept"
}

// Applied is the last change of the gateway's writer applied in this shard ("<epoch>:<seq>"),
// so a batch retried after a lost reply knows which of its changes Redis already had.
func (s Shard) Applied(gateway string) string {
	return s.prefix + s.suffix + "gateway:" + gateway + ":applied"
}

// Slot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of its hash tag, or of the whole
// key when it has none, modulo 16384.
func Slot(key string) uint16 {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}
