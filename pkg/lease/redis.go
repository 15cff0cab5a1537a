package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a lease held in one Redis key whose value is the holder's id, with a TTL. It is
// acquired with SET NX PX and renewed and released with compare-then-act scripts, so a holder
// whose key expired and was taken by another can never extend or delete the new holder's key.
type Redis struct {
	client redis.UniversalClient
	key    string
	id     string
	ttl    time.Duration

	mu   sync.Mutex
	held bool // whether to renew first: this holder had the lease at its last successful Hold
}

var _ Lease = (*Redis)(nil)

// renewScript extends the lease only if it is still ours: 1 if renewed, 0 otherwise.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the lease only if it is still ours.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// NewRedis returns a lease on key (the ticker uses prefix+"ticker:leader") for the holder id,
// lasting ttl after each Hold (LEASE_TTL, 5s by default in the ticker). Hold must be called
// well within ttl to keep it: the ticker calls it every tick.
func NewRedis(client redis.UniversalClient, key, id string, ttl time.Duration) *Redis {
	return &Redis{client: client, key: key, id: id, ttl: ttl}
}

// Hold renews the lease when this holder had it, and otherwise (or when the renewal finds the
// key gone or someone else's) tries to acquire it. It returns whether the lease is held now.
// On any Redis error it returns false with the error: a holder that cannot renew must stop.
func (r *Redis) Hold(ctx context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held {
		n, err := renewScript.Run(ctx, r.client, []string{r.key}, r.id, r.ttl.Milliseconds()).Int64()
		if err != nil {
			// Stop publishing, but keep trying to renew first: the key may well still be ours,
			// and SET NX would fail on it until it expired.
			return false, fmt.Errorf("lease: renew %s: %w", r.key, err)
		}
		if n == 1 {
			return true, nil
		}
		r.held = false
	}
	ok, err := r.client.SetArgs(ctx, r.key, r.id, redis.SetArgs{Mode: "NX", TTL: r.ttl}).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil // someone else holds it
	}
	if err != nil {
		return false, fmt.Errorf("lease: acquire %s: %w", r.key, err)
	}
	r.held = ok == "OK"
	return r.held, nil
}

// Release deletes the lease if this holder still has it, so a standby takes over at its next
// Hold instead of after the TTL.
func (r *Redis) Release(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = false
	if err := releaseScript.Run(ctx, r.client, []string{r.key}, r.id).Err(); err != nil {
		return fmt.Errorf("lease: release %s: %w", r.key, err)
	}
	return nil
}
