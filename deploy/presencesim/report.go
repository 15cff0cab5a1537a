package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/wsgw/wsgw/deploy/loadgen"
)

// Report is everything one run measured. Figures per connection are derived from the phases
// by derive; each phase keeps its raw INFO deltas.
type Report struct {
	Mode            string  `json:"mode"` // standalone or cluster
	Nodes           int     `json:"redis_masters"`
	Gateways        int     `json:"gateways"`
	ConnsPerGateway int     `json:"conns_per_gateway"`
	VictimConns     int     `json:"victim_conns"`
	Total           int     `json:"connections"`
	Users           int     `json:"user_pool"`
	Crashes         int     `json:"crashes"`
	Subscribers     int     `json:"time_subscribers"`
	Shards          int     `json:"presence_shards"`
	TTL             string  `json:"presence_ttl"`
	Churn           float64 `json:"churn_per_sec"`
	// LoadBefore and LoadAfter are the machine's 1-minute load average (/proc/loadavg) when
	// the run started and ended: Redis shares the cores with everything else, and the figures
	// mean little without it.
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`

	ConnectSeconds    float64        `json:"connect_seconds"` // until every join was in presence
	Phases            []PhaseReport  `json:"phases"`
	Sweeps            []SweepReport  `json:"sweeps,omitempty"`
	Restart           *RestartReport `json:"restart,omitempty"`
	Exact             bool           `json:"presence_exact"`
	ExactAfterSeconds float64        `json:"exact_after_seconds"`
	PresenceCount     int            `json:"presence_count"`
	Expected          int            `json:"expected_count"`
	Longest           slowEntry      `json:"longest_command"`
	LongestScript     slowEntry      `json:"longest_script"`
	PerConn           PerConn        `json:"per_connection"`
}

// PhaseReport is one phase: Redis usage from INFO, client-side round trips, SLOWLOG maxima.
type PhaseReport struct {
	Name          string                     `json:"name"`
	Ops           int                        `json:"ops"` // joins + leaves made in the phase
	Usage         usage                      `json:"redis"`
	Latency       map[string]loadgen.Latency `json:"latency"`
	Longest       slowEntry                  `json:"longest_command"`
	LongestScript slowEntry                  `json:"longest_script"`
	StoreLogs     map[string]int             `json:"store_logs,omitempty"` // the stores' log lines in the phase, by level and message
}

// SweepReport times the sweep of one crashed gateway, in seconds from the crash.
type SweepReport struct {
	Gateway          string  `json:"gateway"`
	Conns            int     `json:"conns"`
	ExpiredAfterS    float64 `json:"heartbeat_gone_after_s"`
	FirstSweptAfterS float64 `json:"first_swept_after_s"`
	GoneAfterS       float64 `json:"all_gone_after_s"`
	SweepSeconds     float64 `json:"sweep_seconds"` // first field swept to last
}

// RestartReport times the write-back after Redis restarted empty.
type RestartReport struct {
	DownSeconds    float64 `json:"down_seconds"`
	RestoredAfterS float64 `json:"restored_after_s"` // from Redis answering again
	Conns          int     `json:"conns"`
}

// PerConn are the costs the capacity plan uses, derived from the phases.
type PerConn struct {
	MemoryBytes              float64 `json:"redis_memory_bytes"`                // connect: used_memory delta / connections
	ConnectCPUus             float64 `json:"connect_redis_cpu_us"`              // connect: Redis CPU / joins
	ConnectCommands          float64 `json:"connect_commands"`                  // connect: commands / joins
	DisconnectCPUus          float64 `json:"disconnect_redis_cpu_us"`           // disconnect: Redis CPU / leaves
	DisconnectCommands       float64 `json:"disconnect_commands"`               // disconnect: commands / leaves
	ChurnCPUus               float64 `json:"churn_redis_cpu_us_per_op"`         // churn: (CPU − steady rate) / (joins + leaves)
	ChurnCommands            float64 `json:"churn_commands_per_op"`             // churn: (commands − steady rate) / ops
	SteadyCPUPercent         float64 `json:"steady_redis_cpu_percent"`          // steady: Redis CPU / wall time
	SteadyCommandsPerS       float64 `json:"steady_commands_per_sec"`           // steady: heartbeats and sweep checks
	HeartbeatCommands        float64 `json:"commands_per_gateway_per_interval"` // steady commands / (gateways × TTL/3 intervals)
	HeartbeatCPUus           float64 `json:"redis_cpu_us_per_gateway_per_interval"`
	HeartbeatWrites          float64 `json:"heartbeat_writes_per_gateway_per_interval"` // SET + SADD
	SweepChecks              float64 `json:"sweep_checks_per_gateway_per_interval"`     // SMEMBERS + EXISTS: O(gateways) each
	ChurnHeartbeatSETs       float64 `json:"churn_heartbeat_sets_per_op"`               // every flush refreshes the heartbeat
	PublishUSPerCall         float64 `json:"tick_publish_us_per_call"`                  // commandstats: one tick to every subscriber
	TickCPUus                float64 `json:"tick_redis_cpu_us"`                         // ticks: (CPU − steady rate) / ticks, socket writes included
	SweepScriptUSPerConn     float64 `json:"sweep_script_us_per_conn"`                  // crash: script time in commandstats / swept connections
	SweepScriptCalls         int64   `json:"sweep_script_calls"`
	SweepScriptUSPerCall     float64 `json:"sweep_script_us_per_call"`
	ChurnPipelineP50ms       float64 `json:"churn_pipeline_p50_ms"`
	ChurnPipelineP99ms       float64 `json:"churn_pipeline_p99_ms"`
	ChurnCommandsPerSecTotal float64 `json:"churn_commands_per_sec"`
}

func (r *Report) phase(name string) *PhaseReport {
	for i := range r.Phases {
		if r.Phases[i].Name == name {
			return &r.Phases[i]
		}
	}
	return nil
}

func per(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// derive fills PerConn from the phases.
func (r *Report) derive(cfg Config) {
	pc := &r.PerConn
	if p := r.phase("connect"); p != nil {
		pc.MemoryBytes = per(float64(p.Usage.MemoryDelta), float64(p.Ops))
		pc.ConnectCPUus = per(p.Usage.CPUSeconds*1e6, float64(p.Ops))
		pc.ConnectCommands = per(float64(p.Usage.Commands), float64(p.Ops))
	}
	var cpuRate, cmdRate float64
	if p := r.phase("steady"); p != nil {
		cpuRate = per(p.Usage.CPUSeconds, p.Usage.Seconds)
		cmdRate = p.Usage.CommandsPerS
		pc.SteadyCPUPercent = 100 * cpuRate
		pc.SteadyCommandsPerS = cmdRate
		intervals := per(p.Usage.Seconds, (cfg.TTL/3).Seconds()) * float64(cfg.Gateways)
		pc.HeartbeatCommands = per(float64(p.Usage.Commands), intervals)
		pc.HeartbeatCPUus = per(p.Usage.CPUSeconds*1e6, intervals)
		bc := p.Usage.ByCommand
		pc.HeartbeatWrites = per(float64(bc["set"].Calls+bc["sadd"].Calls), intervals)
		pc.SweepChecks = per(float64(bc["smembers"].Calls+bc["exists"].Calls), intervals)

	}
	if p := r.phase("ticks"); p != nil {
		if c, ok := p.Usage.ByCommand["publish"]; ok {
			pc.PublishUSPerCall = per(float64(c.Usec), float64(c.Calls))
		}
		pc.TickCPUus = per((p.Usage.CPUSeconds-cpuRate*p.Usage.Seconds)*1e6, float64(p.Ops))
	}
	if p := r.phase("churn"); p != nil {
		pc.ChurnCPUus = per((p.Usage.CPUSeconds-cpuRate*p.Usage.Seconds)*1e6, float64(p.Ops))
		pc.ChurnCommands = per(float64(p.Usage.Commands)-cmdRate*p.Usage.Seconds, float64(p.Ops))
		pc.ChurnCommandsPerSecTotal = p.Usage.CommandsPerS
		pc.ChurnHeartbeatSETs = per(float64(p.Usage.ByCommand["set"].Calls), float64(p.Ops))
		if l, ok := p.Latency["pipeline"]; ok {
			pc.ChurnPipelineP50ms, pc.ChurnPipelineP99ms = l.P50ms, l.P99ms
		}
	}
	if p := r.phase("crash"); p != nil {
		swept := 0
		for _, s := range r.Sweeps {
			swept += s.Conns
		}
		// Joins, leaves and heartbeats are scripts too, and churn goes on during the crash
		// phase: the churn phase's script time per second is subtracted, and the sweep's calls
		// are counted by the SPOP that only the sweep script issues.
		var us, bgUS float64
		for name, c := range p.Usage.ByCommand {
			if isScript(name) {
				us += float64(c.Usec)
			}
		}
		if ch := r.phase("churn"); ch != nil {
			for name, c := range ch.Usage.ByCommand {
				if isScript(name) {
					bgUS += per(float64(c.Usec), ch.Usage.Seconds) * p.Usage.Seconds
				}
			}
		}
		us = max(us-bgUS, 0)
		pc.SweepScriptCalls = p.Usage.ByCommand["spop"].Calls
		pc.SweepScriptUSPerConn = per(us, float64(swept))
		pc.SweepScriptUSPerCall = per(us, float64(pc.SweepScriptCalls))
	}
	if p := r.phase("disconnect"); p != nil {
		pc.DisconnectCPUus = per(p.Usage.CPUSeconds*1e6, float64(p.Ops))
		pc.DisconnectCommands = per(float64(p.Usage.Commands), float64(p.Ops))
	}
}

// print writes the human summary.
func (r *Report) print(w io.Writer) {
	fmt.Fprintf(w, "\npresencesim: %s Redis (%d master(s)), %d gateways, %d connections (%d on the crashing gateway), %d shard(s), TTL %s, churn %.0f/s\n",
		r.Mode, r.Nodes, r.Gateways, r.Total, r.VictimConns, r.Shards, r.TTL, r.Churn)
	fmt.Fprintf(w, "  load average %s before, %s after (nproc %d)\n", r.LoadBefore, r.LoadAfter, runtime.NumCPU())
	fmt.Fprintf(w, "  connected in %.2f s; presence exact at the end: %v (%d of %d, %.2f s after churn stopped)\n",
		r.ConnectSeconds, r.Exact, r.PresenceCount, r.Expected, r.ExactAfterSeconds)
	pc := r.PerConn
	fmt.Fprintf(w, "per connection (Redis):\n")
	fmt.Fprintf(w, "  memory            %8.0f B (used_memory delta over the connect phase)\n", pc.MemoryBytes)
	fmt.Fprintf(w, "  connect           %8.2f µs CPU, %.4f commands\n", pc.ConnectCPUus, pc.ConnectCommands)
	fmt.Fprintf(w, "  disconnect        %8.2f µs CPU, %.4f commands\n", pc.DisconnectCPUus, pc.DisconnectCommands)
	fmt.Fprintf(w, "  churn (per op)    %8.2f µs CPU, %.4f commands (steady rate subtracted)\n", pc.ChurnCPUus, pc.ChurnCommands)
	fmt.Fprintf(w, "  sweep             %8.2f µs script time per swept connection (%d calls, %.0f µs each)\n",
		pc.SweepScriptUSPerConn, pc.SweepScriptCalls, pc.SweepScriptUSPerCall)
	fmt.Fprintf(w, "steady (heartbeats + sweep checks): %.1f %% Redis CPU, %.0f commands/s; per gateway per TTL/3: %.1f commands (%.1f heartbeat writes, %.1f sweep checks), %.0f µs CPU\n",
		pc.SteadyCPUPercent, pc.SteadyCommandsPerS, pc.HeartbeatCommands, pc.HeartbeatWrites, pc.SweepChecks, pc.HeartbeatCPUus)
	fmt.Fprintf(w, "churn: %.2f heartbeat SETs per join or leave (each flush refreshes the heartbeat)\n", pc.ChurnHeartbeatSETs)
	fmt.Fprintf(w, "ticks: one PUBLISH to %d subscribers: %.1f µs in commandstats, %.0f µs of Redis CPU with the socket writes (ticks phase, steady rate subtracted)\n",
		r.Subscribers, pc.PublishUSPerCall, pc.TickCPUus)
	fmt.Fprintf(w, "phases:\n")
	for _, p := range r.Phases {
		fmt.Fprintf(w, "  %-10s %6.1f s %8d ops %9d commands %8.0f/s  cpu %6.2f s  mem %+.1f MB (now %.1f MB)",
			p.Name, p.Usage.Seconds, p.Ops, p.Usage.Commands, p.Usage.CommandsPerS, p.Usage.CPUSeconds,
			float64(p.Usage.MemoryDelta)/1e6, float64(p.Usage.MemoryAfter)/1e6)
		if l, ok := p.Latency["pipeline"]; ok {
			fmt.Fprintf(w, "  pipeline p50 %.2f p99 %.2f max %.1f ms (%d)", l.P50ms, l.P99ms, l.MaxMS, l.Count)
		}
		if l, ok := p.Latency["script"]; ok {
			fmt.Fprintf(w, "  script p50 %.2f p99 %.2f ms (%d)", l.P50ms, l.P99ms, l.Count)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "             top: %s\n", topLine(p.Usage.ByCommand, 5))
		if len(p.Usage.Nodes) > 1 {
			for _, n := range p.Usage.Nodes {
				fmt.Fprintf(w, "             node %s: %d commands, cpu %.2f s, %.1f MB; top: %s\n",
					n.Addr, n.Commands, n.CPUSeconds, float64(n.Memory)/1e6, topLine(n.ByCommand, 3))
			}
		}
		if p.Longest.Micros > 0 {
			fmt.Fprintf(w, "             longest: %d µs %s\n", p.Longest.Micros, p.Longest.Command)
		}
		for _, msg := range slices.Sorted(maps.Keys(p.StoreLogs)) {
			fmt.Fprintf(w, "             store log: %d× %s\n", p.StoreLogs[msg], msg)
		}
		if p.LongestScript.Micros > 0 {
			fmt.Fprintf(w, "             longest script: %d µs %s\n", p.LongestScript.Micros, p.LongestScript.Command)
		}
	}
	for _, s := range r.Sweeps {
		fmt.Fprintf(w, "sweep of %s (%d connections): heartbeat gone %.2f s after the crash, first field swept %.2f s, last %.2f s: sweep %.3f s\n",
			s.Gateway, s.Conns, s.ExpiredAfterS, s.FirstSweptAfterS, s.GoneAfterS, s.SweepSeconds)
	}
	if r.Restart != nil {
		fmt.Fprintf(w, "restart: redis down %.2f s; %d connections written back %.2f s after it answered\n",
			r.Restart.DownSeconds, r.Restart.Conns, r.Restart.RestoredAfterS)
	}
	fmt.Fprintf(w, "longest command: %d µs %s (on %s)\n", r.Longest.Micros, r.Longest.Command, r.Longest.Node)
	fmt.Fprintf(w, "longest script:  %d µs %s (on %s)\n", r.LongestScript.Micros, r.LongestScript.Command, r.LongestScript.Node)
}

// topLine formats the n commands of by that took the most Redis time: calls × mean µs.
func topLine(by map[string]cmdStat, n int) string {
	var top []string
	for _, name := range topCommands(by, n) {
		c := by[name]
		top = append(top, fmt.Sprintf("%s %d×%.1fµs", name, c.Calls, per(float64(c.Usec), float64(c.Calls))))
	}
	return strings.Join(top, ", ")
}

// loadAverage is the first field of /proc/loadavg, or "?" where there is none.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
