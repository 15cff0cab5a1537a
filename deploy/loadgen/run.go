// Package loadgen is the gateway's load generator: it opens many WebSockets against
// /ws and measures what PROTOCOL.md promises under load — how fast sockets open and appear in
// presence, how late ticks arrive and whether any go missing, and how many Fibonacci requests
// a gateway answers — together with what the server pays for it (RSS per socket, CPU per
// handshake, per delivered tick, per request), sampled from /proc.
//
// Entry points: Run (one process), Spawn (several processes, one share each), Merge,
// WriteSummary. The command deploy/loadtest wraps them in flags.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Phases reported to Config.Events: the moments a parent samples the servers at.
const (
	PhaseOpened    = "opened"     // every handshake of this process has finished
	PhaseWindowEnd = "window_end" // the hold or measurement window (and its grace) is over
)

// Histogram names in Result.Hists.
const (
	histHandshake = "handshake"
	histTick      = "tick"
	histRTT       = "rtt"
)

// run is the state of one Run.
type run struct {
	cfg Config
	d   *dialer

	mu          sync.Mutex
	socks       []*sock
	hardStopped bool // the run's context ended: every socket was closed (see hardStop)
	failReasons map[string]int
	dropped     map[string]int
	bad         map[string]int
	fibErrors   map[string]int64

	readers sync.WaitGroup
	opened  atomic.Int64
	failed  atomic.Int64
	closing atomic.Bool

	winStart, winEnd atomic.Int64 // unix ns; winEnd 0 while the window is open
	delivered        atomic.Int64 // every tick received, in or out of the window

	hs, tickLat, rtt Histogram

	fibStart                                 chan struct{}
	fibStop                                  atomic.Bool
	fibDrained                               sync.WaitGroup
	fibFixed                                 string
	fibSent, fibOK, fibOKWindow, fibVerified atomic.Int64
	fibMismatch, fibUnmatched                atomic.Int64
}

// inWindow reports whether t falls in the measurement window.
func (r *run) inWindow(t time.Time) bool {
	s := r.winStart.Load()
	if s == 0 || t.UnixNano() < s {
		return false
	}
	e := r.winEnd.Load()
	return e == 0 || t.UnixNano() < e
}

