// Package redisserver runs redis-server processes on loopback for the tests (internal/testkit)
// and the tools (deploy/presencesim): Start gives a server without persistence on a free port,
// which can be killed and restarted empty on the same port; Spawn runs any redis-server or
// sentinel command line and waits for PING; CreateCluster joins servers into a Redis Cluster.
// Only the processes it started are ever signalled, by their PID.
package redisserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartTimeout bounds how long a process may take to answer PING, and a cluster to report
// cluster_state:ok.
const StartTimeout = 15 * time.Second

// pollEvery is how often a starting server is asked.
const pollEvery = 20 * time.Millisecond

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redisserver: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Proc is one started process, reaped by a goroutine of its own.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Alive reports whether the process has not exited yet.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the process and waits for it to exit. A nil Proc is a no-op.
func (p *Proc) Kill() {
	if p == nil || !p.Alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Spawn runs bin with args, appending its output to logPath, and returns once it answers PING
// on addr. It fails (with the log's tail) when the process exits first, e.g. because the port
// was taken, or does not answer within StartTimeout; it then leaves nothing running.
func Spawn(ctx context.Context, bin, logPath, addr string, args []string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redisserver: open log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("redisserver: start %s: %w", bin, err)
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := waitPing(ctx, addr, p.done); err != nil {
		p.Kill()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; log:\n%s", err, tail(log, 2000))
	}
	return p, nil
}

func waitPing(ctx context.Context, addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	deadline := time.Now().Add(StartTimeout)
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redisserver: redis-server on %s exited during start", addr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisserver: redis-server on %s not answering after %v: %w", addr, StartTimeout, err)
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Server is a standalone redis-server without persistence on a loopback port. Its methods are
// safe for concurrent use.
type Server struct {
	bin, dir string
	port     int
	extra    []string

	mu sync.Mutex
	p  *Proc
}

// Start starts redis-server without persistence on a free loopback port, with dir as its
// working directory (its log is dir/redis.log) and extra appended to its arguments. It retries
// when the port was taken between finding it and binding it.
func Start(ctx context.Context, dir string, extra []string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redisserver: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redisserver: %w", err)
	}
	var lastErr error
	for range 5 {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s := &Server{bin: bin, dir: dir, port: port, extra: extra}
		if lastErr = s.start(ctx); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func (s *Server) start(ctx context.Context) error {
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no",
		"--loglevel", "warning",
	}, s.extra...)
	p, err := Spawn(ctx, s.bin, filepath.Join(s.dir, "redis.log"), s.Addr(), args)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
	return nil
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the port it listens on, the same across Restart.
func (s *Server) Port() int { return s.port }

// Dir is its working directory, which holds its log.
func (s *Server) Dir() string { return s.dir }

// Pid is the process id of the running server, 0 when it is not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil || !s.p.Alive() {
		return 0
	}
	return s.p.Pid()
}

// Kill sends SIGKILL to the server and waits for it to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.p
	s.p = nil
	s.mu.Unlock()
	p.Kill()
}

// Restart kills the server (if running) and starts a new, empty one on the same port.
func (s *Server) Restart(ctx context.Context) error {
	s.Kill()
	var err error
	for range 50 { // the old listening socket may linger a moment
		if err = s.start(ctx); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("redisserver: restart redis-server on %s: %w", s.Addr(), err)
}

// ClusterArgs are the extra arguments of a Redis Cluster node for Start. The bus port is set
// explicitly: the default (port+10000) may be taken or out of range.
func ClusterArgs(busPort int, nodeTimeout time.Duration) []string {
	return []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
		"--cluster-port", strconv.Itoa(busPort)}
}

// CreateCluster joins servers started with ClusterArgs into one Redis Cluster of masters
// without replicas (`redis-cli --cluster create`) and returns once every node reports
// cluster_state:ok, or fails after StartTimeout.
func CreateCluster(ctx context.Context, servers []*Server) error {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return fmt.Errorf("redisserver: create cluster: %w", err)
	}
	args := []string{"--cluster", "create"}
	for _, s := range servers {
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redisserver: redis-cli --cluster create: %w\n%s", err, out)
	}
	deadline := time.Now().Add(StartTimeout)
	for _, s := range servers {
		c := redis.NewClient(&redis.Options{Addr: s.Addr()})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				return errors.New("redisserver: create cluster: node " + s.Addr() + " not ok after " + StartTimeout.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return nil
}
