package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Result holds every figure of a run. Durations are in seconds or milliseconds as the field
// names say, so the JSON line needs no unit conversion.
type Result struct {
	Mode  string `json:"mode"`
	URL   string `json:"url"`
	Procs int    `json:"procs"`

	N           int            `json:"n"`
	Opened      int            `json:"opened"`
	Failed      int            `json:"failed"`
	FailReasons map[string]int `json:"fail_reasons,omitempty"`
	// Dropped counts sockets that ended before the run closed them, by close code
	// ("1008", "1001", or "eof"/"error" when no close frame came).
	Dropped map[string]int `json:"dropped,omitempty"`

	OpenSec          float64 `json:"open_s"`             // first dial to last welcome
	HandshakesPerSec float64 `json:"handshakes_per_s"`   // opened / open_s
	Handshake        Latency `json:"handshake_latency"`  // per socket: dial to welcome
	PresentSec       float64 `json:"present_s,omitzero"` // storm: first dial to presence full
	PresenceBase     int64   `json:"presence_baseline,omitzero"`
	PresenceLast     int64   `json:"presence_last,omitzero"`
	PresenceTimedOut bool    `json:"presence_timed_out,omitzero"`

	WindowSec float64    `json:"window_s"` // hold (idle) or measurement window (ticks, fib)
	Ticks     *TickStats `json:"ticks,omitempty"`
	Fib       *FibStats  `json:"fib,omitempty"`

	Server *ServerStats `json:"server,omitempty"`

	ClientCPUSec    float64 `json:"client_cpu_s"`
	ClientMaxRSSMiB float64 `json:"client_max_rss_mib"`
	LoadAvgStart    string  `json:"loadavg_start"`
	LoadAvgEnd      string  `json:"loadavg_end"`
	ElapsedSec      float64 `json:"elapsed_s"`

	// DeliveredInWindow is the ticks received between the opened and window_end phases: a
	// -procs parent divides the server's CPU by their sum.
	DeliveredInWindow int64 `json:"ticks_delivered_window,omitzero"`
	// Hists carries the raw histograms from a child of a -procs run to its parent.
	Hists map[string]HistSnapshot `json:"hists,omitempty"`
}

// TickStats describes the ticks whose time fell in the window. Expected is opened sockets ×
// distinct seqs seen in the window; a tick lost on every socket at the window's edges is not
// noticed, one lost anywhere inside shows as a gap.
type TickStats struct {
	Expected int64   `json:"expected"`
	Received int64   `json:"received"`
	Gaps     int64   `json:"gaps"` // seqs skipped between two consecutive receives of a socket
	Dups     int64   `json:"dups"` // receives of a seq not newer than the socket's last one
	Seqs     int64   `json:"seqs"` // distinct seqs in the window
	Latency  Latency `json:"latency"`
}

// FibStats describes the Fibonacci requests of the window.
type FibStats struct {
	Sent       int64            `json:"sent"`
	OK         int64            `json:"ok"`
	Verified   int64            `json:"verified"`   // results compared with math/big
	Mismatches int64            `json:"mismatches"` // wrong n, id or result
	Unmatched  int64            `json:"unmatched"`  // answers to no outstanding request
	Errors     map[string]int64 `json:"errors,omitempty"`
	ReqPerSec  float64          `json:"req_per_s"` // ok answers received in the window / window
	RTT        Latency          `json:"rtt"`
}

// ServerStats are the sampled server processes, summed over every PID.
type ServerStats struct {
	PIDs              []int   `json:"pids"`
	RSSBaselineMiB    float64 `json:"rss_baseline_mib"`
	RSSLoadedMiB      float64 `json:"rss_loaded_mib"`
	RSSPeakMiB        float64 `json:"rss_peak_mib"`
	RSSPerSocketKiB   float64 `json:"rss_per_socket_kib"` // (loaded − baseline) / opened
	CPUOpenSec        float64 `json:"cpu_open_s"`         // during the connect phase
	CPUPerHandshakeUS float64 `json:"cpu_per_handshake_us"`
	CPUWindowSec      float64 `json:"cpu_window_s"`
	CPUPerTickUS      float64 `json:"cpu_per_tick_us,omitzero"`    // ticks, idle: window CPU / ticks delivered
	CPUPerRequestUS   float64 `json:"cpu_per_request_us,omitzero"` // fib: window CPU / ok answers
	Error             string  `json:"error,omitempty"`             // a PID that could not be read
}

