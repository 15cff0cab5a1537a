package broker

import (
	"context"
	"errors"
	"fmt"
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
	// Prefix of the channel (Prefix+"time") and the canary key (Prefix+"ticker:last").
	// Defaults to "ws:". In Cluster mode it may be hash-tagged ("{ws}:").
	Prefix string
	// TickInterval is the ticker's interval; the canary key lives 10 × TickInterval.
	// Defaults to TICK_INTERVAL's default (pkg/config).
	TickInterval time.Duration
	// CheckInterval is how often the background checker starts a round trip to Redis (a GET
	// of the canary key) once subscribed. A slow round trip does not delay the next one.
	// Defaults to 500ms.
	CheckInterval time.Duration
	// UnreachableAfter is how long without a successful round trip makes Redis unreachable
	// (docs/PROTOCOL.md, /readyz: 3 s). Defaults to 3s.
	UnreachableAfter time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
}

// Redis is the broker of a cluster: ticks travel over one Redis pub/sub channel.
//
// One Redis subscription per broker: the first Subscribe opens it and it stays open until
// Close; later Subscribe calls share it and the broker fans each frame out locally to every
// registered fn, in registration order, from one delivery goroutine.
//
// The subscription's reader never waits on the fns: it appends each frame to a queue the
// delivery goroutine drains, so a slow fn neither stalls the Redis connection nor hides
// frames from the canary, and frames read by a subscription that is then replaced are still
// delivered.
//
// The broker owns the health of its subscription: once subscribed, a background checker
// makes a round trip every CheckInterval, compares ticker:last with the newest seq read
// (the canary) and resubscribes when the subscription is deaf. Health reports what it found.
// go-redis also reconnects and resubscribes by itself; every re-subscription after the first
// is counted in Metrics.PubSubReconnects and reported to the OnResubscribe hooks (the gateway
// writes presence back then, since Redis may have restarted empty).
type Redis struct {
	client  redis.UniversalClient
	log     *slog.Logger
	metrics *metrics.Metrics
	channel string
	lastKey string
	ttl     time.Duration
	every   time.Duration // CheckInterval
	limit   time.Duration // UnreachableAfter

	mu     sync.Mutex
	ps     *redis.PubSub // current subscription; nil before the first Subscribe
	subs   []*redisSub
	hooks  []func()
	closed bool
	bg     context.Context // cancelled by Close: stops the delivery and health goroutines
	stopBG context.CancelFunc
	wg     sync.WaitGroup

	queue    frameQueue   // frames read, waiting for the delivery goroutine
	received atomic.Int64 // newest seq read from any subscription
	base     atomic.Int64 // ticker:last when the current subscription was (re)established
	resubMu  sync.Mutex   // one resubscription at a time (first Subscribe or canary)
	health   healthState
}

type redisSub struct{ fn func([]byte) }

var _ Broker = (*Redis)(nil)

// Tuning of the go-redis channel: the broker's reader never blocks, so the channel only
// absorbs scheduling hiccups; the short send timeout is a last resort that drops a frame
// rather than let Redis disconnect the subscriber.
const (
	redisChanSize        = 64
	redisChanSendTimeout = time.Second
	// resubscribeTimeout bounds a resubscription when the caller's ctx has no deadline.
	resubscribeTimeout = 5 * time.Second
	// canarySlack is how many ticks ticker:last may be ahead before the subscription counts
	// as wedged (docs/PROTOCOL.md, /readyz).
	canarySlack = 2
	// maxQueued bounds the frames waiting for a stuck fn (17 min of ticks at 1 s): past it the
	// oldest are dropped, as the gateway would drop them as stale anyway.
	maxQueued = 1024
)

// NewRedis returns a broker over client, which it does not own (Close leaves it open).
func NewRedis(client redis.UniversalClient, o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = rediskey.DefaultPrefix
	}
	if o.TickInterval <= 0 {
		o.TickInterval = config.TickerDefaults().TickInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 500 * time.Millisecond
	}
	if o.UnreachableAfter <= 0 {
		o.UnreachableAfter = 3 * time.Second
	}
	r := &Redis{
		client:  client,
		log:     o.Logger.With("component", "broker"),
		metrics: o.Metrics,
		channel: rediskey.New(o.Prefix).Time(),
		lastKey: rediskey.New(o.Prefix).TickerLast(),
		ttl:     10 * o.TickInterval,
		every:   o.CheckInterval,
		limit:   o.UnreachableAfter,
	}
	r.bg, r.stopBG = context.WithCancel(context.Background())
	r.queue.init()
	return r
}

// Publish publishes frame on the channel, then sets ticker:last to its seq (with a TTL of
// 10 × TickInterval), in that order, in one pipeline. In Cluster mode both go to the node
// owning ticker:last, so every frame leaves from the same node and arrives in order.
func (r *Redis) Publish(ctx context.Context, frame []byte) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	seq, err := protocol.TickSeqOf(frame)
	if err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	pipe := redis.Cmdable(r.client)
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		// Keyless PUBLISH would go to a random node, and messages from different nodes reach a
		// subscriber in no particular order: publish on the node owning ticker:last instead,
		// which also lets PUBLISH and SET share one connection and one round trip.
		node, err := cc.MasterForKey(ctx, r.lastKey)
		if err != nil {
			return fmt.Errorf("broker: publish %d: find node: %w", seq, err)
		}
		pipe = node
	}
	_, err = pipe.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Publish(ctx, r.channel, frame)
		p.Set(ctx, r.lastKey, seq, r.ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("broker: publish %d: %w", seq, err)
	}
	return nil
}

