package presence

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// RedisOptions configure NewRedis. Zero values mean the documented defaults.
type RedisOptions struct {
	// Prefix of every key and channel. Defaults to "ws:". In Cluster mode it must be
	// hash-tagged ("{ws}:") so each script sees all its keys in one slot.
	Prefix string
	// GatewayID is this gateway's id, written in every field and in the heartbeat key. Required.
	GatewayID string
	// Addr is this gateway's listen address, reported in the heartbeat.
	Addr string
	// StartedAt is reported in the heartbeat. Defaults to the time of NewRedis.
	StartedAt time.Time
	// TTL of the heartbeat key (PRESENCE_TTL). The heartbeat is refreshed and the other
	// gateways are checked every TTL/3. Defaults to PRESENCE_TTL's default (pkg/config).
	TTL time.Duration
	// Shards is PRESENCE_SHARDS: how many hashes connections are spread over (see
	// rediskey.Shard). All gateways of a cluster must agree. Defaults to 1: one ws:presence.
	Shards int
	// Now is the clock of the sweep guard and the failure streak. Defaults to time.Now.
	Now func() time.Time
	// OpTimeout bounds one background round trip (a script call of the writer or the
	// sweeper). Defaults to 5s.
	OpTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
}

// Redis is the presence store of a cluster: every connection of every gateway in Redis
// hashes, each gateway proving it is alive with a heartbeat key, and one gateway at a time
// (under a lease) sweeping the fields of gateways whose heartbeat has expired. See
// PROTOCOL.md, "Redis layout".
//
// Join and Leave only touch memory: the connections this gateway holds (the source of truth,
// written back whole whenever Redis may have lost them) and a queue of changes that one
// background writer sends in batches, one Lua script call per shard per batch of up to
// maxBatch changes, retrying with backoff while Redis refuses. Each script refreshes the
// heartbeat first, so a Redis that refuses writes (out of memory, read-only) refuses the
// whole batch, and publishes an event only for a field it actually created or deleted: a
// retried batch never publishes twice, and a connection's joins and leaves alternate whoever
// removes it (this gateway or a sweeper).
//
// Besides the documented keys it keeps, per gateway and shard, an index set of that gateway's
// conn_ids (so a sweep never scans a hash), a swept mark (so a gateway swept while alive
// knows to publish "rejoined" joins when it writes its connections back), and the sweeper
// lease.
type Redis struct {
	client    redis.UniversalClient
	log       *slog.Logger
	metrics   *metrics.Metrics
	id        string
	addr      string
	started   time.Time
	ttl       time.Duration
	now       func() time.Time
	opTimeout time.Duration // bound of one background round trip
	keys      rediskey.Keys
	shards    []rediskey.Shard

	epoch string // this writer's process, in the shards' applied marks

	mu      sync.Mutex
	live    map[string]protocol.User // this gateway's open connections
	pending []change                 // not yet written, oldest first
	seq     uint64                   // of the last change queued
	closed  bool

	// Health of this gateway's own writes, for the sweep guard (unix nanoseconds, 0: none).
	lastOK       atomic.Int64 // the last successful write (every write refreshes the heartbeat)
	healthySince atomic.Int64 // the first success after the last failure
	failingSince atomic.Int64 // the first failure of the current streak

	resync atomic.Bool   // a full write-back is due (at start, after a failure, or asked for)
	wake   chan struct{} // cap 1: something to write
	ctx    context.Context
	stop   context.CancelFunc // ends the background goroutines and their round trips
	wg     sync.WaitGroup
}

// change is one queued Join or Leave.
type change struct {
	seq    uint64 // its place in this writer's order, from 1
	join   bool
	user   protocol.User
	reason string // leaves only
}

var _ Store = (*Redis)(nil)

// maxBatch caps the changes sent in one script call (and the fields in one write-back call):
// 10,000 joins go out in 5 round trips.
const maxBatch = 2000

// opTimeout is the default bound of one background round trip (RedisOptions.OpTimeout).
const opTimeout = 5 * time.Second