// Merge combines the results of the children of a -procs run: counts add up, latencies come
// from the merged histograms, times are the slowest child's.
func Merge(rs []Result) Result {
	if len(rs) == 0 {
		return Result{}
	}
	out := Result{Mode: rs[0].Mode, URL: rs[0].URL, Procs: len(rs), Hists: map[string]HistSnapshot{}}
	addMap := func(dst *map[string]int, src map[string]int) {
		for k, v := range src {
			if *dst == nil {
				*dst = map[string]int{}
			}
			(*dst)[k] += v
		}
	}
	for _, r := range rs {
		out.N += r.N
		out.Opened += r.Opened
		out.Failed += r.Failed
		addMap(&out.FailReasons, r.FailReasons)
		addMap(&out.Dropped, r.Dropped)
		out.OpenSec = max(out.OpenSec, r.OpenSec)
		out.WindowSec = max(out.WindowSec, r.WindowSec)
		out.ElapsedSec = max(out.ElapsedSec, r.ElapsedSec)
		out.ClientCPUSec += r.ClientCPUSec
		out.ClientMaxRSSMiB += r.ClientMaxRSSMiB
		for k, h := range r.Hists {
			m := out.Hists[k]
			m.Merge(h)
			out.Hists[k] = m
		}
		if r.Ticks != nil {
			if out.Ticks == nil {
				out.Ticks = &TickStats{}
			}
			out.Ticks.Expected += r.Ticks.Expected
			out.Ticks.Received += r.Ticks.Received
			out.Ticks.Gaps += r.Ticks.Gaps
			out.Ticks.Dups += r.Ticks.Dups
			out.Ticks.Seqs = max(out.Ticks.Seqs, r.Ticks.Seqs)
		}
		if r.Fib != nil {
			if out.Fib == nil {
				out.Fib = &FibStats{Errors: map[string]int64{}}
			}
			f := out.Fib
			f.Sent += r.Fib.Sent
			f.OK += r.Fib.OK
			f.Verified += r.Fib.Verified
			f.Mismatches += r.Fib.Mismatches
			f.Unmatched += r.Fib.Unmatched
			f.ReqPerSec += r.Fib.ReqPerSec
			for k, v := range r.Fib.Errors {
				f.Errors[k] += v
			}
		}
	}
	if out.OpenSec > 0 {
		out.HandshakesPerSec = float64(out.Opened) / out.OpenSec
	}
	out.Handshake = out.Hists[histHandshake].Summary()
	if out.Ticks != nil {
		out.Ticks.Latency = out.Hists[histTick].Summary()
	}
	if out.Fib != nil {
		out.Fib.RTT = out.Hists[histRTT].Summary()
	}
	out.Hists = nil
	return out
}

// WriteSummary prints r for people.
func WriteSummary(w io.Writer, r Result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("mode %s  url %s  procs %d  loadavg %s → %s  elapsed %.1fs", r.Mode, r.URL, r.Procs, r.LoadAvgStart, r.LoadAvgEnd, r.ElapsedSec)
	p("sockets: %d asked, %d opened, %d failed in %.3fs (%.0f/s); handshake %s", r.N, r.Opened, r.Failed, r.OpenSec, r.HandshakesPerSec, fmtLat(r.Handshake))
	if len(r.FailReasons) > 0 {
		p("  failures: %s", fmtMap(r.FailReasons))
	}
	if len(r.Dropped) > 0 {
		p("  closed by the server before the end: %s", fmtMap(r.Dropped))
	}
	if r.PresentSec > 0 || r.PresenceTimedOut {
		state := "full"
		if r.PresenceTimedOut {
			state = "NOT full (timed out)"
		}
		p("presence: %s after %.3fs (baseline %d, last HLEN %d)", state, r.PresentSec, r.PresenceBase, r.PresenceLast)
	}
	if t := r.Ticks; t != nil {
		p("ticks in %.1fs window: %d/%d received over %d seqs, %d gaps, %d dups; latency %s", r.WindowSec, t.Received, t.Expected, t.Seqs, t.Gaps, t.Dups, fmtLat(t.Latency))
	}
	if f := r.Fib; f != nil {
		p("fib in %.1fs window: %.0f req/s; sent %d, ok %d, verified %d, mismatches %d, unmatched %d, errors %s", r.WindowSec, f.ReqPerSec, f.Sent, f.OK, f.Verified, f.Mismatches, f.Unmatched, fmtMap(f.Errors))
		p("  round trip %s", fmtLat(f.RTT))
	}
	if s := r.Server; s != nil {
		p("server %v: RSS %.1f → %.1f MiB (peak %.1f) = %.2f KiB/socket; CPU open %.3fs = %.1f µs/handshake; window CPU %.3fs",
			s.PIDs, s.RSSBaselineMiB, s.RSSLoadedMiB, s.RSSPeakMiB, s.RSSPerSocketKiB, s.CPUOpenSec, s.CPUPerHandshakeUS, s.CPUWindowSec)
		if s.CPUPerTickUS > 0 {
			p("  %.2f µs CPU per delivered tick", s.CPUPerTickUS)
		}
		if s.CPUPerRequestUS > 0 {
			p("  %.2f µs CPU per request", s.CPUPerRequestUS)
		}
		if s.Error != "" {
			p("  sampling error: %s", s.Error)
		}
	}
	p("load generator: CPU %.2fs, max RSS %.0f MiB", r.ClientCPUSec, r.ClientMaxRSSMiB)
}

func fmtLat(l Latency) string {
	if l.Count == 0 {
		return "(none)"
	}
	s := fmt.Sprintf("p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms (n=%d)", l.P50ms, l.P90ms, l.P99ms, l.MaxMS, l.Count)
	if l.Negative > 0 {
		s += fmt.Sprintf(" [%d negative]", l.Negative)
	}
	return s
}

func fmtMap[V int | int64](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}
