package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
)

// clusterMode builds the Redis broker and presence store over one Redis client. closeFn
// closes that client; call it after both are closed.
func clusterMode(cfg config.Gateway, addr string, started time.Time, log *slog.Logger, m *metrics.Metrics) (broker.Broker, presence.Store, func() error, error) {
	client, err := cfg.Redis.NewClient()
	if err != nil {
		return nil, nil, nil, err
	}
	prefix := cfg.Redis.KeyPrefix()
	rb := broker.NewRedis(client, broker.RedisOptions{
		Prefix: prefix, TickInterval: cfg.TickInterval, Logger: log, Metrics: m,
	})
	store := presence.NewRedis(client, presence.RedisOptions{
		Prefix: prefix, GatewayID: cfg.ID, Addr: addr, StartedAt: started,
		TTL: cfg.PresenceTTL, Shards: cfg.PresenceShards, Logger: log, Metrics: m,
	})
	// After Redis restarts empty, the resubscription is the earliest sign: write presence
	// back then (the store also notices a lost heartbeat by itself).
	rb.OnResubscribe(store.Resync)
	closeFn := func() error {
		if err := client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			return fmt.Errorf("gateway: close redis client: %w", err)
		}
		return nil
	}
	return rb, store, closeFn, nil
}
