// Command cluster runs the whole topology on this machine without Docker: a redis-server, two
// tickers, three gateways and HAProxy in front, as detached processes that outlive the command.
//
//	go run ./deploy/cluster up     [-gateways 3] [-tickers 2] [-dir .cluster] [-lb-port 8080] [-lb-procs 1] [-auth]
//	go run ./deploy/cluster status [-dir .cluster]
//	go run ./deploy/cluster down   [-dir .cluster]
//
// up builds the programs into DIR/bin, starts everything (see deploy/localcluster), writes
// DIR/state.json (PIDs, ports) and prints what to try; logs go to DIR/NAME.log. Gateways and
// tickers inherit the environment, so `PRESENCE_TTL=5s go run ./deploy/cluster up` works. down
// sends SIGTERM to exactly the PIDs in state.json, gateways first, kills what is left after the
// drain timeout, and removes state.json. -auth turns authentication on: a random
// AUTH_JWT_SECRET for every gateway, kept in DIR/auth.secret for `gateway token`.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/cli"
)

func main() {
	cli.Main("cluster", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdout, os.Stderr) })
}

const usage = `usage: go run ./deploy/cluster up|status|down [flags]

  up      start redis-server, tickers, gateways and HAProxy, detached; write DIR/state.json
  status  show what state.json lists and whether it runs
  down    SIGTERM exactly the PIDs in state.json (gateways first), then remove it

Run "go run ./deploy/cluster COMMAND -h" for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	switch args[0] {
	case "up":
		return up(ctx, args[1:], stdout, stderr)
	case "down":
		return down(args[1:], stdout, stderr)
	case "status":
		return status(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// State is DIR/state.json: what up started, so down and status need nothing else.
type State struct {
	Dir       string    `json:"dir"`
	StartedAt time.Time `json:"started_at"`
	RedisURL  string    `json:"redis_url"`
	LBAddr    string    `json:"lb_addr"`
	// DrainTimeout is how long down waits for a gateway after SIGTERM before SIGKILL.
	DrainTimeout string `json:"drain_timeout"`
	// AuthSecretFile holds the gateways' AUTH_JWT_SECRET when started with -auth.
	AuthSecretFile string `json:"auth_secret_file,omitempty"`
	Procs          []Proc `json:"procs"`
}

// Proc is one started process. Kind orders the shutdown: gateways, tickers, haproxy, redis.
type Proc struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Pid  int    `json:"pid"`
	Addr string `json:"addr,omitempty"`
	Exe  string `json:"exe"`
	Log  string `json:"log"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", statePath(dir), err)
	}
	return &s, nil
}

func up(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gateways := fs.Int("gateways", 3, "number of gateways")
	tickers := fs.Int("tickers", 2, "number of tickers")
	dir := fs.String("dir", ".cluster", "directory for logs, binaries and state.json")
	lbPort := fs.Int("lb-port", 8080, "HAProxy port on 127.0.0.1")
	lbProcs := fs.Int("lb-procs", 1, "HAProxy processes sharing the port, single-threaded when several\n(each proxies at most ~half the open-file limit: 6 for 50k sockets under 20,000 files)")
	authOn := fs.Bool("auth", false, "turn authentication on: a random AUTH_JWT_SECRET, kept in DIR/auth.secret")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *gateways < 1 || *tickers < 1 || *lbProcs < 1 {
		return errors.New("up: -gateways, -tickers and -lb-procs must be at least 1")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if s, err := readState(abs); err == nil {
		var live []string
		for _, p := range s.Procs {
			if alive(p) {
				live = append(live, fmt.Sprintf("%s (pid %d)", p.Name, p.Pid))
			}
		}
		if len(live) > 0 {
			return fmt.Errorf("up: a cluster from %s is still running: %s; run `go run ./deploy/cluster down -dir %s` first",
				statePath(abs), strings.Join(live, ", "), *dir)
		}
		fmt.Fprintf(stdout, "removing stale %s (none of its processes runs)\n", statePath(abs))
		_ = os.Remove(statePath(abs))
	}
	for _, tool := range []string{"redis-server", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("up: %s not found in PATH; install it (Debian: apt-get install redis-server haproxy)", tool)
		}
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	var env []string
	secretFile := ""
	if *authOn {
		secretFile = filepath.Join(abs, "auth.secret")
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
			return fmt.Errorf("up: write %s: %w", secretFile, err)
		}
		env = append(env, "AUTH_JWT_SECRET="+hex.EncodeToString(secret))
	}
	bin := filepath.Join(abs, "bin")
	fmt.Fprintf(stdout, "building gateway, ticker and client into %s\n", bin)
	if err := localcluster.BuildBinaries(ctx, bin); err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := localcluster.Start(startCtx, localcluster.Options{
		Dir: abs, BinDir: bin, Gateways: *gateways, Tickers: *tickers, LBPort: *lbPort, LBProcs: *lbProcs,
		Detached: true, Stdout: stdout, Env: env,
	})
	if err != nil {
		return fmt.Errorf("up: %w (logs in %s)", err, abs)
	}
	s := stateOf(c)
	s.AuthSecretFile = secretFile
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(statePath(abs), append(b, '\n'), 0o644); err != nil {
		_ = c.Stop()
		return fmt.Errorf("up: write state: %w", err)
	}
	printSummary(stdout, s, *dir)
	return nil
}

