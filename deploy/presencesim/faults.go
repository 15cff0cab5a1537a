package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// churner replaces connections at the configured rate from its own goroutine, until stop.
type churner struct {
	s      *sim
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	paused bool
	steps  int // since the last pause
}

// startChurn starts replacing connections at Churn per second (none when it is 0).
func (s *sim) startChurn(ctx context.Context) *churner {
	ctx, cancel := context.WithCancel(ctx)
	c := &churner{s: s, cancel: cancel, done: make(chan struct{})}
	go c.loop(ctx)
	return c
}

func (c *churner) loop(ctx context.Context) {
	defer close(c.done)
	if c.s.cfg.Churn <= 0 {
		return
	}
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	last, owed := time.Now(), 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			owed += c.s.cfg.Churn * now.Sub(last).Seconds()
			last = now
		}
		c.mu.Lock()
		if c.paused {
			owed = 0
		}
		for ; owed >= 1 && !c.paused; owed-- {
			c.s.mu.Lock()
			ok := c.s.churnStep()
			c.s.mu.Unlock()
			if ok {
				c.steps++
			}
		}
		c.mu.Unlock()
	}
}

// pause stops replacing connections and returns how many were replaced since the last pause.
func (c *churner) pause() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
	n := c.steps
	c.steps = 0
	return n
}

func (c *churner) resume() {
	c.mu.Lock()
	c.paused = false
	c.mu.Unlock()
}

func (c *churner) stop() {
	c.cancel()
	<-c.done
}

// pollSweep is how often a crashed gateway's heartbeat and index are looked at.
const pollSweep = 10 * time.Millisecond

// crashAndWatch crashes the first Crashes gateways at once (see crash) and times, for each,
// when its heartbeat expired, when the first of its fields was swept and when the last was.
func (s *sim) crashAndWatch(ctx context.Context) ([]SweepReport, error) {
	s.mu.Lock()
	victims := s.gws[:min(s.cfg.Crashes, len(s.gws)-1)]
	for _, g := range victims {
		g.down = true // churn leaves it alone from now on
	}
	s.mu.Unlock()
	t0 := time.Now()
	for _, g := range victims {
		crash(g.st, g.client)
	}
	s.logf("  crashed %d gateway(s); waiting for the sweep (TTL %v)", len(victims), s.cfg.TTL)
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.TTL+s.cfg.Settle)
	defer cancel()
	reps := make([]SweepReport, len(victims))
	errs := make([]error, len(victims))
	var wg sync.WaitGroup
	for i, g := range victims {
		wg.Go(func() { reps[i], errs[i] = s.watchSweep(ctx, g.id, t0) })
	}
	wg.Wait()
	for _, r := range reps {
		s.logf("  %s: %d connections; heartbeat gone after %.2f s, first field swept after %.2f s, last after %.2f s (sweep took %.3f s)",
			r.Gateway, r.Conns, r.ExpiredAfterS, r.FirstSweptAfterS, r.GoneAfterS, r.SweepSeconds)
	}
	return reps, errors.Join(errs...)
}

// watchSweep polls gateway id's heartbeat and index every pollSweep until its fields are gone.
func (s *sim) watchSweep(ctx context.Context, id string, t0 time.Time) (SweepReport, error) {
	r := SweepReport{Gateway: id}
	n, _, err := remaining(ctx, s.observer, s.prefix, id, s.cfg.Shards)
	if err != nil {
		return r, fmt.Errorf("presencesim: watch sweep of %s: %w", id, err)
	}
	r.Conns = int(n)
	var expired, first time.Time
	for {
		now := time.Now()
		if expired.IsZero() {
			alive, err := heartbeatAlive(ctx, s.observer, s.prefix, id)
			if err == nil && !alive {
				expired = now
			}
		}
		left, listed, err := remaining(ctx, s.observer, s.prefix, id, s.cfg.Shards)
		if err == nil {
			if first.IsZero() && left < n {
				first = now
			}
			if left == 0 && !listed {
				if first.IsZero() {
					first = now
				}
				if expired.IsZero() {
					expired = now
				}
				r.ExpiredAfterS = expired.Sub(t0).Seconds()
				r.FirstSweptAfterS = first.Sub(t0).Seconds()
				r.GoneAfterS = now.Sub(t0).Seconds()
				r.SweepSeconds = now.Sub(first).Seconds()
				return r, nil
			}
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("presencesim: gateway %s not swept after %.1f s: %d of its connections left", id, time.Since(t0).Seconds(), left)
		case <-time.After(pollSweep):
		}
	}
}

// restartRedis kills the redis-server this run started and starts it again, empty, on the same
// port; then every live gateway is told to write its connections back (the gateway calls
// Resync when its tick subscription comes back), and the time until presence holds every live
// connection again is measured.
func (s *sim) restartRedis(ctx context.Context) (*RestartReport, error) {
	if len(s.servers) != 1 || s.cluster() {
		return nil, errors.New("presencesim: -restart needs -start (a standalone redis-server started by this run)")
	}
	want := len(s.expected())
	t0 := time.Now()
	if err := s.servers[0].Restart(ctx); err != nil {
		return nil, fmt.Errorf("presencesim: %w", err)
	}
	up := time.Now()
	if err := s.stats.configure(ctx, s.cfg.SlowlogUS); err != nil {
		return nil, err
	}
	s.mu.Lock()
	for _, g := range s.gws {
		if !g.down {
			g.st.Resync()
		}
	}
	s.mu.Unlock()
	_, err := s.waitCount(ctx, want)
	r := &RestartReport{DownSeconds: up.Sub(t0).Seconds(), RestoredAfterS: time.Since(up).Seconds(), Conns: want}
	s.logf("  redis restarted in %.2f s; %d connections written back %.2f s later", r.DownSeconds, want, r.RestoredAfterS)
	return r, err
}