// Subscribe registers fn. The first call opens the Redis subscription and returns once Redis
// has confirmed it (an error when Redis cannot be reached: the caller may retry); later calls
// share it and fan out locally. fn is dropped when ctx is done or at Close.
func (r *Redis) Subscribe(ctx context.Context, fn func([]byte)) error {
	r.resubMu.Lock() // serializes with a concurrent first Subscribe or a canary resubscription
	defer r.resubMu.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	open := r.ps != nil
	r.mu.Unlock()
	if !open {
		if err := r.subscribe(ctx, false); err != nil {
			return err
		}
		r.startBackground()
	}
	s := &redisSub{fn: fn}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.subs = append(r.subs, s)
	r.mu.Unlock()
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, x := range r.subs {
			if x == s {
				r.subs = append(r.subs[:i:i], r.subs[i+1:]...)
				return
			}
		}
	})
	return nil
}

// OnResubscribe registers f, called (on a goroutine of its own) after every re-subscription
// following the first: go-redis reconnecting, or Ready replacing a wedged subscription.
// The gateway passes presence's Resync so connections are written back after a Redis restart.
func (r *Redis) OnResubscribe(f func()) {
	r.mu.Lock()
	r.hooks = append(r.hooks, f)
	r.mu.Unlock()
}

// subscribe opens a new subscription, waits for its confirmation (bounded by ctx, or by
// resubscribeTimeout without a deadline), replaces the current one and starts its reader.
// Callers hold resubMu.
func (r *Redis) subscribe(ctx context.Context, resub bool) error {
	timeout := resubscribeTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
		if timeout <= 0 {
			return fmt.Errorf("broker: subscribe: %w", context.DeadlineExceeded)
		}
	}
	ps := r.client.Subscribe(ctx, r.channel)
	if err := confirm(ctx, ps, timeout); err != nil {
		_ = ps.Close()
		return fmt.Errorf("broker: subscribe %s: %w", r.channel, err)
	}
	r.observeBase(ctx)
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(redisChanSize),
		redis.WithChannelSendTimeout(redisChanSendTimeout))
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = ps.Close()
		return ErrClosed
	}
	old := r.ps
	r.ps = ps
	r.wg.Add(1) // under mu, so Close's Wait covers it
	r.mu.Unlock()
	go r.read(ps, ch)
	if old != nil {
		_ = old.Close()
	}
	if resub {
		r.resubscribed("canary")
	}
	return nil
}

// confirm waits for the server's subscribe confirmation.
func confirm(ctx context.Context, ps *redis.PubSub, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return context.DeadlineExceeded
		}
		msg, err := ps.ReceiveTimeout(ctx, left)
		if err != nil {
			return err
		}
		if _, ok := msg.(*redis.Subscription); ok {
			return nil
		}
	}
}

// observeBase records ticker:last at (re)subscription, so the canary is not fooled by ticks
// published before this subscription existed. A failed read leaves the old value.
func (r *Redis) observeBase(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	v, err := r.client.Get(ctx, r.lastKey).Int64()
	switch {
	case err == nil:
		r.base.Store(v)
	case errors.Is(err, redis.Nil):
		r.base.Store(0)
	}
}

// read moves frames from one subscription to the delivery queue until the subscription is
// closed. It never waits on a fn, so Redis never sees a slow subscriber and the canary counts
// every frame as soon as it is read.
func (r *Redis) read(ps *redis.PubSub, ch <-chan any) {
	defer r.wg.Done()
	for m := range ch {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			r.mu.Lock()
			current := r.ps == ps && !r.closed
			r.mu.Unlock()
			if current {
				r.wg.Add(1)
				go func() { // off the reader: observeBase does I/O
					defer r.wg.Done()
					r.observeBase(context.Background())
					r.resubscribed("reconnect")
				}()
			}
		case *redis.Message:
			frame := []byte(m.Payload)
			if seq, err := protocol.TickSeqOf(frame); err == nil {
				for {
					cur := r.received.Load()
					if seq <= cur || r.received.CompareAndSwap(cur, seq) {
						break
					}
				}
			}
			r.queue.push(frame)
		}
	}
}

// deliverLoop hands queued frames to the fns, in order, until Close.
func (r *Redis) deliverLoop() {
	defer r.wg.Done()
	var batch [][]byte
	for {
		select {
		case <-r.bg.Done():
			return
		case <-r.queue.ready:
		}
		batch = r.queue.take(batch[:0])
		for _, frame := range batch {
			r.mu.Lock()
			subs, closed := r.subs, r.closed
			r.mu.Unlock()
			if closed {
				return
			}
			for _, s := range subs {
				s.fn(frame)
			}
		}
		clear(batch)
	}
}

// resubscribed counts, logs and reports one re-subscription.
func (r *Redis) resubscribed(cause string) {
	if r.metrics != nil {
		r.metrics.PubSubReconnects.Inc()
	}
	r.mu.Lock()
	hooks := r.hooks
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return
	}
	r.log.Info("broker: resubscribed", "channel", r.channel, "cause", cause, "base_seq", r.base.Load())
	for _, f := range hooks {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			f()
		}()
	}
}

// Close stops the subscription and drops every fn. It leaves the client open.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	ps := r.ps
	r.subs = nil
	r.stopBG()
	r.mu.Unlock()
	var err error
	if ps != nil {
		err = ps.Close()
	}
	r.wg.Wait()
	if err != nil {
		return fmt.Errorf("broker: close: %w", err)
	}
	return nil
}
