package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"
)

// ChildLine is one line a child of a -procs run writes on its standard output: a phase
// event, or its final result.
type ChildLine struct {
	Event  string  `json:"event"` // PhaseOpened, PhaseWindowEnd or "result"
	Result *Result `json:"result,omitempty"`
}

// EventResult is the Event of a child's last line.
const EventResult = "result"

// Spawn runs cfg.Procs copies of the load generator (exe with childArgs(i)), each opening its
// share of cfg.N from its own block of source addresses, and merges their results. The
// children's stderr goes to stderr: an *os.File directly, any other writer through copies that
// run concurrently, so it must then be safe for concurrent use (testkit.SyncBuffer in tests). One
// process holds at most ~19k sockets (20,000 open files), so larger runs need several.
//
// The children do not sample the servers: Spawn does, once every child has reported a phase,
// so each cost is measured once over the whole run. For storm it also polls presence itself,
// from the moment the children start.
func Spawn(ctx context.Context, cfg Config, exe string, childArgs func(i int) []string, stderr io.Writer) (Result, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout+30*time.Second)
	defer cancel()
	k := cfg.Procs
	started := time.Now()
	loadStart := LoadAvg()
	cpu0, _ := SelfUsage()
	probe := newProbe(cfg.PIDs)
	defer probe.close()

	var presence <-chan presenceOutcome
	var presenceBase int64
	pctx, stopPresence := context.WithCancel(ctx)
	defer stopPresence()
	if cfg.Mode == ModeStorm && cfg.RedisURL != "" {
		var err error
		if presence, presenceBase, err = startPresenceWait(pctx, cfg, int64(cfg.N)); err != nil {
			return Result{}, err
		}
	}
	probe.mark(phaseStart)

	var (
		mu      sync.Mutex
		counts  = map[string]int{}
		reached = map[string]chan struct{}{PhaseOpened: make(chan struct{}), PhaseWindowEnd: make(chan struct{})}
		results = make([]*Result, k)
	)
	// A child that exits early counts as having reached every phase, so nobody waits for it.
	report := func(phase string) {
		mu.Lock()
		defer mu.Unlock()
		counts[phase]++
		if counts[phase] == k {
			if ch, ok := reached[phase]; ok {
				close(ch)
			}
		}
	}
	var wg sync.WaitGroup
	var stdins []io.WriteCloser
	errs := make([]error, k)
	for i := range k {
		cmd := exec.CommandContext(ctx, exe, childArgs(i)...)
		cmd.Stderr = stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: child %d stdout: %w", i, err)
		}
		in, err := cmd.StdinPipe() // closing it releases a storm child (Config.Release)
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: child %d stdin: %w", i, err)
		}
		stdins = append(stdins, in)
		if err := cmd.Start(); err != nil {
			return Result{}, fmt.Errorf("loadgen: start child %d: %w", i, err)
		}
		wg.Go(func() {
			seen := map[string]bool{}
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<16), 64<<20)
			for sc.Scan() {
				var l ChildLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					continue // not ours (a stray print); the child's figures come as JSON
				}
				switch l.Event {
				case PhaseOpened, PhaseWindowEnd:
					if !seen[l.Event] {
						seen[l.Event] = true
						report(l.Event)
					}
				case EventResult:
					results[i] = l.Result
				}
			}
			for _, ph := range []string{PhaseOpened, PhaseWindowEnd} {
				if !seen[ph] {
					report(ph)
				}
			}
			if err := cmd.Wait(); err != nil {
				errs[i] = fmt.Errorf("loadgen: child %d: %w", i, err)
			}
		})
	}
	select {
	case <-reached[PhaseOpened]:
	case <-ctx.Done():
	}
	probe.mark(PhaseOpened)
	var pw presenceOutcome
	if presence != nil {
		t := time.AfterFunc(cfg.Hold, stopPresence) // presence gets Hold after the last open
		pw = <-presence
		t.Stop()
	}
	for _, in := range stdins {
		in.Close()
	}
	select {
	case <-reached[PhaseWindowEnd]:
	case <-ctx.Done():
	}
	probe.mark(PhaseWindowEnd)
	wg.Wait()

	var rs []Result
	for _, r := range results {
		if r != nil {
			rs = append(rs, *r)
		}
	}
	if len(rs) == 0 {
		return Result{}, errors.Join(append(errs, fmt.Errorf("loadgen: no child reported a result"))...)
	}
	res := Merge(rs)
	res.Procs = k
	var delivered int64
	for _, r := range rs {
		delivered += r.DeliveredInWindow
	}
	var fibOK int64
	if res.Fib != nil {
		fibOK = res.Fib.OK
	}
	res.Server = probe.stats(res.Opened, delivered, fibOK, cfg.Mode)
	if presence != nil {
		if pw.err != nil {
			errs = append(errs, pw.err)
		}
		res.PresentSec, res.PresenceLast, res.PresenceTimedOut = pw.Elapsed.Seconds(), pw.Last, pw.TimedOut
		res.PresenceBase = presenceBase
	}
	cpu1, _ := SelfUsage()
	res.ClientCPUSec += (cpu1 - cpu0).Seconds()
	res.LoadAvgStart, res.LoadAvgEnd = loadStart, LoadAvg()
	res.ElapsedSec = time.Since(started).Seconds()
	return res, errors.Join(errs...)
}
