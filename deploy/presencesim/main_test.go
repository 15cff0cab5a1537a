package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainWithLeakCheck(m) }

// simulate runs the command with args (plus a JSON report file) and returns its report.
func simulate(t *testing.T, args ...string) (*Report, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.json")
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, append(args, "-json-out", path, "-max-time", "90s"), &out, &errOut)
	t.Logf("progress:\n%s\nsummary:%s", errOut.String(), out.String())
	if err != nil {
		t.Fatalf("presencesim %v: %v", args, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, b)
	}
	return &rep, out.String()
}

// short is a run of a few seconds: 3 gateways of 1000 connections (2000 on the one that
// crashes), a 1 s TTL so the sweep comes quickly, churn all along.
var short = []string{"-gateways", "3", "-conns", "1000", "-victim-conns", "2000", "-ttl", "1s",
	"-idle", "1s", "-duration", "2s", "-churn", "200", "-settle", "20s"}

// checkFilled asserts presence was exact and every figure of the report was measured.
func checkFilled(t *testing.T, rep *Report, phases ...string) {
	t.Helper()
	if !rep.Exact || rep.PresenceCount != rep.Expected || rep.Expected == 0 {
		t.Errorf("presence not exact: %d fields, want %d (exact=%v)", rep.PresenceCount, rep.Expected, rep.Exact)
	}
	if rep.Total != 4000 {
		t.Errorf("connections = %d, want 4000", rep.Total)
	}
	if len(rep.Sweeps) != 1 {
		t.Fatalf("sweeps = %+v, want one", rep.Sweeps)
	}
	sw := rep.Sweeps[0]
	// The crashed gateway held 2000 connections give or take the churn in flight when it died.
	if sw.Conns < 1800 || sw.GoneAfterS <= 0 || sw.ExpiredAfterS <= 0 || sw.GoneAfterS < sw.FirstSweptAfterS {
		t.Errorf("sweep report not filled: %+v", sw)
	}
	if got := rep.Expected + sw.Conns; got < 3900 || got > 4100 {
		t.Errorf("live %d + swept %d = %d, want about 4000", rep.Expected, sw.Conns, got)
	}
	var names []string
	for _, p := range rep.Phases {
		names = append(names, p.Name)
		if p.Usage.Commands <= 0 || p.Usage.Seconds <= 0 || len(p.Usage.Nodes) != rep.Nodes {
			t.Errorf("phase %s: usage not filled: %+v", p.Name, p.Usage)
		}
	}
	if got, want := strings.Join(names, ","), strings.Join(phases, ","); got != want {
		t.Errorf("phases %s, want %s", got, want)
	}
	pc := rep.PerConn
	for name, v := range map[string]float64{
		"memory": pc.MemoryBytes, "connect cpu": pc.ConnectCPUus, "connect commands": pc.ConnectCommands,
		"disconnect commands": pc.DisconnectCommands, "steady commands": pc.HeartbeatCommands,
		"sweep script time": pc.SweepScriptUSPerConn, "churn p50": pc.ChurnPipelineP50ms, "churn p99": pc.ChurnPipelineP99ms,
		"churn commands/s": pc.ChurnCommandsPerSecTotal, "publish to subscribers": pc.PublishUSPerCall,
	} {
		if v <= 0 {
			t.Errorf("per connection %s = %v, want > 0", name, v)
		}
	}
	if rep.LongestScript.Micros <= 0 || !isScript(strings.Fields(rep.LongestScript.Command)[0]) {
		t.Errorf("longest script not filled: %+v", rep.LongestScript)
	}
	if rep.Longest.Micros < rep.LongestScript.Micros {
		t.Errorf("longest command %+v shorter than the longest script %+v", rep.Longest, rep.LongestScript)
	}
}

func TestShortRunStandalone(t *testing.T) {
	r := testkit.StartRedis(t)
	rep, summary := simulate(t, append([]string{"-redis", r.URL(), "-slowlog-us", "0"}, short...)...)
	checkFilled(t, rep, "connect", "steady", "ticks", "churn", "crash", "disconnect")
	if rep.Mode != "standalone" || rep.Nodes != 1 {
		t.Errorf("mode %s with %d masters, want standalone with 1", rep.Mode, rep.Nodes)
	}
	if !strings.Contains(summary, "presence exact at the end: true") {
		t.Errorf("summary does not say presence was exact:\n%s", summary)
	}
	// Nothing of the run is left behind but the store's bookkeeping that expires by itself (a
	// swept mark, a writer's applied sequence, the sweeper lease), and the slowlog settings are
	// restored.
	ctx := context.Background()
	keys, err := r.Client().Keys(ctx, "sim:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if ttl, err := r.Client().PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
			t.Errorf("key left without a TTL: %s (%v, %v)", k, ttl, err)
		}
	}
	if v, err := r.Client().ConfigGet(ctx, "slowlog-log-slower-than").Result(); err != nil || v["slowlog-log-slower-than"] != "10000" {
		t.Errorf("slowlog-log-slower-than = %v (%v), want the default 10000 back", v, err)
	}
}

// TestShortRunStartedServerRestart has the simulator start its own redis-server, restart it
// empty after the crash phase and check that every live connection was written back.
func TestShortRunStartedServerRestart(t *testing.T) {
	testkit.Need(t, "redis-server")
	rep, _ := simulate(t, append([]string{"-start", "-restart", "-dir", t.TempDir()}, short...)...)
	checkFilled(t, rep, "connect", "steady", "ticks", "churn", "crash", "restart", "disconnect")
	if rep.Restart == nil || rep.Restart.Conns != rep.Expected || rep.Restart.DownSeconds <= 0 {
		t.Errorf("restart report %+v, want %d connections written back", rep.Restart, rep.Expected)
	}
}

// TestShortRunCluster runs against a 3-master Redis Cluster. With one presence hash every
// presence command lands on the node owning its slot: the report shows where the work went.
func TestShortRunCluster(t *testing.T) {
	c := testkit.StartCluster(t)
	rep, _ := simulate(t, append([]string{"-cluster", strings.Join(c.Addrs(), ",")}, short...)...)
	checkFilled(t, rep, "connect", "steady", "ticks", "churn", "crash", "disconnect")
	if rep.Mode != "cluster" || rep.Nodes != 3 {
		t.Errorf("mode %s with %d masters, want cluster with 3", rep.Mode, rep.Nodes)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "exactly one of"},
		{[]string{"-start", "-redis", "redis://x"}, "exactly one of"},
		{[]string{"-redis", "redis://x", "-restart"}, "-restart needs -start"},
		{[]string{"-start", "-gateways", "1"}, "-gateways"},
		{[]string{"-start", "-crashes", "3"}, "-crashes"},
		{[]string{"-start", "-ttl", "10ms"}, "-ttl"},
		{[]string{"-start", "-shards", "0"}, "-shards"},
	} {
		err := run(context.Background(), tc.args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}