func stateOf(c *localcluster.Cluster) *State {
	s := &State{Dir: c.Dir, StartedAt: time.Now().UTC(), RedisURL: c.RedisURL, LBAddr: c.LBAddr,
		DrainTimeout: (c.ShutdownTimeout() + 5*time.Second).String()}
	add := func(p *localcluster.Proc, kind, addr string) {
		if p != nil {
			s.Procs = append(s.Procs, Proc{Name: p.Name, Kind: kind, Pid: p.Pid(), Addr: addr, Exe: exeOf(p.Pid()), Log: p.LogPath()})
		}
	}
	for _, g := range c.Gateways {
		add(g.Proc, "gateway", g.Addr)
	}
	for _, t := range c.Tickers {
		add(t, "ticker", "")
	}
	for _, lb := range c.LBs {
		add(lb, "haproxy", c.LBAddr)
	}
	add(c.Redis, "redis", c.RedisAddr)
	return s
}

func printSummary(w io.Writer, s *State, dir string) {
	fmt.Fprintf(w, "\ncluster running (state in %s):\n", statePath(dir))
	for _, p := range s.Procs {
		fmt.Fprintf(w, "  %-8s pid %-7d %s\n", p.Name, p.Pid, p.Addr)
	}
	_, lbPort, _ := strings.Cut(s.LBAddr, ":")
	redisAddr := strings.TrimSuffix(strings.TrimPrefix(s.RedisURL, "redis://"), "/0")
	_, redisPort, _ := strings.Cut(redisAddr, ":")
	gwAddr := s.LBAddr
	for _, p := range s.Procs {
		if p.Kind == "gateway" {
			gwAddr = p.Addr // the load balancer refuses /users and /metrics: ask a gateway
			break
		}
	}
	if s.AuthSecretFile != "" {
		gw := filepath.Join(dir, "bin", "gateway")
		fmt.Fprintf(w, `
authentication is on (AUTH_JWT_SECRET in %[2]s); make a token and use it:
  TOKEN=$(AUTH_JWT_SECRET=$(cat %[2]s) %[3]s token -user ana)
  wscat -c ws://127.0.0.1:%[1]s/ws -H "Authorization: Bearer $TOKEN"
  %[4]s -url ws://127.0.0.1:%[1]s/ws -token "$TOKEN"
  open http://127.0.0.1:%[1]s/ and paste the token
`, lbPort, filepath.Join(dir, "auth.secret"), gw, filepath.Join(dir, "bin", "client"))
	}
	plain := fmt.Sprintf("  wscat -c ws://127.0.0.1:%[1]s/ws?user=ana              (then type 10)\n  %[2]s -url ws://127.0.0.1:%[1]s/ws -user bob\n",
		lbPort, filepath.Join(dir, "bin", "client"))
	if s.AuthSecretFile != "" {
		plain = "" // without a token these would get 401
	}
	fmt.Fprintf(w, `
try:
%[3]s  curl http://%[6]s/users        (a gateway: the load balancer refuses /users and /metrics)
  redis-cli -p %[2]s HGETALL ws:presence
  redis-cli -p %[2]s SUBSCRIBE ws:presence:events
  tail -f %[4]s
stop it with:
  go run ./deploy/cluster down -dir %[5]s
`, lbPort, redisPort, plain, filepath.Join(dir, "*.log"), dir, gwAddr)
}

