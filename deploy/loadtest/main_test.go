package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/loadgen"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/internal/testkit/standalone"
	"github.com/wsgw/wsgw/pkg/gateway"
)

// childEnv makes the test binary act as the loadtest program: -procs re-executes
// os.Executable(), which in a test is this binary.
const childEnv = "LOADTEST_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// lastJSON decodes the JSON line that -json prints after the summary.
func lastJSON(t *testing.T, out string) loadgen.Result {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var res loadgen.Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not the JSON result: %v\n%s", err, out)
	}
	return res
}

func TestProcs(t *testing.T) {
	url := standalone.Start(t, gateway.Options{}, 100*time.Millisecond)
	t.Setenv(childEnv, "1")
	var stdout bytes.Buffer
	var stderr testkit.SyncBuffer // the children's copies write it concurrently
	prof := t.TempDir() + "/lg.pprof"
	args := []string{"-url", url, "-mode", "ticks", "-n", "41", "-procs", "2", "-duration", "1s", "-grace", "300ms", "-json", "-pid", fmt.Sprint(os.Getpid()),
		"-cpuprofile", prof}
	if err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, stderr.String())
	}
	res := lastJSON(t, stdout.String())
	if res.Procs != 2 || res.N != 41 || res.Opened != 41 || res.Failed != 0 {
		t.Fatalf("procs %d, n %d, opened %d, failed %d", res.Procs, res.N, res.Opened, res.Failed)
	}
	tk := res.Ticks
	if tk == nil || tk.Received == 0 || tk.Received != tk.Expected || tk.Gaps != 0 || tk.Dups != 0 || tk.Latency.Count != uint64(tk.Received) {
		t.Fatalf("ticks %+v", tk)
	}
	if res.Server == nil || res.Server.RSSLoadedMiB <= 0 {
		t.Errorf("server %+v", res.Server)
	}
	if !strings.Contains(stdout.String(), "sockets: 41 asked, 41 opened") {
		t.Errorf("no human summary:\n%s", stdout.String())
	}
	// Each child profiles itself; the parent only waits.
	for _, f := range []string{prof + ".0", prof + ".1"} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("profile %s: %v", f, err)
		}
	}
	if _, err := os.Stat(prof); err == nil {
		t.Errorf("the parent of a -procs run wrote a profile too")
	}
}

func TestSingle(t *testing.T) {
	url := standalone.Start(t, gateway.Options{}, 100*time.Millisecond)
	var stdout, stderr bytes.Buffer
	args := []string{"-url", url, "-mode", "storm", "-n", "30", "-pid", fmt.Sprint(os.Getpid()), "-json"}
	if err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, stderr.String())
	}
	if res := lastJSON(t, stdout.String()); res.Opened != 30 || res.Server == nil {
		t.Errorf("result %+v", res)
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, nil, &out, &out); err != nil || !strings.Contains(out.String(), "-procs") {
		t.Errorf("-h: %v\n%s", err, out.String())
	}
	for _, args := range [][]string{{"-pid", "x"}, {"-src-base", "nope"}, {"extra"}, {"-mode", "nope"}} {
		out.Reset()
		if err := run(context.Background(), args, nil, &out, &out); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