// Run performs one run and returns its figures. It stops by itself: every phase is bounded
// by the configured hold, duration, grace and, above all, Timeout. An error means the run
// could not be carried out (bad config, Redis unreachable); failed handshakes and dropped
// sockets are figures, not errors.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	n, srcOff := cfg.share()
	if cfg.Procs > 1 { // Inflight and Rate are totals over every process of the run
		cfg.Inflight = (cfg.Inflight + cfg.Procs - 1) / cfg.Procs
		cfg.Rate /= float64(cfg.Procs)
	}
	srcs := sourceIPs(cfg.SrcBase, srcOff, cfg.srcCount(n))
	r := &run{
		cfg: cfg, d: newDialer(cfg.URL, srcs, cfg.ReadLimit),
		failReasons: map[string]int{}, dropped: map[string]int{}, bad: map[string]int{},
		fibErrors: map[string]int64{}, fibStart: make(chan struct{}),
	}
	if cfg.Mode == ModeFib && cfg.FibMax == 0 {
		r.fibFixed = fibDecimal(cfg.FibN)
	}
	res := Result{Mode: cfg.Mode, URL: cfg.URL, Procs: 1, N: n, LoadAvgStart: LoadAvg()}
	started := time.Now()
	cpu0, _ := SelfUsage()
	probe := newProbe(cfg.PIDs)
	defer probe.close()

	var presence <-chan presenceOutcome
	pctx, stopPresence := context.WithCancel(ctx)
	defer stopPresence()
	if cfg.Mode == ModeStorm && cfg.RedisURL != "" {
		var err error
		if presence, res.PresenceBase, err = startPresenceWait(pctx, cfg, int64(n)); err != nil {
			return Result{}, err
		}
	}
	// Sockets read and write with a context that is never cancelled (ioCtx); the run's own
	// deadline closes them all at once instead.
	defer context.AfterFunc(ctx, r.hardStop)()
	probe.mark(phaseStart)
	t0 := time.Now()
	r.open(ctx, n, t0)
	res.OpenSec = time.Since(t0).Seconds()
	probe.mark(PhaseOpened)
	deliveredAtOpen := r.delivered.Load()
	r.event(PhaseOpened)

	winStart := time.Now()
	r.winStart.Store(winStart.UnixNano())
	switch cfg.Mode {
	case ModeIdle:
		// Ticks are accounted over the hold less the grace, so the last ones still arrive.
		win := cfg.Hold - min(cfg.Grace, cfg.Hold/2)
		sleepCtx(ctx, win)
		r.winEnd.Store(time.Now().UnixNano())
		sleepCtx(ctx, cfg.Hold-win)
	case ModeTicks:
		sleepCtx(ctx, cfg.Duration)
		r.winEnd.Store(time.Now().UnixNano())
		sleepCtx(ctx, cfg.Grace)
	case ModeFib:
		close(r.fibStart)
		sleepCtx(ctx, cfg.Duration)
		r.winEnd.Store(time.Now().UnixNano())
		r.fibStop.Store(true)
		waitTimeout(&r.fibDrained, cfg.Grace)
	case ModeStorm:
		if presence != nil {
			t := time.AfterFunc(cfg.Hold, stopPresence) // presence gets Hold after the last open
			pw := <-presence
			t.Stop()
			if pw.err != nil {
				return Result{}, pw.err
			}
			res.PresentSec = pw.Elapsed.Seconds()
			res.PresenceLast, res.PresenceTimedOut = pw.Last, pw.TimedOut
		}
		if cfg.Release != nil { // a -procs parent is polling presence: hold until it is done
			select {
			case <-cfg.Release:
			case <-time.After(cfg.Hold):
			case <-ctx.Done():
			}
		}
	}
	if e := r.winEnd.Load(); e != 0 {
		res.WindowSec = time.Duration(e - winStart.UnixNano()).Seconds()
	} else {
		res.WindowSec = time.Since(winStart).Seconds()
	}
	probe.mark(PhaseWindowEnd)
	deliveredInWindow := r.delivered.Load() - deliveredAtOpen
	r.event(PhaseWindowEnd)

	r.closeAll()
	r.fill(&res, deliveredInWindow)
	res.Server = probe.stats(int(r.opened.Load()), deliveredInWindow, r.fibOK.Load(), cfg.Mode)
	cpu1, maxRSS := SelfUsage()
	res.ClientCPUSec = (cpu1 - cpu0).Seconds()
	res.ClientMaxRSSMiB = float64(maxRSS) / (1 << 20)
	res.LoadAvgEnd = LoadAvg()
	res.ElapsedSec = time.Since(started).Seconds()
	if cfg.Procs > 1 {
		res.Hists = map[string]HistSnapshot{histHandshake: r.hs.Snapshot(), histTick: r.tickLat.Snapshot(), histRTT: r.rtt.Snapshot()}
		res.DeliveredInWindow = deliveredInWindow
	}
	return res, nil
}

func (r *run) event(phase string) {
	if r.cfg.Events != nil {
		r.cfg.Events(phase)
	}
}

// open starts n sockets, at most Inflight handshakes at a time (and at most Rate per second),
// and returns when every handshake has succeeded or failed. Each open socket keeps its reader
// goroutine running until closeAll.
func (r *run) open(ctx context.Context, n int, t0 time.Time) {
	sem := make(chan struct{}, r.cfg.Inflight)
	var handshakes sync.WaitGroup
	if r.cfg.Mode == ModeFib {
		r.fibDrained.Add(n)
	}
	for i := range n {
		if r.cfg.Rate > 0 {
			sleepCtx(ctx, time.Until(t0.Add(time.Duration(float64(i)/r.cfg.Rate*float64(time.Second)))))
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			r.fail(fmt.Errorf("not started: %w", ctx.Err()), n-i)
			if r.cfg.Mode == ModeFib {
				r.fibDrained.Add(-(n - i))
			}
			break
		}
		handshakes.Add(1)
		r.readers.Go(func() {
			s, err := r.connect(ctx, i)
			<-sem
			handshakes.Done()
			if err != nil {
				r.fail(err, 1)
				if r.cfg.Mode == ModeFib {
					r.fibDrained.Done()
				}
				return
			}
			r.readLoop(ctx, s)
		})
	}
	handshakes.Wait()
}

