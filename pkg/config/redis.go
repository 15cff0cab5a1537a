package config

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// NewClient builds the go-redis client for these settings: a plain client for REDIS_URL, a
// failover client for Sentinel, a cluster client for REDIS_ADDRS alone. Only call it when
// Enabled.
//
// Every client honours context deadlines on its sockets (ContextTimeoutEnabled, off by default
// in go-redis): /readyz and the presence writer bound their calls with contexts, and without
// it a call to an unreachable Redis waits for go-redis's own retries instead.
func (r Redis) NewClient() (redis.UniversalClient, error) {
	if r.URL != "" {
		o, err := redisOptions(r)
		if err != nil {
			return nil, err
		}
		o.ContextTimeoutEnabled = true
		return redis.NewClient(o), nil
	}
	if r.SentinelMaster != "" {
		return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: r.SentinelMaster, SentinelAddrs: r.Addrs, ContextTimeoutEnabled: true}), nil
	}
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: r.Addrs, ContextTimeoutEnabled: true}), nil
}

func redisOptions(r Redis) (*redis.Options, error) {
	o, err := redis.ParseURL(r.URL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return o, nil
}

// RandomHex returns n random bytes as 2n lowercase hex digits.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}
