package loadgen

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/pkg/rediskey"
)

// presenceKey is the presence hash of PROTOCOL.md under prefix.
func presenceKey(prefix string) string { return rediskey.New(prefix).Presence() }

// PresenceWait is the outcome of WaitPresence.
type PresenceWait struct {
	Elapsed  time.Duration // from start until HLEN reached the target
	Last     int64         // the last HLEN read
	TimedOut bool          // ctx ended first
}

// WaitPresence polls HLEN of key every interval until it is at least target, and reports how
// long after start that happened. Polling (not keyspace notifications) keeps it usable on any
// Redis deployment without configuration; 10 ms is finer than the figures it measures.
func WaitPresence(ctx context.Context, rdb redis.UniversalClient, key string, target int64, start time.Time, interval time.Duration) (PresenceWait, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var w PresenceWait
	for {
		n, err := rdb.HLen(ctx, key).Result()
		if err != nil {
			if ctx.Err() != nil {
				w.TimedOut = true
				return w, nil
			}
			return w, fmt.Errorf("loadgen: HLEN %s: %w", key, err)
		}
		w.Last = n
		if n >= target {
			w.Elapsed = time.Since(start)
			return w, nil
		}
		select {
		case <-ctx.Done():
			w.TimedOut = true
			return w, nil
		case <-t.C:
		}
	}
}

// openRedis connects to url and checks it answers.
func openRedis(ctx context.Context, url string) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("loadgen: parse redis url: %w", err)
	}
	rdb := redis.NewClient(opt)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("loadgen: ping redis %s: %w", opt.Addr, err)
	}
	return rdb, nil
}
