// The cluster's redis-server: started on a free port (or the one Options.RedisURL names),
// restarted empty on the same port, and a shared client for the tests.

package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

func (c *Cluster) startRedis(ctx context.Context) error {
	if c.opts.RedisURL != "" {
		ro, err := redis.ParseURL(c.opts.RedisURL)
		if err != nil {
			return fmt.Errorf("localcluster: redis url: %w", err)
		}
		c.RedisURL, c.RedisAddr = c.opts.RedisURL, ro.Addr
		fmt.Fprintf(c.out, "redis at %s (given)\n", c.RedisAddr)
		return nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("localcluster: redis-server: %w", err)
	}
	var lastErr error
	for range startAttempts {
		addr, port, err := freeAddr()
		if err != nil {
			return err
		}
		p := c.newProc("redis", bin, []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", c.Dir, "--daemonize", "no",
		}, os.Environ())
		if err := p.Start(); err != nil {
			return err
		}
		if lastErr = waitPing(ctx, addr, p); lastErr == nil {
			c.Redis, c.RedisAddr, c.RedisURL = p, addr, "redis://"+addr+"/0"
			fmt.Fprintf(c.out, "redis on %s pid %d\n", addr, p.Pid())
			return nil
		}
		_ = p.Kill()
	}
	return lastErr
}

// waitPing waits until Redis at addr answers PING, failing early when p exits.
func waitPing(ctx context.Context, addr string, p *Proc) error {
	rc := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1})
	defer rc.Close()
	return poll(ctx, redisStartTimeout, p, func() error { return rc.Ping(ctx).Err() })
}

// RedisClient returns a client for the cluster's Redis, shared and closed by Stop. It survives
// RestartRedisEmpty (it reconnects).
func (c *Cluster) RedisClient() *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		c.client = redis.NewClient(&redis.Options{Addr: c.RedisAddr})
	}
	return c.client
}

// RestartRedisEmpty kills the cluster's redis-server with SIGKILL and starts it again, empty, on
// the same port, returning once it answers PING. It fails when the Redis was given in
// Options.RedisURL.
func (c *Cluster) RestartRedisEmpty() error {
	if c.Redis == nil {
		return errors.New("localcluster: restart redis: not started by this cluster (Options.RedisURL)")
	}
	if err := c.Redis.Kill(); err != nil {
		return err
	}
	var lastErr error
	for range 50 { // the old listening socket may linger for a moment
		if err := c.Redis.Start(); err != nil {
			return err
		}
		if lastErr = waitPing(context.Background(), c.RedisAddr, c.Redis); lastErr == nil {
			fmt.Fprintf(c.out, "redis restarted on %s pid %d\n", c.RedisAddr, c.Redis.Pid())
			return nil
		}
		_ = c.Redis.Kill()
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("localcluster: restart redis: %w", lastErr)
}
