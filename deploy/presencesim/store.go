package main

// This file is the simulator's only contact with pkg/presence and its key layout: when the
// presence store's options or internal keys change, this is the one file to adapt.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// storeOptions are what a simulated gateway's store is built from.
type storeOptions struct {
	prefix, id string
	ttl        time.Duration
	shards     int // PRESENCE_SHARDS
	logger     *slog.Logger
}

// store is what the simulator does with a presence store: exactly the calls a gateway makes.
type store interface {
	Join(u protocol.User)
	Leave(connID, reason string)
	Close(ctx context.Context) error
	Resync()
}

// newStore builds the real Redis presence store of one simulated gateway over its own client.
func newStore(client redis.UniversalClient, o storeOptions) (store, error) {
	if o.shards < 1 || o.shards > 1024 {
		return nil, fmt.Errorf("-shards %d: PRESENCE_SHARDS is 1 to 1024", o.shards)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return presence.NewRedis(client, presence.RedisOptions{
		Prefix: o.prefix, GatewayID: o.id, TTL: o.ttl, Shards: o.shards, Logger: o.logger,
	}), nil
}

// crash makes a gateway die like kill -9: its Redis client is closed first, so every later
// round trip of the store fails at once (nothing more reaches Redis: no heartbeat, no leave,
// no cleanup), then Close with an already-cancelled context stops the store's goroutines; its
// drain fails on the closed client and gives up without retrying. The heartbeat key then
// expires and the surviving gateways sweep the dead one's fields, as after a real crash.
func crash(s store, client redis.UniversalClient) {
	_ = client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Close(ctx)
}

// presenceHashes are the hashes holding connection fields (ws:presence, or its shards).
func presenceHashes(prefix string, shards int) []string {
	var h []string
	for _, sh := range rediskey.New(prefix).Shards(shards) {
		h = append(h, sh.Presence())
	}
	return h
}

// remaining is how many connections of gateway id are still indexed for the sweeper, and
// whether the gateway is still listed in the gateways set. The sweep script removes a
// connection from the index and its field from the hash atomically, so 0 and false mean its
// fields are gone from presence.
func remaining(ctx context.Context, c redis.UniversalClient, prefix, id string, shards int) (int64, bool, error) {
	k := rediskey.New(prefix)
	var n int64
	for _, sh := range k.Shards(shards) {
		m, err := c.SCard(ctx, sh.Conns(id)).Result()
		if err != nil {
			return 0, false, err
		}
		n += m
	}
	listed, err := c.SIsMember(ctx, k.Gateways(), id).Result()
	return n, listed, err
}

// heartbeatAlive reports whether gateway id's heartbeat key exists.
func heartbeatAlive(ctx context.Context, c redis.UniversalClient, prefix, id string) (bool, error) {
	n, err := c.Exists(ctx, rediskey.New(prefix).Heartbeat(id)).Result()
	return n == 1, err
}