// connect dials socket i and reads its welcome.
func (r *run) connect(ctx context.Context, i int) (*sock, error) {
	start := time.Now()
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	user := ""
	if r.cfg.User != "-" {
		user = fmt.Sprintf("%s%d-%d", r.cfg.User, max(r.cfg.ChildIndex, 0), i)
	}
	c, err := r.d.dial(hctx, i, user)
	if err != nil {
		return nil, err
	}
	s := &sock{c: c, buf: make([]byte, 0, 128)}
	_, frame, err := s.next(hctx)
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	f, err := protocol.Decode(frame)
	if err != nil || f.Type != protocol.TypeWelcome {
		c.CloseNow()
		return nil, fmt.Errorf("first frame is not a welcome: %.60q", frame)
	}
	r.hs.Record(time.Since(start))
	if r.cfg.Mode == ModeFib {
		s.fib = &fibSock{}
	}
	r.mu.Lock()
	r.socks = append(r.socks, s)
	stopped := r.hardStopped
	r.mu.Unlock()
	if stopped {
		c.CloseNow() // opened just as the run ended: hardStop has not seen it
	}
	r.opened.Add(1)
	return s, nil
}

// ioCtx is the context of every read and write on an open socket. A cancellable context
// would cost a context.AfterFunc registration on the run's context per frame (coder/websocket
// watches it for the duration of each call): with tens of thousands of sockets they all
// contend on that one context's lock. hardStop ends the sockets instead.
var ioCtx = context.Background()

// hardStop closes every open socket at once, without a close handshake: the run's context
// (its -timeout, or an interrupt) has ended.
func (r *run) hardStop() {
	r.closing.Store(true) // the sockets ending now are not drops
	r.mu.Lock()
	r.hardStopped = true
	socks := r.socks
	r.mu.Unlock()
	for _, s := range socks {
		s.c.CloseNow()
	}
}

// fail counts k failed sockets under a short form of err (the first line, without addresses
// that differ per socket), so a thousand identical failures make one entry.
func (r *run) fail(err error, k int) {
	msg := err.Error()
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		msg = fmt.Sprintf("closed %d during handshake", int(ce.Code))
	}
	msg = shortErr(msg)
	r.failed.Add(int64(k))
	r.mu.Lock()
	r.failReasons[msg] += k
	r.mu.Unlock()
}

// closeAll closes every socket with 1000, up to 1000 close handshakes at once, and gives up
// on the stragglers after 10 s; then it waits for every reader.
func (r *run) closeAll() {
	r.closing.Store(true)
	r.mu.Lock()
	socks := r.socks
	r.mu.Unlock()
	sem := make(chan struct{}, 1000)
	var wg sync.WaitGroup
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range socks {
		sem <- struct{}{}
		if time.Now().After(deadline) {
			<-sem
			s.c.CloseNow()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = s.c.Close(websocket.StatusNormalClosure, "")
		})
	}
	if !waitTimeout(&wg, time.Until(deadline)) {
		for _, s := range socks {
			s.c.CloseNow()
		}
	}
	r.readers.Wait()
}

// fill copies the counters into res once every reader has stopped.
func (r *run) fill(res *Result, delivered int64) {
	res.Opened = int(r.opened.Load())
	res.Failed = int(r.failed.Load())
	res.Handshake = r.hs.Snapshot().Summary()
	if res.OpenSec > 0 {
		res.HandshakesPerSec = float64(res.Opened) / res.OpenSec
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failReasons) > 0 {
		res.FailReasons = r.failReasons
	}
	if len(r.dropped) > 0 {
		res.Dropped = r.dropped
	}
	for k, v := range r.bad {
		if res.FailReasons == nil {
			res.FailReasons = map[string]int{}
		}
		res.FailReasons["unexpected: "+k] += v
	}
	switch r.cfg.Mode {
	case ModeIdle, ModeTicks:
		t := &TickStats{Latency: r.tickLat.Snapshot().Summary()}
		var lo, hi int64
		for _, s := range r.socks {
			t.Received += s.ticks
			t.Gaps += s.gaps
			t.Dups += s.dups
			if s.ticks > 0 {
				if lo == 0 || s.minSeq < lo {
					lo = s.minSeq
				}
				hi = max(hi, s.maxSeq)
			}
		}
		if hi > 0 {
			t.Seqs = hi - lo + 1
		}
		t.Expected = t.Seqs * int64(len(r.socks))
		res.Ticks = t
	case ModeFib:
		res.Fib = &FibStats{
			Sent: r.fibSent.Load(), OK: r.fibOK.Load(), Verified: r.fibVerified.Load(),
			Mismatches: r.fibMismatch.Load(), Unmatched: r.fibUnmatched.Load(),
			Errors: r.fibErrors, RTT: r.rtt.Snapshot().Summary(),
		}
		if res.WindowSec > 0 {
			res.Fib.ReqPerSec = float64(r.fibOKWindow.Load()) / res.WindowSec
		}
	}
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// waitTimeout waits for wg at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