func status(args []string, stdout, stderr io.Writer) error {
	s, dir, err := openState("status", "no cluster", args, stdout, stderr)
	if s == nil || err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cluster started %s, state in %s\n", s.StartedAt.Local().Format(time.DateTime), statePath(dir))
	hc := &http.Client{Timeout: time.Second}
	for _, p := range s.Procs {
		state := "stopped"
		if alive(p) {
			state = "running"
			switch p.Kind {
			case "gateway":
				state += ", /readyz " + httpStatus(hc, "http://"+p.Addr+"/readyz")
			case "haproxy":
				state += ", /healthz " + httpStatus(hc, "http://"+p.Addr+"/healthz")
			}
		}
		fmt.Fprintf(stdout, "  %-8s pid %-7d %-16s %s\n", p.Name, p.Pid, p.Addr, state)
	}
	fmt.Fprintf(stdout, "logs: %s\n", filepath.Join(dir, "*.log"))
	return nil
}

// openState parses a subcommand's -dir flag and reads its state.json. A missing state file is
// not an error: it prints "<missing>: … does not exist" and returns a nil state.
func openState(cmd, missing string, args []string, stdout, stderr io.Writer) (*State, string, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".cluster", "directory holding state.json")
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	s, err := readState(*dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "%s: %s does not exist\n", missing, statePath(*dir))
		return nil, *dir, nil
	}
	if err != nil {
		return nil, *dir, err
	}
	return s, *dir, nil
}

func httpStatus(hc *http.Client, url string) string {
	resp, err := hc.Get(url)
	if err != nil {
		return "unreachable"
	}
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

func down(args []string, stdout, stderr io.Writer) error {
	s, dir, err := openState("down", "nothing to stop", args, stdout, stderr)
	if s == nil || err != nil {
		return err
	}
	drain, err := time.ParseDuration(s.DrainTimeout)
	if err != nil || drain <= 0 {
		drain = 15 * time.Second
	}
	var leftovers []string
	for _, kind := range []string{"gateway", "ticker", "haproxy", "redis"} {
		timeout := 5 * time.Second
		if kind == "gateway" {
			timeout = drain
		}
		var group []Proc
		for _, p := range s.Procs {
			if p.Kind != kind {
				continue
			}
			if !alive(p) {
				fmt.Fprintf(stdout, "%-8s pid %d not running\n", p.Name, p.Pid)
				continue
			}
			if err := syscall.Kill(p.Pid, syscall.SIGTERM); err != nil {
				fmt.Fprintf(stdout, "%-8s pid %d: SIGTERM: %v\n", p.Name, p.Pid, err)
				continue
			}
			group = append(group, p)
		}
		// Wait for the whole group at once, then kill what is left.
		deadline := time.Now().Add(timeout)
		for _, p := range group {
			for alive(p) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if alive(p) {
				_ = syscall.Kill(p.Pid, syscall.SIGKILL)
				leftovers = append(leftovers, p.Name)
				fmt.Fprintf(stdout, "%-8s pid %d still running after %v: SIGKILL\n", p.Name, p.Pid, timeout)
				continue
			}
			fmt.Fprintf(stdout, "%-8s pid %d stopped\n", p.Name, p.Pid)
		}
	}
	if err := os.Remove(statePath(dir)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cluster down; logs kept in %s\n", dir)
	return nil
}

// alive reports whether p's PID still runs the program up started: a PID the kernel has since
// given to another program (its /proc/PID/exe differs) counts as gone, and so does a zombie.
func alive(p Proc) bool {
	if p.Pid <= 0 || syscall.Kill(p.Pid, 0) != nil {
		return false
	}
	if stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/stat"); err == nil {
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	if p.Exe != "" {
		if exe := exeOf(p.Pid); exe != "" && exe != p.Exe {
			return false
		}
	}
	return true
}

// exeOf is the executable of pid from /proc, "" where /proc is not available.
func exeOf(pid int) string {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return ""
	}
	return exe
}
