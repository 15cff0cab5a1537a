package localcluster_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
)

func TestStartKillRestartStop(t *testing.T) {
	testkit.Need(t, "redis-server")
	testkit.Need(t, "haproxy")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var progress testkit.SyncBuffer
	dir := t.TempDir()
	c, err := localcluster.Start(ctx, localcluster.Options{
		Dir: dir, Gateways: 2, Tickers: 1, Stdout: &progress,
		Env: []string{"PRESENCE_TTL=3s", "SHUTDOWN_TIMEOUT=2s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop()
		}
	})
	t.Logf("progress:\n%s", progress.String())

	if len(c.Gateways) != 2 || len(c.Tickers) != 1 || c.Redis == nil || c.LB == nil || c.LBAddr == "" {
		t.Fatalf("cluster = %+v", c)
	}
	for i, g := range c.Gateways {
		if want := "gw" + string(rune('1'+i)); g.ID != want || g.Name != want {
			t.Errorf("gateway %d: ID %q Name %q, want %q", i, g.ID, g.Name, want)
		}
		if !g.Running() || g.Pid() == 0 {
			t.Errorf("%s not running", g.ID)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "haproxy.cfg")); err != nil {
		t.Error(err)
	}
	resp, err := http.Get("http://" + c.LBAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("LB /healthz: %s", resp.Status)
	}

	// Kill and restart one gateway on the same port.
	g := c.Gateways[0]
	oldPid := g.Pid()
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	if g.Running() {
		t.Fatal("running after Kill")
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if g.Pid() == oldPid {
		t.Error("same pid after restart")
	}
	if err := c.WaitReady(ctx, g); err != nil {
		t.Fatal(err)
	}
	// SIGTERM drains and exits 0.
	if err := g.Term(10 * time.Second); err != nil {
		t.Errorf("Term: %v", err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, g); err != nil {
		t.Fatal(err)
	}

	// Redis restarts empty on the same port.
	rc := c.RedisClient()
	if err := rc.Set(ctx, "localcluster:test", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartRedisEmpty(); err != nil {
		t.Fatal(err)
	}
	if n, err := rc.Exists(ctx, "localcluster:test").Result(); err != nil || n != 0 {
		t.Errorf("after RestartRedisEmpty: exists = %d, %v", n, err)
	}

	pids := []*localcluster.Proc{c.Gateways[0].Proc, c.Gateways[1].Proc, c.Tickers[0], c.LB, c.Redis}
	stopped = true
	if err := c.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	for _, p := range pids {
		if p.Running() {
			t.Errorf("%s still running after Stop", p.Name)
		}
	}
	log, _ := os.ReadFile(c.Gateways[0].LogPath())
	if n := strings.Count(string(log), "=== localcluster: gw1 starting"); n != 3 {
		t.Errorf("gw1 log shows %d starts, want 3 (appended across restarts)", n)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartNoLBWithGivenRedisFailsCleanly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A Redis nobody listens on: the tickers and gateways start but never become ready... the
	// gateway's /readyz stays 503, so Start must fail and stop what it started.
	port := testkit.FreePort(t)
	bin := sharedBin(t)
	short, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	c, err := localcluster.Start(short, localcluster.Options{
		Dir: t.TempDir(), BinDir: bin, Gateways: 1, Tickers: 1, NoLB: true,
		RedisURL: "redis://127.0.0.1:" + strconv.Itoa(port) + "/0",
	})
	if err == nil {
		_ = c.Stop()
		t.Fatal("Start succeeded without a Redis")
	}
	t.Logf("Start: %v", err)
}

func sharedBin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := localcluster.BuildBinaries(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range localcluster.Programs {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSeveralLBs: with LBProcs 3, three single-threaded HAProxy processes share the port, each
// accepting on its own (SO_REUSEPORT): the port still answers with any two of them dead.
func TestSeveralLBs(t *testing.T) {
	testkit.Need(t, "redis-server")
	testkit.Need(t, "haproxy")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Gateways: 1, Tickers: 1, LBProcs: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	if len(c.LBs) != 3 || c.LBs[0] != c.LB || c.LBs[2].Name != "haproxy3" {
		t.Fatalf("LBs %v, LB %v", c.LBs, c.LB)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
	if err != nil || !strings.Contains(string(cfg), "\n    nbthread 1\n") {
		t.Fatalf("haproxy.cfg (%v) lacks nbthread 1:\n%s", err, cfg)
	}
	healthy := func() error {
		hc := &http.Client{Timeout: 2 * time.Second}
		for range 20 { // fresh connections, spread over the listeners by the kernel
			resp, err := hc.Get("http://" + c.LBAddr + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			hc.CloseIdleConnections()
			if resp.StatusCode != 200 {
				return errors.New(resp.Status)
			}
		}
		return nil
	}
	if err := healthy(); err != nil {
		t.Fatal(err)
	}
	for i, kill := range []int{0, 2} {
		if err := c.LBs[kill].Kill(); err != nil {
			t.Fatal(err)
		}
		if err := healthy(); err != nil {
			t.Fatalf("after killing %d of 3 HAProxy processes: %v", i+1, err)
		}
	}
}
