package presence

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// sweepChunk is how many connections one sweep script call removes, so a dead gateway with
// many connections never blocks Redis for long (about 1 ms per 100 here; see
// TestSweepChunksStaySmall).
const sweepChunk = 100

// sweptMarkTTL bounds how long a swept mark waits for its gateway to come back.
const sweptMarkTTL = 24 * time.Hour

// sweepLoop checks the other gateways every TTL/3, jittered by ±25% so gateways started
// together do not sweep in lockstep. Only the holder of the sweeper lease checks, so the
// checks cost O(gateways) across the whole cluster, and only while sweepAllowed.
func (r *Redis) sweepLoop() {
	defer r.wg.Done()
	for {
		d := time.Duration(float64(r.ttl/3) * (0.75 + rand.Float64()/2))
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(d):
		}
		if !r.sweepAllowed() {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.opTimeout)
		held, err := leaseScript.Run(ctx, r.client, []string{r.keys.Sweeper()}, r.id, r.ttlMS()).Int()
		if err == nil && held == 1 {
			err = r.sweep(ctx)
		}
		if err != nil {
			r.log.Debug("presence: sweep", "err", err) // the writer reports Redis outages
		}
		cancel()
	}
}

// sweepAllowed is the guard that keeps presence true when Redis refuses writes: a gateway
// sweeps others only while its own heartbeat writes succeed, its last one within TTL/3 + 1 s
// (and TTL/2, so that short test TTLs keep the margin below), and only once they have been
// succeeding for a whole TTL. When Redis refuses writes every heartbeat expires at once;
// nobody sweeps then, and after the outage every gateway has had a TTL to write its heartbeat
// again before anyone may take it for dead.
func (r *Redis) sweepAllowed() bool {
	now := r.now()
	last, since := r.lastOK.Load(), r.healthySince.Load()
	if last == 0 || since == 0 {
		return false
	}
	window := min(r.ttl/3+time.Second, r.ttl/2)
	return now.Sub(time.Unix(0, last)) <= window && now.Sub(time.Unix(0, since)) >= r.ttl
}

// sweep finds gateways in the set whose heartbeat is gone, O(gateways): SMEMBERS and one
// pipelined EXISTS per other gateway. Each dead one is swept with sweepScript.
func (r *Redis) sweep(ctx context.Context) error {
	ids, err := r.client.SMembers(ctx, r.keys.Gateways()).Result()
	if err != nil {
		return fmt.Errorf("presence: sweep: list gateways: %w", err)
	}
	others := ids[:0]
	for _, id := range ids {
		if id != r.id {
			others = append(others, id)
		}
	}
	if len(others) == 0 {
		return nil
	}
	exists := make([]*redis.IntCmd, len(others))
	_, err = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range others {
			exists[i] = p.Exists(ctx, r.keys.Heartbeat(id))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("presence: sweep: check heartbeats: %w", err)
	}
	var errs []error
	for i, id := range others {
		if exists[i].Val() == 0 {
			errs = append(errs, r.sweepGateway(ctx, id))
		}
	}
	return errors.Join(errs...)
}

// sweepGateway removes a dead gateway's connections from every shard, a chunk per script
// call, then forgets it; it counts and logs the sweep unless it removed nothing.
func (r *Redis) sweepGateway(ctx context.Context, id string) error {
	total, done := 0, true
	for i, s := range r.shards {
		ks := []string{s.Heartbeat(id), s.Conns(id), s.Presence(), s.Users(), s.Swept(id), s.Heartbeat(r.id)}
		if len(r.shards) == 1 {
			ks = append(ks, r.keys.Gateways())
		}
		for {
			res, err := sweepScript.Run(ctx, r.client, ks, id, r.keys.Events(), sweepChunk,
				int(sweptMarkTTL.Seconds())).Int64Slice()
			if err != nil {
				return fmt.Errorf("presence: sweep gateway %s, shard %d: %w", id, i, err)
			}
			total += int(res[1])
			if res[0] == -1 {
				done = false // alive again, or another sweeper finished it
			}
			if res[0] != 0 {
				break
			}
		}
	}
	if len(r.shards) > 1 && done {
		err := forgetScript.Run(ctx, r.client, []string{r.keys.Gateways(), r.keys.Heartbeat(id)}, id).Err()
		if err != nil && !isNil(err) {
			return fmt.Errorf("presence: sweep gateway %s: forget: %w", id, err)
		}
	}
	if total == 0 {
		return nil
	}
	if r.metrics != nil {
		r.metrics.Sweeps.Inc()
		r.metrics.SweptConnections.Add(float64(total))
	}
	r.log.Info("presence: swept dead gateway", "dead_gateway", id, "connections", total)
	return nil
}

func isNil(err error) bool { return errors.Is(err, redis.Nil) }

func redisSetGet(ttl time.Duration) redis.SetArgs { return redis.SetArgs{TTL: ttl, Get: true} }
