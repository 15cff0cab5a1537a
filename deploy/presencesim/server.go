package main

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
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/deploy/localcluster"
)

// server is one redis-server process this program started: it is the only process the
// simulator ever signals, by its PID.
type server struct {
	bin, dir string
	port     int
	extra    []string
	cmd      *exec.Cmd
	done     chan struct{} // closed once cmd has been reaped
}

// startTimeout bounds how long a redis-server may take to answer PING, and a cluster to
// report cluster_state:ok.
const startTimeout = 15 * time.Second

// startServer starts redis-server without persistence on a free loopback port, in its own
// directory under dir, retrying when the port was taken in between.
func startServer(ctx context.Context, dir string, extra []string) (*server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	var lastErr error
	for range 5 {
		port, err := localcluster.FreePort()
		if err != nil {
			return nil, err
		}
		s := &server{bin: bin, dir: filepath.Join(dir, "redis-"+strconv.Itoa(port)), port: port, extra: extra}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		if lastErr = s.start(ctx); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *server) pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *server) start(ctx context.Context) error {
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no",
		"--loglevel", "warning",
	}, s.extra...)
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	if err := s.waitPing(ctx); err != nil {
		s.kill()
		return err
	}
	return nil
}

func (s *server) waitPing(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: s.addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("redis-server on %s exited during start (log in %s)", s.addr(), s.dir)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not answering after %v: %w", s.addr(), startTimeout, err)
		}
	}
}

// kill sends SIGKILL to the process this server started and waits for it.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	}
}

// restart kills the server and starts a new, empty one on the same port.
func (s *server) restart(ctx context.Context) error {
	s.kill()
	var err error
	for range 50 { // the old listening socket may linger a moment
		if err = s.start(ctx); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("restart redis-server on %s: %w", s.addr(), err)
}

// startCluster starts n cluster-enabled servers without replicas and joins them with
// `redis-cli --cluster create`, returning once every node reports cluster_state:ok. On error
// it kills what it started.
func startCluster(ctx context.Context, dir string, n int) (servers []*server, err error) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	defer func() {
		if err != nil {
			for _, s := range servers {
				s.kill()
			}
			servers = nil
		}
	}()
	for range n {
		bus, err := localcluster.FreePort() // explicit: port+10000 may be taken or out of range
		if err != nil {
			return servers, err
		}
		s, err := startServer(ctx, dir, []string{"--cluster-enabled", "yes", "--cluster-config-file",
			"nodes.conf", "--cluster-node-timeout", "5000", "--cluster-port", strconv.Itoa(bus)})
		if err != nil {
			return servers, err
		}
		servers = append(servers, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range servers {
		args = append(args, s.addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return servers, fmt.Errorf("start cluster: redis-cli --cluster create: %w\n%s", err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, s := range servers {
		c := redis.NewClient(&redis.Options{Addr: s.addr()})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				return servers, errors.New("start cluster: node " + s.addr() + " not ok after " + startTimeout.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return servers, nil
}
