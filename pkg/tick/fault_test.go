package tick

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/lease"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// A skewable clock: the machine's clock plus an offset the test moves (the machine clock is
// never touched).
type skewClock struct{ offset atomic.Int64 }

func (c *skewClock) now() time.Time      { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *skewClock) set(d time.Duration) { c.offset.Store(int64(d)) }

// startTicker runs one ticker (lease + Redis broker + Run) on its own client until the test
// ends: the real ticker program's wiring, with a clock seam.
func startTicker(t *testing.T, addr, prefix, id string, clock func() time.Time, interval, ttl time.Duration) {
	t.Helper()
	// No retries and a short read timeout: a command stuck in a sleeping Redis times out on
	// the client while the server still runs it later.
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 500 * time.Millisecond})
	b := broker.NewRedis(c, broker.RedisOptions{Prefix: prefix, TickInterval: interval, Logger: quiet})
	l := lease.NewRedis(c, rediskey.New(prefix).TickerLeader(), id, ttl, lease.WithClock(clock, interval/2))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = Run(ctx, b.Publish, Options{Interval: interval, Lease: l, Logger: quiet, Now: clock})
	}()
	t.Cleanup(func() { cancel(); <-done; b.Close(); c.Close() })
}

// tickLog subscribes to the tick channel and keeps, like a gateway, the ticks newer than any
// before them, with when they arrived.
type tickLog struct {
	mu   sync.Mutex
	mark int64
	seqs []int64
	at   []time.Time
	all  []int64 // every seq received, duplicates and stale ones included
}

// startWatched starts a Redis, a fresh key prefix and a tick log subscribed to it.
func startWatched(t *testing.T) (*testkit.Redis, string, *tickLog) {
	t.Helper()
	srv := testkit.StartRedis(t)
	prefix := testkit.Prefix(t)
	return srv, prefix, subscribeTicks(t, srv.Client(), prefix)
}