// NewRedis returns a store over client (which it does not own) and starts its writer and
// sweeper goroutines; Close stops them. It panics without a GatewayID.
func NewRedis(client redis.UniversalClient, o RedisOptions) *Redis {
	if o.GatewayID == "" {
		panic("presence: NewRedis: GatewayID is required")
	}
	if o.Prefix == "" {
		o.Prefix = rediskey.DefaultPrefix
	}
	if o.TTL <= 0 {
		o.TTL = config.GatewayDefaults().PresenceTTL
	}
	if o.StartedAt.IsZero() {
		o.StartedAt = time.Now()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = opTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	k := rediskey.New(o.Prefix)
	r := &Redis{
		client:    client,
		log:       o.Logger.With("component", "presence"), // the gateway id is the caller's
		metrics:   o.Metrics,
		id:        o.GatewayID,
		addr:      o.Addr,
		started:   o.StartedAt.UTC(),
		ttl:       o.TTL,
		now:       o.Now,
		opTimeout: o.OpTimeout,
		keys:      k,
		shards:    k.Shards(o.Shards),
		epoch:     config.RandomHex(8),
		live:      make(map[string]protocol.User),
		wake:      make(chan struct{}, 1),
	}
	r.ctx, r.stop = context.WithCancel(context.Background())
	r.resync.Store(true) // the first write is a full write-back: it registers the gateway
	r.signal()
	r.wg.Add(2)
	go r.write()
	go r.sweepLoop()
	return r
}

// shardOf is the shard of a user: all of a user's connections live in one shard, so the
// shard's users hash counts them exactly.
func (r *Redis) shardOf(user string) int {
	if len(r.shards) == 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(user))
	return int(h.Sum32() % uint32(len(r.shards)))
}

// Join records u (its Gateway is set to this gateway's id) and queues its write and join event.
func (r *Redis) Join(u protocol.User) {
	u.Gateway = r.id
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.live[u.ConnID] = u
	r.seq++
	r.pending = append(r.pending, change{seq: r.seq, join: true, user: u})
	r.mu.Unlock()
	r.signal()
}

// Leave forgets connID and queues its deletion and leave event. Unknown ids are ignored.
func (r *Redis) Leave(connID, reason string) {
	r.mu.Lock()
	u, ok := r.live[connID]
	if r.closed || !ok {
		r.mu.Unlock()
		return
	}
	delete(r.live, connID)
	r.seq++
	r.pending = append(r.pending, change{seq: r.seq, user: u, reason: reason})
	r.mu.Unlock()
	r.signal()
}

// Resync asks for a full write-back of this gateway's live connections and heartbeat,
// publishing nothing (or "rejoined" joins, if a sweeper removed them meanwhile). The gateway
// calls it after the broker resubscribed (Redis may have restarted empty); the store also does
// it by itself when it finds its heartbeat gone or after a failed write. It returns at once.
func (r *Redis) Resync() {
	r.resync.Store(true)
	r.signal()
}

// WriteFailingSince returns when the current streak of failed presence writes began, or the
// zero time while writes succeed. The gateway's readiness shows it ("presence writes failing
// since …"); the writer keeps retrying meanwhile.
func (r *Redis) WriteFailingSince() time.Time {
	if ns := r.failingSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (r *Redis) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Close stops the background work, flushes the queued changes, removes the connections still
// open as drained (publishing their leaves), then deletes this gateway's indexes and heartbeat
// and removes it from the gateways set, all before it returns. It retries while Redis is
// unreachable until ctx is done.
func (r *Redis) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for id, u := range r.live {
		delete(r.live, id)
		r.seq++
		r.pending = append(r.pending, change{seq: r.seq, user: u, reason: protocol.ReasonDrained})
	}
	r.mu.Unlock()
	r.halt()

	backoff := 20 * time.Millisecond
	for {
		err := r.drain(ctx)
		if err == nil {
			return nil
		}
		if r.metrics != nil {
			r.metrics.PresenceFailures.Inc()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("presence: close: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// drain flushes what is queued, then removes the gateway's own keys.
func (r *Redis) drain(ctx context.Context) error {
	for {
		batch := r.peek()
		if len(batch) == 0 {
			break
		}
		if _, err := r.flush(ctx, batch); err != nil {
			return err
		}
		r.drop(len(batch))
	}
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SRem(ctx, r.keys.Gateways(), r.id) // first: a sweeper must not see it without heartbeat
		for _, s := range r.shards {
			p.Del(ctx, s.Conns(r.id), s.Applied(r.id))
			p.Del(ctx, s.Heartbeat(r.id))
		}
		p.Del(ctx, r.keys.Heartbeat(r.id))
		return nil
	})
	if err != nil {
		return fmt.Errorf("presence: remove gateway %s: %w", r.id, err)
	}
	return nil
}

// halt stops the background goroutines and waits for them.
func (r *Redis) halt() {
	r.stop()
	r.wg.Wait()
}

// kill stops the background work as if the process had died: nothing is cleaned up, so the
// heartbeat expires and other gateways sweep this one. For tests.
func (r *Redis) kill() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.halt()
}
