package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/pkg/metrics"
)

// ErrClockSkew is returned (wrapped) by Hold while this holder's clock differs from Redis's
// TIME by more than the allowed skew: it then neither takes nor keeps the lease.
var ErrClockSkew = errors.New("lease: clock off Redis TIME")

// Redis is a lease held in one Redis key whose value is the holder's id, with a TTL. It is
// taken or renewed by one compare-then-act script and released by another, so a holder whose
// key expired and was taken by another can never extend or delete the new holder's key.
//
// With WithClock, every Hold also compares the holder's clock with Redis TIME: a holder whose
// clock is off steps aside (releases the lease) so one with a sound clock publishes.
// A Hold whose command fails on the client (a timeout: the command may still have run) is
// resolved by reading the key back, not by guessing.
type Redis struct {
	client  redis.UniversalClient
	key     string
	id      string
	ttl     time.Duration
	now     func() time.Time
	maxSkew time.Duration // 0: no clock check
	metrics *metrics.Metrics

	mu sync.Mutex // one Hold or Release at a time
}

var _ Lease = (*Redis)(nil)

// An Option tunes NewRedis.
type Option func(*Redis)

// WithClock makes every Hold compare now (the clock the holder stamps ticks with; nil means
// time.Now) with Redis TIME, and refuse the lease while they differ by more than maxSkew
// (the ticker passes half its interval). The round trip's duration is taken into account: a
// holder steps aside only when its clock is off for certain, never because Redis is slow.
func WithClock(now func() time.Time, maxSkew time.Duration) Option {
	return func(r *Redis) {
		if now != nil {
			r.now = now
		}
		r.maxSkew = maxSkew
	}
}

// WithMetrics sets where the measured clock offset goes (ticker_clock_offset_seconds).
func WithMetrics(m *metrics.Metrics) Option { return func(r *Redis) { r.metrics = m } }

// holdScript renews the lease if it is ours, takes it if it is free: 1 when held, 0 when
// someone else has it. Running it twice is harmless, so a call that timed out on the client
// but ran on the server leaves this holder holding, as the read-back and the next Hold find.
var holdScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// releaseScript deletes the lease only if it is ours.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// readBackTimeout bounds the GET that resolves a Hold whose command failed on the client.
const readBackTimeout = time.Second

// NewRedis returns a lease on key (the ticker uses prefix+"ticker:leader") for the holder id,
// lasting ttl after each Hold (LEASE_TTL, 5s by default in the ticker). Hold must be called
// well within ttl to keep it: the ticker calls it every tick.
func NewRedis(client redis.UniversalClient, key, id string, ttl time.Duration, opts ...Option) *Redis {
	r := &Redis{client: client, key: key, id: id, ttl: ttl, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Hold takes or renews the lease and, with WithClock, compares the clock with Redis TIME in
// the same round trip. It returns whether the lease is held now. While the clock is off it
// releases the lease at once (it was never used: only a true return lets the ticker publish)
// and returns false with an error wrapping ErrClockSkew. When the command fails it reads the
// key back: held if the key holds this id (the command ran though the client gave up),
// otherwise false with the error (a holder that cannot renew must stop).
func (r *Redis) Hold(ctx context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var timeCmd *redis.TimeCmd
	var holdCmd *redis.Cmd
	before := r.now()
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if r.maxSkew > 0 {
			timeCmd = p.Time(ctx)
		}
		// EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT, and the script is small.
		holdCmd = holdScript.Eval(ctx, p, []string{r.key}, r.id, r.ttl.Milliseconds())
		return nil
	})
	after := r.now()
	if err != nil {
		return r.readBack(ctx, fmt.Errorf("lease: hold %s: %w", r.key, err))
	}
	n, err := holdCmd.Int64()
	if err != nil {
		return r.readBack(ctx, fmt.Errorf("lease: hold %s: %w", r.key, err))
	}
	if timeCmd != nil {
		if err := r.checkClock(before, after, timeCmd.Val()); err != nil {
			if rerr := r.release(ctx); rerr != nil {
				return false, fmt.Errorf("%w; %w", err, rerr)
			}
			return false, err
		}
	}
	return n == 1, nil
}

// readBack resolves a Hold whose command failed: the lease is held if the key holds this id.
func (r *Redis) readBack(ctx context.Context, err error) (bool, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readBackTimeout)
	defer cancel()
	v, gerr := r.client.Get(rctx, r.key).Result()
	switch {
	case gerr == nil:
		return v == r.id, nil // resolved: the error was the client's, not the lease's
	case errors.Is(gerr, redis.Nil):
		return false, nil
	}
	return false, fmt.Errorf("%w; read back: %w", err, gerr)
}

// checkClock compares this holder's clock, read before and after the round trip, with Redis
// TIME, sets the offset gauge, and returns an error wrapping ErrClockSkew when the clock is
// off by more than maxSkew for certain (beyond half the round trip, the measurement's
// uncertainty).
func (r *Redis) checkClock(before, after, server time.Time) error {
	rtt := after.Sub(before)
	if rtt < 0 { // the clock stepped during the round trip: measure against the later reading
		rtt = 0
		before = after
	}
	offset := before.Add(rtt / 2).Sub(server)
	if r.metrics != nil {
		r.metrics.ClockOffset.Set(offset.Seconds())
	}
	if abs(offset)-rtt/2 > r.maxSkew {
		return fmt.Errorf("lease: clock %v off Redis TIME (round trip %v, allowed %v): %w",
			offset.Round(time.Millisecond), rtt.Round(time.Millisecond), r.maxSkew, ErrClockSkew)
	}
	return nil
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Release deletes the lease if this holder still has it, so a standby takes over at its next
// Hold instead of after the TTL.
func (r *Redis) Release(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.release(ctx)
}

func (r *Redis) release(ctx context.Context) error {
	if err := releaseScript.Run(ctx, r.client, []string{r.key}, r.id).Err(); err != nil {
		return fmt.Errorf("lease: release %s: %w", r.key, err)
	}
	return nil
}
