package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a process may take to answer PING.
const startTimeout = 10 * time.Second

// pollEvery is how often a starting server is pinged.
const pollEvery = 20 * time.Millisecond

// Prefix returns a key prefix unique to this call, such as "t3f9a2c1b:".
func Prefix(tb testing.TB) string {
	tb.Helper()
	return "t" + randomHex() + ":"
}

// randomHex is 8 random hex digits. (Not config.RandomHex: testkit imports no product package
// that would make pkg/auth's tests an import cycle through config.)
func randomHex() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// HashTagPrefix returns a unique hash-tagged prefix such as "{t3f9a2c1b}:", so every key under it
// lives in one Cluster slot (Lua scripts and MULTI need that).
func HashTagPrefix(tb testing.TB) string {
	tb.Helper()
	return "{t" + randomHex() + "}:"
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is one redis-server process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL to the process this proc started, and waits for it.
func (p *proc) kill() {
	if p == nil || !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// spawn runs redis-server with args, logging to logPath, and returns once it answers PING on
// addr. It fails (not fatally) when the process exits first, e.g. because the port was taken.
func spawn(bin, logPath, addr string, args []string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redistest: open log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("redistest: start %s: %w", bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := waitPing(addr, p.done); err != nil {
		p.kill()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; log:\n%s", err, tail(log, 2000))
	}
	return p, nil
}

func waitPing(addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redistest: redis-server on %s exited during start", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: redis-server on %s not answering after %v: %w", addr, startTimeout, err)
		}
		time.Sleep(pollEvery)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Redis is a standalone redis-server without persistence.
type Redis struct {
	tb    testing.TB
	bin   string
	dir   string
	port  int
	extra []string

	mu     sync.Mutex
	p      *proc
	client *redis.Client
}

// Start starts a standalone redis-server on a free loopback port; it is killed when the test
// ends.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	return startServer(tb, nil)
}

func startServer(tb testing.TB, extra []string) *Redis {
	tb.Helper()
	bin := Need(tb, "redis-server")
	s := &Redis{tb: tb, bin: bin, dir: tb.TempDir(), extra: extra}
	tb.Cleanup(s.cleanup)
	var err error
	for range 5 { // the free port may be taken between finding it and binding it
		s.port = FreePort(tb)
		if err = s.start(); err == nil {
			return s
		}
	}
	tb.Fatalf("redistest: start redis-server: %v", err)
	return nil
}

func (s *Redis) args() []string {
	a := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no",
		"--loglevel", "warning",
		// Fault tests freeze the server with DEBUG SLEEP (from loopback only).
		"--enable-debug-command", "local",
	}
	return append(a, s.extra...)
}

func (s *Redis) start() error {
	p, err := spawn(s.bin, filepath.Join(s.dir, "redis.log"), s.Addr(), s.args())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
	return nil
}

// Addr is host:port.
func (s *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is redis://host:port/0.
func (s *Redis) URL() string { return "redis://" + s.Addr() + "/0" }

// Pid is the process id of the running server, 0 when it is not running.
func (s *Redis) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil || !s.p.alive() {
		return 0
	}
	return s.p.cmd.Process.Pid
}

// Client returns a client for the server, closed when the test ends. It survives Restart.
func (s *Redis) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{Addr: s.Addr()})
	}
	return s.client
}

// Kill sends SIGKILL to the server and waits for it to exit.
func (s *Redis) Kill() {
	s.mu.Lock()
	p := s.p
	s.p = nil
	s.mu.Unlock()
	p.kill()
}

// Restart kills the server (if running) and starts a new, empty one on the same port.
func (s *Redis) Restart() {
	s.tb.Helper()
	s.Kill()
	var err error
	for range 50 { // the old socket may linger for a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.tb.Fatalf("redistest: restart redis-server on %s: %v", s.Addr(), err)
}

func (s *Redis) cleanup() {
	s.Kill()
	s.mu.Lock()
	c := s.client
	s.client = nil
	s.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// errNotYet marks a condition still being waited for.
var errNotYet = errors.New("not yet")

// waitFor polls f every pollEvery until it returns nil or timeout passes.
func waitFor(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollEvery)
	}
}
