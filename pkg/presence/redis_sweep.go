package presence

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// sweepScript removes up to ARGV[3] connections of a dead gateway, atomically with the check
// that it is dead: its heartbeat (KEYS[2]) does not exist and its id (ARGV[1]) is still in the
// gateways set (KEYS[1]). Connections are taken from the gateway's index (KEYS[3]) with SPOP,
// so sweepers running at once share the work and each connection's field is deleted from the
// hash (KEYS[4]) and its leave (reason gateway_lost) published on ARGV[2] exactly once. When
// the index is empty the id leaves the set, and later calls do nothing.
//
// Returns {status, removed}: status -1 means not dead (or already swept), 0 more to do,
// 1 done. Every key starts with the store's prefix, so a hash-tagged prefix keeps them in one
// Cluster slot.
var sweepScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return {-1, 0}
end
local conns = redis.call('SPOP', KEYS[3], tonumber(ARGV[3]))
local n = 0
for _, c in ipairs(conns) do
  local v = redis.call('HGET', KEYS[4], c)
  if v then
    local ok, p = pcall(cjson.decode, v)
    if ok and type(p) == 'table' and p.gateway == ARGV[1] then
      redis.call('HDEL', KEYS[4], c)
      local user = p.user
      if type(user) ~= 'string' then user = '' end
      redis.call('PUBLISH', ARGV[2], '{"type":"leave","conn_id":' .. cjson.encode(c) ..
        ',"user":' .. cjson.encode(user) .. ',"gateway":' .. cjson.encode(ARGV[1]) ..
        ',"reason":"gateway_lost"}')
      n = n + 1
    elseif not ok then
      redis.call('HDEL', KEYS[4], c)
    end
  end
end
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
  return {1, n}
end
return {0, n}
`)

// sweepChunk is how many connections one script call removes, so a dead gateway with many
// connections does not block Redis for long.
const sweepChunk = 1000

// sweepLoop checks the other gateways every TTL/3, jittered by ±25% so gateways started
// together do not sweep in lockstep.
func (r *Redis) sweepLoop() {
	defer r.wg.Done()
	for {
		d := time.Duration(float64(r.ttl/3) * (0.75 + rand.Float64()/2))
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(d):
		}
		ctx, cancel := context.WithTimeout(r.ctx, opTimeout)
		if err := r.sweep(ctx); err != nil {
			r.log.Debug("presence: sweep", "err", err) // the writer reports Redis outages
		}
		cancel()
	}
}

// sweep finds gateways in the set whose heartbeat is gone, O(gateways): SMEMBERS and one
// pipelined EXISTS per other gateway. Each dead one is swept with sweepScript.
func (r *Redis) sweep(ctx context.Context) error {
	ids, err := r.client.SMembers(ctx, r.keys.gateways).Result()
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
			exists[i] = p.Exists(ctx, heartbeatKey(r.keys.prefix, id))
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

// sweepGateway removes a dead gateway's connections, a chunk per script call, and counts and
// logs the sweep unless the first call found nothing to do (another sweeper finished it).
func (r *Redis) sweepGateway(ctx context.Context, id string) error {
	ks := []string{r.keys.gateways, heartbeatKey(r.keys.prefix, id), indexKey(r.keys.prefix, id), r.keys.hash}
	total := 0
	for first := true; ; first = false {
		res, err := sweepScript.Run(ctx, r.client, ks, id, r.keys.events, sweepChunk).Int64Slice()
		if err != nil {
			return fmt.Errorf("presence: sweep gateway %s: %w", id, err)
		}
		if res[0] == -1 {
			if first {
				return nil // alive again, or another gateway swept it
			}
			break
		}
		total += int(res[1])
		if res[0] == 1 {
			break
		}
	}
	if r.metrics != nil {
		r.metrics.Sweeps.Inc()
		r.metrics.SweptConnections.Add(float64(total))
	}
	r.log.Info("presence: swept dead gateway", "dead_gateway", id, "connections", total)
	return nil
}