func subscribeTicks(t *testing.T, c redis.UniversalClient, prefix string) *tickLog {
	t.Helper()
	l := &tickLog{}
	b := broker.NewRedis(c, broker.RedisOptions{Prefix: prefix, Logger: quiet})
	t.Cleanup(func() { b.Close() })
	if err := b.Subscribe(context.Background(), func(f []byte) {
		seq, err := protocol.TickSeqOf(f)
		if err != nil {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.all = append(l.all, seq)
		if seq > l.mark {
			l.mark = seq
			l.seqs = append(l.seqs, seq)
			l.at = append(l.at, time.Now())
		}
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *tickLog) snapshot() (seqs []int64, at []time.Time, all []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.seqs...), append([]time.Time(nil), l.at...), append([]int64(nil), l.all...)
}

// maxGap is the longest time between two consecutive fresh ticks arriving within [from, to].
func (l *tickLog) maxGap(from, to time.Time) time.Duration {
	_, at, _ := l.snapshot()
	var gap time.Duration
	prev := from
	for _, a := range at {
		if a.Before(from) {
			continue
		}
		if a.After(to) {
			break
		}
		gap = max(gap, a.Sub(prev))
		prev = a
	}
	return max(gap, to.Sub(prev))
}

// waitFresh waits until a tick newer than seq arrives and returns when it did.
func (l *tickLog) waitFresh(t *testing.T, seq int64, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		seqs, at, _ := l.snapshot()
		for i, s := range seqs {
			if s > seq {
				return at[i]
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no tick newer than %d within %v", seq, within)
	return time.Time{}
}

func (l *tickLog) newest() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mark
}

// TestSkewedTickerStepsAside: a ticker whose clock is an hour ahead starts first; it must
// neither take nor keep the lease, so the standby with a sound clock publishes, and no tick
// from the future ever reaches the channel.
//
// Fails before the lease compared the clock with Redis TIME: the skewed ticker took the
// lease and published seqs an hour ahead, which froze every gateway's dedupe mark.
func TestSkewedTickerStepsAside(t *testing.T) {
	t.Parallel()
	srv, prefix, log := startWatched(t)
	const interval, ttl = 250 * time.Millisecond, 2 * time.Second
	var skewed skewClock
	skewed.set(time.Hour)
	startTicker(t, srv.Addr(), prefix, "skewed", skewed.now, interval, ttl)
	time.Sleep(2 * interval) // the skewed one asks first
	startTicker(t, srv.Addr(), prefix, "sound", time.Now, interval, ttl)

	start := time.Now()
	log.waitFresh(t, 0, 3*time.Second)
	time.Sleep(2 * time.Second)
	_, _, all := log.snapshot()
	limit := protocol.TickSeq(time.Now().Add(2*interval), interval)
	for _, seq := range all {
		if seq > limit {
			t.Fatalf("a tick %v ahead reached the channel", protocol.TickTime(seq, interval).Sub(time.Now()).Round(time.Second))
		}
	}
	if v := srv.Client().Get(context.Background(), rediskey.New(prefix).TickerLeader()).Val(); v != "sound" {
		t.Fatalf("lease held by %q, want the sound ticker", v)
	}
	if gap := log.maxGap(start.Add(time.Second), time.Now()); gap > 3*interval {
		t.Fatalf("ticks from the sound ticker stopped for %v", gap)
	}
}

// TestLeaderClockStepsBack: the leader's clock steps back an hour. It must step aside at once
// (its clock is off Redis TIME), so the standby publishes: ticks stop for at most a few
// intervals, well inside the contract's LEASE_TTL + 2 intervals.
//
// Fails before the tick loop kept asking the lease on a clock that went back: the leader went
// silent (neither publishing nor renewing, without a word) and the standby waited for the
// lease to expire, a gap of LEASE_TTL and more.
func TestLeaderClockStepsBack(t *testing.T) {
	t.Parallel()
	srv, prefix, log := startWatched(t)
	const interval, ttl = 250 * time.Millisecond, 3 * time.Second
	var leader skewClock
	startTicker(t, srv.Addr(), prefix, "leader", leader.now, interval, ttl)
	log.waitFresh(t, 0, 3*time.Second)
	startTicker(t, srv.Addr(), prefix, "standby", time.Now, interval, ttl)
	time.Sleep(4 * interval)
	if v := srv.Client().Get(context.Background(), rediskey.New(prefix).TickerLeader()).Val(); v != "leader" {
		t.Fatalf("lease held by %q before the step", v)
	}

	stepped := time.Now()
	leader.set(-time.Hour)
	time.Sleep(ttl + 4*interval)
	gap := log.maxGap(stepped, time.Now())
	t.Logf("leader's clock stepped back 1 h: longest gap between ticks %v (LEASE_TTL %v, interval %v)", gap, ttl, interval)
	if gap > ttl+2*interval {
		t.Fatalf("ticks stopped for %v, contract allows LEASE_TTL + 2 intervals = %v", gap, ttl+2*interval)
	}
	// The leader steps aside at its next tick and the standby takes the free lease at its own:
	// a few intervals. Half a LEASE_TTL more is slack for a loaded machine under -race, and still
	// well under what waiting for the lease to expire costs (LEASE_TTL and more: 3.24 s before).
	if bound := ttl/2 + 2*interval; gap > bound {
		t.Fatalf("ticks stopped for %v: the leader did not step aside at once (want ≤ LEASE_TTL/2 + 2 intervals, %v)", gap, bound)
	}
}

// TestDebugSleepLeaseReadBack: Redis sleeps 3 s (DEBUG SLEEP), longer than LEASE_TTL. Claims
// sent meanwhile time out on the client but run when Redis wakes; the ticker that won must
// find out (by reading the lease back) and publish within about an interval of Redis
// answering again.
//
// Fails before the lease was resolved by reading it back: the winner of a timed-out claim
// believed it had lost, SET NX then failed for everyone, and ticks came back only when the
// orphaned lease expired, LEASE_TTL after Redis woke.
func TestDebugSleepLeaseReadBack(t *testing.T) {
	t.Parallel()
	srv, prefix, log := startWatched(t)
	const interval, ttl, sleep = 250 * time.Millisecond, 2 * time.Second, 3 * time.Second
	startTicker(t, srv.Addr(), prefix, "a", time.Now, interval, ttl)
	startTicker(t, srv.Addr(), prefix, "b", time.Now, interval, ttl)
	log.waitFresh(t, 0, 3*time.Second)
	time.Sleep(4 * interval)

	dbg := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 2 * sleep, MaxRetries: -1})
	t.Cleanup(func() { dbg.Close() })
	before := log.newest()
	if err := dbg.Do(context.Background(), "DEBUG", "SLEEP", sleep.Seconds()).Err(); err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
	}
	awake := time.Now()
	fresh := log.waitFresh(t, before+int64(sleep/interval), 10*time.Second)
	resumed := fresh.Sub(awake)
	t.Logf("DEBUG SLEEP %v: ticks resumed %v after Redis answered (interval %v, LEASE_TTL %v)", sleep, resumed.Round(time.Millisecond), interval, ttl)
	if resumed > 3*interval {
		t.Fatalf("ticks resumed %v after Redis answered, want within ~1 interval (≤ %v)", resumed, 3*interval)
	}
}
