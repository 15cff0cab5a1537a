package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/rediskey"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// RedisOptions configure NewRedis. Zero values mean the documented defaults.
type RedisOptions struct {
	// Prefix of every key and channel. Defaults to "ws:". In Cluster mode it must be
	// hash-tagged ("{ws}:") so the sweeper's script sees all its keys in one slot.
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
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
}

// Redis is the presence store of a cluster: every connection of every gateway in one Redis
// hash, each gateway proving it is alive with a heartbeat key, and every gateway sweeping the
// fields of gateways whose heartbeat has expired. See PROTOCOL.md, "Redis layout".
//
// Join and Leave only touch memory: the connections this gateway holds (the source of truth,
// written back whole whenever Redis may have lost them) and a queue of changes that one
// background writer sends in batches, one pipeline of up to maxBatch changes per round trip,
// retrying with backoff while Redis is down. A connection that joins and leaves within one
// batch is written and deleted in the same round trip, and publishes both its join and its
// leave, so every join event has its leave.
//
// Besides the documented keys it keeps one internal index per gateway,
// Prefix+"gateway:<id>:conns", a set of that gateway's conn_ids, maintained in the same
// pipelines as the hash, so the sweeper finds a dead gateway's fields without scanning the hash.
type Redis struct {
	client  redis.UniversalClient
	log     *slog.Logger
	metrics *metrics.Metrics
	id      string
	addr    string
	started time.Time
	ttl     time.Duration
	keys    keys

	mu      sync.Mutex
	live    map[string]protocol.User // this gateway's open connections
	pending []change                 // not yet written, oldest first
	closed  bool

	resync atomic.Bool   // a full write-back is due (at start, after a failure, or asked for)
	wake   chan struct{} // cap 1: something to write
	ctx    context.Context
	stop   context.CancelFunc // ends the background goroutines and their round trips
	wg     sync.WaitGroup
}

// keys are the Redis names, all starting with the prefix (the sweeper script needs that in
// Cluster mode).
type keys struct {
	hash, events, gateways, heartbeat, index string
	prefix                                   string
}

func newKeys(prefix, id string) keys {
	k := rediskey.New(prefix)
	return keys{
		prefix:    prefix,
		hash:      k.Presence(),
		events:    k.Events(),
		gateways:  k.Gateways(),
		heartbeat: k.Heartbeat(id),
		index:     k.GatewayConns(id),
	}
}

func heartbeatKey(prefix, id string) string { return rediskey.New(prefix).Heartbeat(id) }

// indexKey is the internal set of a gateway's conn_ids (not part of PROTOCOL.md's layout).
func indexKey(prefix, id string) string { return rediskey.New(prefix).GatewayConns(id) }

// change is one queued Join or Leave.
type change struct {
	join   bool
	user   protocol.User
	reason string // leaves only
}

var _ Store = (*Redis)(nil)

// maxBatch caps the changes sent in one pipeline (and the fields in one write-back pipeline):
// 10,000 joins go out in 5 round trips.
const maxBatch = 2000

// opTimeout bounds one background round trip.
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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	r := &Redis{
		client:  client,
		log:     o.Logger.With("component", "presence"), // the gateway id is the caller's
		metrics: o.Metrics,
		id:      o.GatewayID,
		addr:    o.Addr,
		started: o.StartedAt.UTC(),
		ttl:     o.TTL,
		keys:    newKeys(o.Prefix, o.GatewayID),
		live:    make(map[string]protocol.User),
		wake:    make(chan struct{}, 1),
	}
	r.ctx, r.stop = context.WithCancel(context.Background())
	r.resync.Store(true) // the first write is a full write-back: it registers the gateway
	r.signal()
	r.wg.Add(2)
	go r.write()
	go r.sweepLoop()
	return r
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
	r.pending = append(r.pending, change{join: true, user: u})
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
	r.pending = append(r.pending, change{user: u, reason: reason})
	r.mu.Unlock()
	r.signal()
}

// Resync asks for a full write-back of this gateway's live connections and heartbeat,
// publishing nothing. The gateway calls it after the broker resubscribed (Redis may have
// restarted empty); the store also does it by itself when it finds its heartbeat gone or after
// a failed write. It returns at once.
func (r *Redis) Resync() {
	r.resync.Store(true)
	r.signal()
}

func (r *Redis) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// List returns every connection in the hash, the whole cluster's, ordered by Sort. Fields
// whose value is not valid presence JSON are skipped.
func (r *Redis) List(ctx context.Context) ([]protocol.User, error) {
	all, err := r.client.HGetAll(ctx, r.keys.hash).Result()
	if err != nil {
		return nil, fmt.Errorf("presence: list: %w", err)
	}
	out := make([]protocol.User, 0, len(all))
	for id, v := range all {
		var p protocol.Presence
		if json.Unmarshal([]byte(v), &p) != nil {
			continue
		}
		out = append(out, protocol.User{ConnID: id, User: p.User, Gateway: p.Gateway, ConnectedAt: p.ConnectedAt})
	}
	Sort(out)
	return out, nil
}

// Close stops the background work, flushes the queued changes, removes the connections still
// open as drained (publishing their leaves), then deletes this gateway's index and heartbeat
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
		r.pending = append(r.pending, change{user: u, reason: protocol.ReasonDrained})
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
		p.SRem(ctx, r.keys.gateways, r.id) // first: a sweeper must not see it without heartbeat
		p.Del(ctx, r.keys.index)
		p.Del(ctx, r.keys.heartbeat)
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
