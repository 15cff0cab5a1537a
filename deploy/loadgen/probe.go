package loadgen

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"time"
)

const phaseStart = "start"

// probe samples the server processes at the phases of a run: before connecting (the
// baseline), when every socket is open, and at the end of the window. What a socket costs is
// the difference between two of them.
type probe struct {
	pids    []int
	s       *Sampler
	samples map[string]map[int]ProcSample
}

func newProbe(pids []int) *probe {
	return &probe{pids: pids, s: NewSampler(pids, 100*time.Millisecond), samples: map[string]map[int]ProcSample{}}
}

func (p *probe) mark(phase string) {
	if len(p.pids) > 0 {
		p.samples[phase] = p.s.Sample()
	}
}

func (p *probe) close() { p.s.Close() }

// sum adds a phase's readings over every PID.
func (p *probe) sum(phase string) (rss int64, cpu time.Duration) {
	for _, s := range p.samples[phase] {
		rss += s.RSS
		cpu += s.CPU
	}
	return rss, cpu
}

// stats turns the samples into per-socket, per-handshake, per-tick and per-request costs.
// delivered is the number of ticks received between PhaseOpened and PhaseWindowEnd, fibOK the
// answers received by the end of the window.
func (p *probe) stats(opened int, delivered, fibOK int64, mode string) *ServerStats {
	if len(p.pids) == 0 {
		return nil
	}
	const mib = 1 << 20
	rss0, cpu0 := p.sum(phaseStart)
	_, cpu1 := p.sum(PhaseOpened)
	rss2, cpu2 := p.sum(PhaseWindowEnd)
	var peak int64
	for _, pid := range p.pids {
		peak += p.s.Peak(pid)
	}
	st := &ServerStats{
		PIDs:           slices.Clone(p.pids),
		RSSBaselineMiB: float64(rss0) / mib, RSSLoadedMiB: float64(rss2) / mib, RSSPeakMiB: float64(peak) / mib,
		CPUOpenSec: (cpu1 - cpu0).Seconds(), CPUWindowSec: (cpu2 - cpu1).Seconds(),
	}
	if opened > 0 {
		st.RSSPerSocketKiB = float64(rss2-rss0) / 1024 / float64(opened)
		st.CPUPerHandshakeUS = float64((cpu1 - cpu0).Microseconds()) / float64(opened)
	}
	switch {
	case mode == ModeFib && fibOK > 0:
		st.CPUPerRequestUS = float64((cpu2 - cpu1).Microseconds()) / float64(fibOK)
	case (mode == ModeTicks || mode == ModeIdle) && delivered > 0:
		st.CPUPerTickUS = float64((cpu2 - cpu1).Microseconds()) / float64(delivered)
	}
	if err := p.s.Err(); err != nil {
		st.Error = err.Error()
	}
	return st
}

// presenceOutcome is what the presence watcher sends back.
type presenceOutcome struct {
	PresenceWait
	err error
}

// startPresenceWait reads the presence baseline, then polls in the background until n more
// connections are present, until ctx ends (the caller cancels it Hold after the sockets are
// open).
func startPresenceWait(ctx context.Context, cfg Config, n int64) (<-chan presenceOutcome, int64, error) {
	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return nil, 0, err
	}
	key := presenceKey(cfg.Prefix)
	base, err := rdb.HLen(ctx, key).Result()
	if err != nil {
		rdb.Close()
		return nil, 0, fmt.Errorf("loadgen: presence baseline: HLEN %s: %w", key, err)
	}
	out := make(chan presenceOutcome, 1)
	start := time.Now()
	go func() {
		defer rdb.Close()
		w, err := WaitPresence(ctx, rdb, key, base+n, start, 10*time.Millisecond)
		out <- presenceOutcome{w, err}
	}()
	return out, base, nil
}

var queryRE = regexp.MustCompile(`\?[^"\s]*`)

var addrRE = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+|\[[0-9a-f:]+\]:\d+`)

// shortErr makes error messages that differ only by address or length collapse into one.
func shortErr(s string) string {
	s = addrRE.ReplaceAllString(s, "ADDR")
	s = queryRE.ReplaceAllString(s, "?…") // the per-socket user name in a URL
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
