package main

import (
	"context"
	"fmt"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// phase measures one stretch of the run: Redis usage between two INFO snapshots, the client
// round trips timed meanwhile, and the longest SLOWLOG entries.
type phase struct {
	s     *sim
	name  string
	start snapshot
	logs  map[string]int // the stores' log counts at the start
	t     *timings
}

func (s *sim) begin(ctx context.Context, name string) (*phase, error) {
	s.stats.takePhase(ctx) // what came before belongs to no phase
	snap, err := s.stats.snap(ctx)
	if err != nil {
		return nil, fmt.Errorf("presencesim: %s: %w", name, err)
	}
	s.logf("phase %s", name)
	return &phase{s: s, name: name, start: snap, logs: s.logs.counts(), t: s.hook.reset()}, nil
}

func (p *phase) end(ctx context.Context, ops int) (PhaseReport, error) {
	snap, err := p.s.stats.snap(ctx)
	if err != nil {
		return PhaseReport{}, fmt.Errorf("presencesim: %s: %w", p.name, err)
	}
	r := PhaseReport{Name: p.name, Ops: ops, Usage: p.s.stats.diff(p.start, snap), Latency: p.t.summary()}
	r.Longest, r.LongestScript = p.s.stats.takePhase(ctx)
	for msg, n := range p.s.logs.counts() {
		if d := n - p.logs[msg]; d > 0 {
			if r.StoreLogs == nil {
				r.StoreLogs = map[string]int{}
			}
			r.StoreLogs[msg] = d
		}
	}
	p.s.logf("  %s: %.1f s, %d ops, %d commands (%.0f/s), redis cpu %.2f s, used_memory %+d B",
		p.name, r.Usage.Seconds, ops, r.Usage.Commands, r.Usage.CommandsPerS, r.Usage.CPUSeconds, r.Usage.MemoryDelta)
	return r, nil
}

// phases runs connect, steady, churn, crash, (restart), verify and disconnect in order.
func (s *sim) phases(ctx context.Context, rep *Report) error {
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	go s.stats.pollLoop(pollCtx)

	// connect: every connection joins.
	p, err := s.begin(ctx, "connect")
	if err != nil {
		return err
	}
	rampStart := time.Now()
	s.ramp(ctx)
	if _, err := s.waitCount(ctx, s.cfg.total()); err != nil {
		return err
	}
	rep.ConnectSeconds = time.Since(rampStart).Seconds()
	if err := s.add(ctx, rep, p, s.cfg.total()); err != nil {
		return err
	}

	// steady: nothing but heartbeats and sweep checks.
	if p, err = s.begin(ctx, "steady"); err != nil {
		return err
	}
	if err := s.sleep(ctx, s.cfg.Idle); err != nil {
		return err
	}
	if err := s.add(ctx, rep, p, 0); err != nil {
		return err
	}

	// ticks: the steady load plus tickRate ticks a second to Subscribers subscribers.
	if s.cfg.Subscribers > 0 {
		ticks, err := s.startTicks(ctx, s.cfg.Subscribers)
		if err != nil {
			return err
		}
		if p, err = s.begin(ctx, "ticks"); err != nil {
			ticks.stop()
			return err
		}
		err = s.sleep(ctx, ticksPhase)
		n := ticks.stop()
		if err != nil {
			return err
		}
		if err := s.add(ctx, rep, p, n); err != nil {
			return err
		}
	}

	// churn: connections replaced at the churn rate.
	ch := s.startChurn(ctx)
	if p, err = s.begin(ctx, "churn"); err != nil {
		ch.stop()
		return err
	}
	if err := s.sleep(ctx, s.cfg.Duration); err != nil {
		ch.stop()
		return err
	}
	if err := s.add(ctx, rep, p, 2*ch.pause()); err != nil {
		ch.stop()
		return err
	}

	// crash: gateways die without cleanup, churn goes on, the survivors sweep.
	if s.cfg.Crashes > 0 {
		ch.resume()
		if p, err = s.begin(ctx, "crash"); err != nil {
			ch.stop()
			return err
		}
		rep.Sweeps, err = s.crashAndWatch(ctx)
		if err != nil {
			ch.stop()
			return err
		}
		if err := s.add(ctx, rep, p, 2*ch.pause()); err != nil {
			ch.stop()
			return err
		}
	}
	ch.stop()

	// restart: Redis comes back empty; every live gateway writes its connections back.
	if s.cfg.Restart {
		if p, err = s.begin(ctx, "restart"); err != nil {
			return err
		}
		if rep.Restart, err = s.restartRedis(ctx); err != nil {
			return err
		}
		if err := s.add(ctx, rep, p, 0); err != nil {
			return err
		}
	}

	// verify: presence holds exactly the connections of the live gateways.
	took, err := s.waitExact(ctx)
	rep.ExactAfterSeconds = took.Seconds()
	rep.Expected = len(s.expected())
	if n, cerr := s.presenceCount(ctx); cerr == nil {
		rep.PresenceCount = int(n)
	}
	if err != nil {
		return err
	}
	rep.Exact = true
	s.logf("presence exact: %d connections", rep.PresenceCount)

	// disconnect: every live gateway shuts down cleanly, its connections leave as drained.
	if p, err = s.begin(ctx, "disconnect"); err != nil {
		return err
	}
	if err := s.closeAll(ctx); err != nil {
		return err
	}
	if _, err := s.waitCount(ctx, 0); err != nil {
		return err
	}
	if err := s.add(ctx, rep, p, rep.Expected); err != nil {
		return err
	}
	return nil
}

func (s *sim) add(ctx context.Context, rep *Report, p *phase, ops int) error {
	r, err := p.end(ctx, ops)
	if err != nil {
		return err
	}
	rep.Phases = append(rep.Phases, r)
	return nil
}

// ramp joins every gateway's connections, at RampRate joins per second over all gateways
// (round robin), or all at once.
func (s *sim) ramp(ctx context.Context) {
	per := make([]int, len(s.gws))
	for i := range per {
		per[i] = s.cfg.Conns
	}
	per[0] = s.cfg.VictimConns
	left := s.cfg.total()
	step := left
	const tick = 10 * time.Millisecond
	if s.cfg.RampRate > 0 {
		step = max(1, int(s.cfg.RampRate*tick.Seconds()))
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for i := 0; left > 0; {
		s.mu.Lock()
		for n := 0; n < step && left > 0; i = (i + 1) % len(s.gws) {
			if per[i] == 0 {
				continue
			}
			g := s.gws[i]
			g.st.Join(s.newConn(g))
			per[i]--
			left--
			n++
		}
		s.mu.Unlock()
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// closeAll closes every live gateway's store at once, as a rolling deploy's SIGTERM would.
func (s *sim) closeAll(ctx context.Context) error {
	errs := make(chan error, len(s.gws))
	n := 0
	for _, g := range s.gws {
		if g.down {
			continue
		}
		n++
		go func() {
			err := g.st.Close(ctx)
			_ = g.client.Close()
			s.mu.Lock()
			g.conns = nil
			g.down = true // gone: cleanup must not close it again
			s.mu.Unlock()
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = fmt.Errorf("presencesim: close gateway: %w", err)
		}
	}
	return first
}

// leave removes a random connection of a random live gateway and joins a new one on another
// random live gateway: one churn step, the total unchanged. Call with s.mu held.
func (s *sim) churnStep() bool {
	var live []*simGateway
	for _, g := range s.gws {
		if !g.down && len(g.conns) > 0 {
			live = append(live, g)
		}
	}
	if len(live) == 0 {
		return false
	}
	g := live[s.rng.IntN(len(live))]
	i := s.rng.IntN(len(g.conns))
	id := g.conns[i]
	g.conns[i] = g.conns[len(g.conns)-1]
	g.conns = g.conns[:len(g.conns)-1]
	g.st.Leave(id, protocol.ReasonClosed)
	h := live[s.rng.IntN(len(live))]
	h.st.Join(s.newConn(h))
	return true
}
