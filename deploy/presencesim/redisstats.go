package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/rediscount"
)

// nodeStats is one INFO snapshot of one Redis node.
type nodeStats struct {
	cpu      float64 // used_cpu_sys + used_cpu_user, seconds
	commands int64   // total_commands_processed
	memory   int64   // used_memory
	cmds     map[string]cmdStat
}

// cmdStat is one line of INFO commandstats.
type cmdStat struct {
	Calls int64 `json:"calls"`
	Usec  int64 `json:"usec"`
}

// snapshot is a nodeStats of every master, in the order of the stats' nodes.
type snapshot struct {
	at    time.Time
	nodes []nodeStats
	own   int64 // commands the simulator itself had sent
}

// stats reads INFO, commandstats and SLOWLOG from every master node. It opens its own
// connections, one client per node, so its round trips never show in the gateways' timings.
type stats struct {
	addrs   []string
	clients []*redis.Client
	slow    slowTracker
	saved   []map[string]string // CONFIG values to restore, per node
	pollMu  sync.Mutex          // one SLOWLOG GET+RESET at a time, or entries are lost
	// own counts the simulator's own reads (INFO, SLOWLOG, HLEN, the sweep watch) on these
	// clients and the observer, which the usage figures leave out of the command counts.
	own rediscount.Hook
}

// newStats connects to each node and lowers its slowlog threshold to thresholdUS (keeping up to
// 1024 entries), remembering the old settings for close.
func newStats(ctx context.Context, addrs []string, thresholdUS int) (*stats, error) {
	s := &stats{addrs: addrs}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1, ClientName: simClientName})
		c.AddHook(&s.own)
		s.clients = append(s.clients, c)
		old, err := c.ConfigGet(ctx, "slowlog-*").Result()
		if err != nil {
			s.close(ctx)
			return nil, fmt.Errorf("stats: config get on %s: %w", a, err)
		}
		s.saved = append(s.saved, old)
	}
	if err := s.configure(ctx, thresholdUS); err != nil {
		s.close(ctx)
		return nil, err
	}
	return s, nil
}

// configure sets the slowlog settings on every node and empties its slowlog; after a Redis
// restart it is called again.
func (s *stats) configure(ctx context.Context, thresholdUS int) error {
	for i, c := range s.clients {
		err := errors.Join(
			c.ConfigSet(ctx, "slowlog-log-slower-than", strconv.Itoa(thresholdUS)).Err(),
			c.ConfigSet(ctx, "slowlog-max-len", "1024").Err(),
			c.Do(ctx, "SLOWLOG", "RESET").Err())
		if err != nil {
			return fmt.Errorf("stats: configure slowlog on %s: %w", s.addrs[i], err)
		}
	}
	return nil
}

// close restores the slowlog settings (best effort: a server that is gone needs nothing) and
// closes the clients.
func (s *stats) close(ctx context.Context) {
	for i, c := range s.clients {
		if i < len(s.saved) {
			for k, v := range s.saved[i] {
				_ = c.ConfigSet(ctx, k, v).Err()
			}
		}
		_ = c.Close()
	}
}

// snap reads every node's INFO.
func (s *stats) snap(ctx context.Context) (snapshot, error) {
	out := snapshot{at: time.Now(), nodes: make([]nodeStats, len(s.clients)), own: s.own.Commands()}
	for i, c := range s.clients {
		txt, err := c.Info(ctx, "cpu", "stats", "memory", "commandstats").Result()
		if err != nil {
			return out, fmt.Errorf("stats: info on %s: %w", s.addrs[i], err)
		}
		out.nodes[i] = parseInfo(txt)
	}
	return out, nil
}

// parseInfo picks the figures the report uses out of INFO's text.
func parseInfo(txt string) nodeStats {
	n := nodeStats{cmds: map[string]cmdStat{}}
	for line := range strings.SplitSeq(txt, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case k == "used_cpu_sys" || k == "used_cpu_user":
			f, _ := strconv.ParseFloat(v, 64)
			n.cpu += f
		case k == "total_commands_processed":
			n.commands, _ = strconv.ParseInt(v, 10, 64)
		case k == "used_memory":
			n.memory, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(k, "cmdstat_"):
			var cs cmdStat
			for kv := range strings.SplitSeq(v, ",") {
				f, val, _ := strings.Cut(kv, "=")
				switch f {
				case "calls":
					cs.Calls, _ = strconv.ParseInt(val, 10, 64)
				case "usec":
					cs.Usec, _ = strconv.ParseInt(val, 10, 64)
				}
			}
			n.cmds[strings.TrimPrefix(k, "cmdstat_")] = cs
		}
	}
	return n
}

// usage is what the Redis nodes did between two snapshots.
type usage struct {
	Seconds      float64            `json:"seconds"`
	CPUSeconds   float64            `json:"redis_cpu_seconds"`
	Commands     int64              `json:"commands"` // the simulator's own left out
	SimCommands  int64              `json:"simulator_commands"`
	CommandsPerS float64            `json:"commands_per_sec"`
	MemoryDelta  int64              `json:"used_memory_delta_bytes"`
	MemoryAfter  int64              `json:"used_memory_bytes"`
	Nodes        []nodeUsage        `json:"nodes"`
	ByCommand    map[string]cmdStat `json:"by_command"`
}

