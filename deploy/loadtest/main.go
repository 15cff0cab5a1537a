// Command loadtest is the gateway's load generator: flags and output around deploy/loadgen.
//
//	go run ./deploy/loadtest -url ws://127.0.0.1:8080/ws -mode idle -n 10000 -pid $(pidof gateway)
//
// Modes: idle (open -n sockets, hold them -hold), ticks (tick latency, gaps, duplicates over
// -duration), fib (Fibonacci throughput and round trip), storm (time until -n sockets are open
// and, with -redis, present in presence). -procs K runs K copies of itself, each with a share
// of the sockets and its own source addresses, and merges their figures. -json prints one JSON
// line with every figure after the human summary. Run with -h for every flag.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/wsgw/wsgw/deploy/loadgen"
	"github.com/wsgw/wsgw/internal/cli"
)

func main() {
	cli.Main("loadtest", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr) })
}

// pidList is a repeatable, comma-separated -pid flag.
type pidList []int

func (p *pidList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad pid %q", f)
		}
		*p = append(*p, n)
	}
	return nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg     loadgen.Config
		pids    pidList
		srcBase string
		asJSON  bool
		profile string
	)
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/ws", "gateway WebSocket URL")
	fs.StringVar(&cfg.Mode, "mode", "idle", "idle, ticks, fib or storm")
	fs.IntVar(&cfg.N, "n", 1000, "sockets")
	fs.IntVar(&cfg.Inflight, "inflight", 200, "handshakes in flight at once")
	fs.Float64Var(&cfg.Rate, "rate", 0, "handshakes started per second (0: as fast as -inflight allows)")
	fs.DurationVar(&cfg.Hold, "hold", 0, "idle: how long to hold the sockets; storm: longest wait for presence (default 10s)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "ticks, fib: measurement window (default 10s)")
	fs.DurationVar(&cfg.Grace, "grace", 0, "after the window: wait for late ticks / outstanding answers (default 2s)")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "hard stop of the whole run (default hold or duration + 2m)")
	fs.IntVar(&cfg.Src, "src", 0, "source addresses to spread sockets over (0: ceil(n/20000)+1 on loopback, -1: no binding)")
	fs.StringVar(&srcBase, "src-base", "127.0.0.2", "first source address")
	fs.StringVar(&cfg.User, "user", "lt", `user name prefix (socket i of process p is PREFIXp-i; "-": none, the server assigns guest names)`)
	fs.IntVar(&cfg.FibN, "fib-n", 90, "fib: fixed n (when -fib-max is 0)")
	fs.IntVar(&cfg.FibMax, "fib-max", 0, "fib: n uniform in [0, fib-max] per request")
	fs.IntVar(&cfg.Pipeline, "pipeline", 1, "fib: outstanding requests per socket")
	fs.IntVar(&cfg.VerifyEvery, "verify-every", 100, "fib with -fib-max: check 1 in this many results against math/big (fixed n: all are checked)")
	fs.DurationVar(&cfg.RetryAfter, "retry-after", 0, "fib: pause after rate_limited or busy (default 50ms)")
	fs.StringVar(&cfg.RedisURL, "redis", "", "storm: redis://host:port/db to wait for presence (HLEN PREFIXpresence)")
	fs.StringVar(&cfg.Prefix, "prefix", "ws:", "Redis key prefix")
	fs.Var(&pids, "pid", "server PID to sample (repeatable or comma-separated)")
	fs.Int64Var(&cfg.ReadLimit, "read-limit", 64<<20, "client read limit in bytes")
	fs.BoolVar(&asJSON, "json", false, "print one JSON line with every figure after the summary")
	fs.IntVar(&cfg.Procs, "procs", 1, "processes to spread the sockets over (one holds at most ~19k)")
	fs.IntVar(&cfg.ChildIndex, "child", -1, "internal: this process is child i of a -procs run")
	fs.StringVar(&profile, "cpuprofile", "", "write the load generator's own CPU profile to this file (child i of -procs: FILE.i)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.PIDs = pids
	if cfg.SrcBase = net.ParseIP(srcBase); cfg.SrcBase == nil {
		return fmt.Errorf("-src-base %q is not an IP address", srcBase)
	}
	limit, err := loadgen.RaiseNoFile()
	if err != nil {
		return err
	}
	perProc := (cfg.N + max(cfg.Procs, 1) - 1) / max(cfg.Procs, 1)
	if uint64(perProc)+100 > limit {
		fmt.Fprintf(stderr, "loadtest: warning: %d sockets per process but only %d open files allowed; use -procs\n", perProc, limit)
	}

	if profile != "" && (cfg.Procs <= 1 || cfg.ChildIndex >= 0) { // a -procs parent only waits
		if cfg.ChildIndex >= 0 {
			profile += "." + strconv.Itoa(cfg.ChildIndex)
		}
		stop, err := startProfile(profile)
		if err != nil {
			return err
		}
		defer stop()
	}

	switch {
	case cfg.ChildIndex >= 0:
		return runChild(ctx, cfg, stdin, stdout)
	case cfg.Procs > 1:
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable for -procs: %w", err)
		}
		res, err := loadgen.Spawn(ctx, cfg, exe, func(i int) []string { return childArgs(fs, cfg.Procs, i) }, stderr)
		if res.Mode != "" {
			output(stdout, res, asJSON)
		}
		return err
	default:
		res, err := loadgen.Run(ctx, cfg)
		if err != nil {
			return err
		}
		output(stdout, res, asJSON)
		return nil
	}
}

// runChild runs one share of a -procs run, reporting phases and the result as JSON lines on
// stdout; the parent closing stdin releases a storm's sockets.
func runChild(ctx context.Context, cfg loadgen.Config, stdin io.Reader, stdout io.Writer) error {
	enc := json.NewEncoder(stdout)
	cfg.Events = func(phase string) { _ = enc.Encode(loadgen.ChildLine{Event: phase}) }
	release := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdin); close(release) }()
	cfg.Release = release
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return enc.Encode(loadgen.ChildLine{Event: loadgen.EventResult, Result: &res})
}

// childArgs repeats the flags given to the parent for child i, except those only the parent
// acts on: it samples the servers, polls presence and prints.
func childArgs(fs *flag.FlagSet, procs, i int) []string {
	var args []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "procs", "child", "pid", "redis", "json":
			return
		}
		args = append(args, "-"+f.Name+"="+f.Value.String())
	})
	return append(args, "-procs="+strconv.Itoa(procs), "-child="+strconv.Itoa(i))
}

// startProfile starts a CPU profile written to path; stop ends it and closes the file.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func output(w io.Writer, res loadgen.Result, asJSON bool) {
	loadgen.WriteSummary(w, res)
	if asJSON {
		b, err := json.Marshal(res)
		if err != nil {
			fmt.Fprintln(w, `{"error":"encode result"}`)
			return
		}
		fmt.Fprintln(w, string(b))
	}
}
