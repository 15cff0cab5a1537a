package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxProbes bounds the round trips in flight. Two let a slow Redis (say 2 s per command) be
// probed back to back, so successes keep coming within the unreachable threshold; more would
// make the pool dial new connections, whose handshakes cost round trips of their own.
const maxProbes = 2

// healthState is what the background checker found. Safe for concurrent use.
type healthState struct {
	start    time.Time    // when the checker started; zero before the first Subscribe
	lastOK   atomic.Int64 // unix nanos of the last successful round trip's end
	inFlight atomic.Int32 // probes running

	mu          sync.Mutex
	unreachable bool      // logged as such
	problem     string    // the subscription's, empty when it delivers
	behindSince time.Time // since when ticker:last has been ahead of the canary; zero: not
}

// Health reports the background checker's last findings, without I/O. Before the first
// Subscribe no checker runs and the broker reports healthy.
func (r *Redis) Health() Health {
	h := Health{Store: "redis"}
	if since, down := r.unreachableSince(time.Now()); down {
		h.UnreachableSince = since
	}
	r.health.mu.Lock()
	h.Subscription = r.health.problem
	r.health.mu.Unlock()
	return h
}

// unreachableSince reports whether no round trip has succeeded within UnreachableAfter of
// now, and since when.
func (r *Redis) unreachableSince(now time.Time) (time.Time, bool) {
	if r.health.start.IsZero() {
		return time.Time{}, false
	}
	since := r.health.start
	if ns := r.health.lastOK.Load(); ns != 0 {
		since = time.Unix(0, ns)
	}
	return since, now.Sub(since) > r.limit
}

// startBackground starts the delivery goroutine and the health checker; called once, by the
// first Subscribe (with resubMu held).
func (r *Redis) startBackground() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.health.start = time.Now()
	r.health.lastOK.Store(r.health.start.UnixNano()) // the subscription just answered
	r.wg.Add(2)
	go r.deliverLoop()
	go r.checkLoop()
}

// checkLoop starts a probe every CheckInterval (without waiting for the previous one, up to
// maxProbes at once) and logs reachability changes, until Close.
func (r *Redis) checkLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-r.bg.Done():
			return
		case <-t.C:
		}
		r.noteReachability(time.Now())
		if r.health.inFlight.Load() >= maxProbes {
			continue
		}
		r.health.inFlight.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.health.inFlight.Add(-1)
			ctx, cancel := context.WithTimeout(r.bg, r.limit)
			defer cancel()
			_ = r.Check(ctx)
		}()
	}
}

// noteReachability logs when Redis becomes unreachable and when it answers again.
func (r *Redis) noteReachability(now time.Time) {
	since, down := r.unreachableSince(now)
	r.health.mu.Lock()
	changed := down != r.health.unreachable
	r.health.unreachable = down
	r.health.mu.Unlock()
	switch {
	case changed && down:
		r.log.Warn("broker: redis unreachable", "since", since, "after", r.limit)
	case changed:
		r.log.Info("broker: redis reachable again")
	}
}

// Check makes one round trip (a GET of ticker:last) and checks the canary: when ticker:last
// is more than 2 ahead of both the newest seq read and the value seen at (re)subscription,
// and still is after UnreachableAfter (frames in flight on a slow link), the subscription is
// deaf, so Check replaces it (bounded by ctx) and returns an error naming
// the problem, which Health reports while the resubscription is under way (and after it, if
// it failed, until a later check finds the subscription delivering).
// A missing ticker:last (no ticker running) is fine. The background checker calls it every
// CheckInterval; tests may call it directly.
func (r *Redis) Check(ctx context.Context) error {
	r.mu.Lock()
	closed, subscribed := r.closed, r.ps != nil
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	last, err := r.client.Get(ctx, r.lastKey).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("broker: check: get %s: %w", r.lastKey, err)
	}
	r.roundTripOK(time.Now())
	if errors.Is(err, redis.Nil) || !subscribed {
		r.setProblem("")
		return nil
	}
	seen := max(r.received.Load(), r.base.Load())
	if seen == 0 {
		// No ticker when this subscription began and no tick read yet: a ticker has just
		// started, and its first ticks may still be on their way. Its value is the base.
		r.base.CompareAndSwap(0, last)
		r.setProblem("")
		return nil
	}
	if last <= seen+canarySlack {
		r.health.mu.Lock()
		r.health.behindSince = time.Time{}
		r.health.mu.Unlock()
		r.setProblem("")
		return nil
	}
	// Ahead, but the frames may still be on their way: a slow link delays them as much as it
	// delays this GET, and a slow ticker skips seqs. Deaf only when the subscription is still
	// behind after UnreachableAfter, the same budget a round trip gets.
	r.health.mu.Lock()
	if r.health.behindSince.IsZero() {
		r.health.behindSince = time.Now()
	}
	behind := time.Since(r.health.behindSince)
	r.health.mu.Unlock()
	if behind < r.limit {
		return nil
	}
	wedged := fmt.Errorf("broker: subscription wedged: %s is %d, last received %d", r.lastKey, last, seen)
	if !r.resubMu.TryLock() {
		return wedged // a resubscription is already under way
	}
	defer r.resubMu.Unlock()
	r.setProblem(fmt.Sprintf("wedged (%s is %d, last received %d): resubscribing", r.lastKey, last, seen))
	r.log.Warn("broker: subscription wedged, resubscribing", "ticker_last", last, "received", seen)
	if err := r.subscribe(ctx, true); err != nil {
		return fmt.Errorf("%w; resubscribe: %w", wedged, err)
	}
	r.health.mu.Lock()
	r.health.behindSince = time.Time{}
	r.health.mu.Unlock()
	r.setProblem("") // a new subscription, judged from its own base from now on
	return wedged
}

// roundTripOK records a successful round trip ending at now.
func (r *Redis) roundTripOK(now time.Time) {
	ns := now.UnixNano()
	for {
		cur := r.health.lastOK.Load()
		if ns <= cur || r.health.lastOK.CompareAndSwap(cur, ns) {
			return
		}
	}
}

func (r *Redis) setProblem(p string) {
	r.health.mu.Lock()
	r.health.problem = p
	r.health.mu.Unlock()
}

// frameQueue holds frames read from Redis until the delivery goroutine takes them. push never
// blocks; ready has a token whenever the queue may be non-empty.
type frameQueue struct {
	mu     sync.Mutex
	frames [][]byte
	ready  chan struct{}
}

func (q *frameQueue) init() { q.ready = make(chan struct{}, 1) }

// push appends frame, dropping the oldest beyond maxQueued.
func (q *frameQueue) push(frame []byte) {
	q.mu.Lock()
	if len(q.frames) >= maxQueued {
		copy(q.frames, q.frames[1:])
		q.frames = q.frames[:len(q.frames)-1]
	}
	q.frames = append(q.frames, frame)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take appends every queued frame to dst and empties the queue.
func (q *frameQueue) take(dst [][]byte) [][]byte {
	q.mu.Lock()
	dst = append(dst, q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	q.mu.Unlock()
	return dst
}