// nodeUsage is one node's share of a usage: where the work went.
type nodeUsage struct {
	Addr       string  `json:"addr"`
	CPUSeconds float64 `json:"redis_cpu_seconds"`
	Commands   int64   `json:"commands"`
	Memory     int64   `json:"used_memory_bytes"`
	// ByCommand is this node's commandstats over the phase: which commands it served.
	ByCommand map[string]cmdStat `json:"by_command"`
}

// diff returns the usage between a and b. A node whose counters went down was restarted in
// between: its figures since the restart count.
func (s *stats) diff(a, b snapshot) usage {
	u := usage{Seconds: b.at.Sub(a.at).Seconds(), ByCommand: map[string]cmdStat{}}
	for i, nb := range b.nodes {
		na := a.nodes[i]
		if nb.commands < na.commands {
			na = nodeStats{}
		}
		nu := nodeUsage{Addr: s.addrs[i], CPUSeconds: nb.cpu - na.cpu, Commands: nb.commands - na.commands, Memory: nb.memory, ByCommand: map[string]cmdStat{}}
		u.CPUSeconds += nu.CPUSeconds
		u.Commands += nu.Commands
		u.MemoryAfter += nb.memory
		u.MemoryDelta += nb.memory - na.memory
		for name, cb := range nb.cmds {
			ca := na.cmds[name]
			if d := (cmdStat{Calls: cb.Calls - ca.Calls, Usec: cb.Usec - ca.Usec}); d.Calls > 0 {
				t := u.ByCommand[name]
				u.ByCommand[name] = cmdStat{Calls: t.Calls + d.Calls, Usec: t.Usec + d.Usec}
				nu.ByCommand[name] = d
			}
		}
		u.Nodes = append(u.Nodes, nu)
	}
	u.SimCommands = min(b.own-a.own, u.Commands)
	u.Commands -= u.SimCommands
	if u.Seconds > 0 {
		u.CommandsPerS = float64(u.Commands) / u.Seconds
	}
	return u
}

// topCommands lists the commands of a commandstats map by Redis time spent, largest first.
func topCommands(by map[string]cmdStat, n int) []string {
	names := slices.Collect(maps.Keys(by))
	slices.SortFunc(names, func(a, b string) int { return int(by[b].Usec - by[a].Usec) })
	return names[:min(n, len(names))]
}

// slowEntry is one SLOWLOG entry.
type slowEntry struct {
	Micros  int64  `json:"us"`
	Command string `json:"command"`
	Node    string `json:"node"`
}

// slowTracker keeps the longest SLOWLOG entries seen: overall and per phase, for any command
// and for scripts only.
type slowTracker struct {
	mu                        sync.Mutex
	phaseMax, phaseScript     slowEntry
	overallMax, overallScript slowEntry
}

func isScript(cmd string) bool {
	switch strings.ToLower(cmd) {
	case "evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro":
		return true
	}
	return false
}

// poll moves every node's slowlog into the tracker (SLOWLOG GET then RESET: an entry logged
// between the two is lost, so poll often enough that few are).
func (s *stats) poll(ctx context.Context) {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	for i, c := range s.clients {
		logs, err := c.SlowLogGet(ctx, 1024).Result()
		if err != nil {
			continue // a restarting server: nothing to read
		}
		_ = c.Do(ctx, "SLOWLOG", "RESET").Err()
		s.slow.mu.Lock()
		for _, l := range logs {
			if l.ClientName == simClientName {
				continue // the simulator's own INFO, HSCAN, ...
			}
			e := slowEntry{Micros: l.Duration.Microseconds(), Command: shortArgs(l.Args), Node: s.addrs[i]}
			name := ""
			if len(l.Args) > 0 {
				name = l.Args[0]
			}
			for _, m := range []*slowEntry{&s.slow.phaseMax, &s.slow.overallMax} {
				if e.Micros > m.Micros {
					*m = e
				}
			}
			if isScript(name) {
				for _, m := range []*slowEntry{&s.slow.phaseScript, &s.slow.overallScript} {
					if e.Micros > m.Micros {
						*m = e
					}
				}
			}
		}
		s.slow.mu.Unlock()
	}
}

// pollLoop polls every 200 ms until ctx ends.
func (s *stats) pollLoop(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.poll(ctx)
		}
	}
}

// takePhase returns the longest entries since the last call and starts a new phase.
func (s *stats) takePhase(ctx context.Context) (longest, script slowEntry) {
	s.poll(ctx)
	s.slow.mu.Lock()
	defer s.slow.mu.Unlock()
	longest, script = s.slow.phaseMax, s.slow.phaseScript
	s.slow.phaseMax, s.slow.phaseScript = slowEntry{}, slowEntry{}
	return longest, script
}

// shortArgs shows a logged command on one short line: at most 5 arguments of at most 40
// characters each (a script's body becomes its first line).
func shortArgs(args []string) string {
	out := make([]string, 0, 6)
	for i, a := range args {
		if i == 5 {
			out = append(out, fmt.Sprintf("…(%d args)", len(args)))
			break
		}
		a = strings.TrimSpace(a)
		if l, _, cut := strings.Cut(a, "\n"); cut {
			a = l + "…"
		}
		if r := []rune(a); len(r) > 40 {
			a = string(r[:40]) + "…"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}
