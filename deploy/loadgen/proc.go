package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat. sysconf(_SC_CLK_TCK) is 100 on
// every Linux architecture Go supports, and reading it needs cgo, so it is a constant.
const clockTick = 10 * time.Millisecond

// ProcSample is one reading of a process from /proc.
type ProcSample struct {
	RSS int64         // resident set size in bytes (VmRSS)
	CPU time.Duration // user + system CPU time consumed so far
}

// ReadProc reads the RSS and CPU time of process pid from /proc/PID/status and /proc/PID/stat.
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return s, fmt.Errorf("loadgen: read status of pid %d: %w", pid, err)
	}
	if s.RSS, err = parseVmRSS(status); err != nil {
		return s, fmt.Errorf("loadgen: pid %d: %w", pid, err)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return s, fmt.Errorf("loadgen: read stat of pid %d: %w", pid, err)
	}
	if s.CPU, err = parseStatCPU(stat); err != nil {
		return s, fmt.Errorf("loadgen: pid %d: %w", pid, err)
	}
	return s, nil
}

func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest) // "12345", "kB"
		if len(f) < 1 {
			break
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line (a zombie or kernel thread?)")
}

// parseStatCPU returns utime+stime (fields 14 and 15). The command name (field 2) is in
// parentheses and may hold spaces and parentheses, so fields are counted after the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat: no ')'")
	}
	f := bytes.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields after the name", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse stat cpu field %q: %w", s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * clockTick, nil
}

// SelfUsage returns this process's CPU time from getrusage (microsecond resolution, better
// than /proc's 10 ms ticks for short runs) and its peak RSS in bytes.
func SelfUsage() (cpu time.Duration, maxRSS int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	tv := func(t syscall.Timeval) time.Duration {
		return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
	}
	return tv(ru.Utime) + tv(ru.Stime), ru.Maxrss << 10
}

// Sampler watches a set of server processes: Sample reads them all now, and a background loop
// keeps each one's peak RSS (a brief peak between two explicit samples still shows).
type Sampler struct {
	pids []int

	mu   sync.Mutex
	peak map[int]int64
	err  error // first read error (a server that died mid-run)

	stop chan struct{}
	done chan struct{}
}

// NewSampler starts polling pids every interval for peak RSS. Stop it with Close. An empty
// pids gives a sampler that reports nothing.
func NewSampler(pids []int, interval time.Duration) *Sampler {
	s := &Sampler{pids: pids, peak: map[int]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	if len(pids) == 0 {
		close(s.done)
		return s
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			s.Sample()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Sample reads every process now. Processes that cannot be read are left out of the map and
// recorded as the sampler's error.
func (s *Sampler) Sample() map[int]ProcSample {
	out := make(map[int]ProcSample, len(s.pids))
	for _, pid := range s.pids {
		ps, err := ReadProc(pid)
		s.mu.Lock()
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			s.mu.Unlock()
			continue
		}
		s.peak[pid] = max(s.peak[pid], ps.RSS)
		s.mu.Unlock()
		out[pid] = ps
	}
	return out
}

// Peak returns the highest RSS seen for pid.
func (s *Sampler) Peak(pid int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak[pid]
}

// Err returns the first read error, if any.
func (s *Sampler) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops the background polling.
func (s *Sampler) Close() {
	if len(s.pids) > 0 {
		select {
		case <-s.stop:
		default:
			close(s.stop)
		}
	}
	<-s.done
}

// LoadAvg returns the first three fields of /proc/loadavg ("1.02 0.80 0.55"), or "" when it
// cannot be read: the figures of a run on a busy machine must say so.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return ""
	}
	return string(bytes.Join(f[:3], []byte(" ")))
}

// RaiseNoFile raises the soft open-files limit to the hard one (each socket is a file) and
// returns the new soft limit.
func RaiseNoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("loadgen: get RLIMIT_NOFILE: %w", err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, fmt.Errorf("loadgen: raise RLIMIT_NOFILE to %d: %w", r.Max, err)
		}
	}
	return r.Cur, nil
}
