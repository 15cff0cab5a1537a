package presence

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Redis store. Each touches the keys of one shard (one Cluster slot;
// see rediskey.Shard), plus, with a single shard, the gateways set in the same slot. Each
// publishes an event only where it created or deleted a field, in the same atomic step, and
// keeps the shard's users hash in step: a user's count is its fields in the shard, the field
// deleted when the count reaches 0.
//
// Under maxmemory with noeviction Redis refuses a script's first denied write (the SET of the
// heartbeat, which the writing scripts do first) before anything else happened, so a batch is
// applied whole or not at all.

// flushScript writes one batch of this gateway's changes to a shard, in order. Each change
// carries its writer's sequence number; the shard remembers the last one applied (KEYS[6],
// "<epoch>:<seq>", the epoch naming this writer's process), so a batch retried after its reply
// was lost (a timeout) publishes nothing twice: a join already applied whose field is gone
// again was swept meanwhile, and comes back with its "rejoined" join.
//
// KEYS: 1 heartbeat (the shard's copy), 2 index, 3 hash, 4 users, 5 swept mark (unused here,
// for the slot), 6 applied, [7 gateways set]. ARGV: 1 heartbeat value, 2 TTL in ms, 3 events
// channel, 4 gateway id, 5 epoch, then per change 7 values: "j" or "l", conn_id, user, field
// value (joins), event JSON, rejoin event JSON (joins), seq.
// Returns 1 when the heartbeat had been missing (Redis restarted, or this gateway was swept).
var flushScript = redis.NewScript(`
local old = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GET')
if KEYS[7] then redis.call('SADD', KEYS[7], ARGV[4]) end
local applied = 0
local a = redis.call('GET', KEYS[6])
if a then
  local e, s = string.match(a, '^(.*):(%d+)$')
  if e == ARGV[5] then applied = tonumber(s) end
end
local last = applied
for i = 6, #ARGV, 7 do
  local c, u, seq = ARGV[i+1], ARGV[i+2], tonumber(ARGV[i+6])
  if ARGV[i] == 'j' then
    redis.call('SADD', KEYS[2], c)
    if redis.call('HSET', KEYS[3], c, ARGV[i+3]) == 1 then
      redis.call('HINCRBY', KEYS[4], u, 1)
      if seq > applied then
        redis.call('PUBLISH', ARGV[3], ARGV[i+4])
      else
        redis.call('PUBLISH', ARGV[3], ARGV[i+5])
      end
    end
  else
    redis.call('SREM', KEYS[2], c)
    if redis.call('HDEL', KEYS[3], c) == 1 then
      if redis.call('HINCRBY', KEYS[4], u, -1) <= 0 then redis.call('HDEL', KEYS[4], u) end
      redis.call('PUBLISH', ARGV[3], ARGV[i+4])
    end
  end
  if seq > last then last = seq end
end
if last > applied then
  redis.call('SET', KEYS[6], ARGV[5] .. ':' .. string.format('%d', last), 'EX', 86400)
end
if old then return 0 end
return 1
`)

// writeBackScript writes a chunk of this gateway's live connections to a shard: fields that
// exist stay as they are; a missing one is created, counted, and announced with its "rejoined"
// join only if the swept mark exists (a sweeper removed it and published its leave). After a
// Redis restart there is no mark, and nothing is published. The last chunk deletes the mark.
//
// KEYS: 1 heartbeat (the shard's copy), 2 index, 3 hash, 4 users, 5 swept mark,
// [6 gateways set]. ARGV: 1 heartbeat value, 2 TTL in ms, 3 events channel, 4 gateway id,
// 5 "1" on the last chunk, then per connection 4 values: conn_id, user, field value, rejoin
// event JSON. Returns how many rejoins it published.
var writeBackScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if KEYS[6] then redis.call('SADD', KEYS[6], ARGV[4]) end
local rejoin = redis.call('EXISTS', KEYS[5]) == 1
local n = 0
for i = 6, #ARGV, 4 do
  local c = ARGV[i]
  redis.call('SADD', KEYS[2], c)
  if redis.call('HSET', KEYS[3], c, ARGV[i+2]) == 1 then
    redis.call('HINCRBY', KEYS[4], ARGV[i+1], 1)
    if rejoin then
      redis.call('PUBLISH', ARGV[3], ARGV[i+3])
      n = n + 1
    end
  end
end
if ARGV[5] == '1' then redis.call('DEL', KEYS[5]) end
return n
`)

// sweepScript removes up to ARGV[3] connections of a dead gateway from a shard, atomically
// with the checks that it is dead (its heartbeat copy, KEYS[1], is gone; with one shard also
// that it is still in the gateways set, KEYS[7]) and that the sweeper itself is alive (its own
// heartbeat copy, KEYS[6], exists: a sweeper whose writes fail sweeps nothing). Connections
// are taken from the dead gateway's index (KEYS[2]) with SPOP, so sweepers running at once
// share the work, and each field of the hash (KEYS[3]) naming the dead gateway is deleted, its
// user uncounted (KEYS[4]) and its leave (reason gateway_lost) published on ARGV[2] exactly
// once. Removing anything sets the swept mark (KEYS[5], TTL ARGV[4] s), read by the gateway if
// it was alive after all. When the index is empty the id leaves the gateways set.
//
// Returns {status, removed}: status -1 means not dead (or already swept, or the sweeper has no
// heartbeat), 0 more to do, 1 done.
var sweepScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[6]) == 0 then
  return {-1, 0}
end
if KEYS[7] and redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 0 then
  return {-1, 0}
end
local conns = redis.call('SPOP', KEYS[2], tonumber(ARGV[3]))
local n = 0
for _, c in ipairs(conns) do
  local v = redis.call('HGET', KEYS[3], c)
  if v then
    local ok, p = pcall(cjson.decode, v)
    if ok and type(p) == 'table' and p.gateway == ARGV[1] then
      redis.call('HDEL', KEYS[3], c)
      local user = p.user
      if type(user) ~= 'string' then user = '' end
      if redis.call('HINCRBY', KEYS[4], user, -1) <= 0 then redis.call('HDEL', KEYS[4], user) end
      redis.call('PUBLISH', ARGV[2], '{"type":"leave","conn_id":' .. cjson.encode(c) ..
        ',"user":' .. cjson.encode(user) .. ',"gateway":' .. cjson.encode(ARGV[1]) ..
        ',"reason":"gateway_lost"}')
      n = n + 1
    elseif not ok then
      redis.call('HDEL', KEYS[3], c)
    end
  end
end
if n > 0 then redis.call('SET', KEYS[5], '1', 'EX', ARGV[4]) end
if redis.call('SCARD', KEYS[2]) == 0 then
  if KEYS[7] then redis.call('SREM', KEYS[7], ARGV[1]) end
  return {1, n}
end
return {0, n}
`)

// leaseScript takes or renews the sweeper lease KEYS[1] for ARGV[1], TTL ARGV[2] ms.
// Returns 1 when ARGV[1] holds it.
var leaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// forgetScript removes a swept gateway from the gateways set KEYS[1] unless its heartbeat
// KEYS[2] came back (several shards: the shard scripts cannot see the set).
var forgetScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
return 0
`)
