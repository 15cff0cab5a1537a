package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/redisserver"
)

// pollEvery is how often waitFor asks.
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
	port, err := redisserver.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

// Redis is a standalone redis-server without persistence (a redisserver.Server) that lives as
// long as the test.
type Redis struct {
	*redisserver.Server
	tb testing.TB

	mu     sync.Mutex
	client *redis.Client
}

// StartRedis starts a standalone redis-server on a free loopback port; it is killed when the
// test ends.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	return startServer(tb, nil)
}

func startServer(tb testing.TB, extra []string) *Redis {
	tb.Helper()
	Need(tb, "redis-server")
	// Fault tests freeze the server with DEBUG SLEEP (from loopback only).
	extra = append([]string{"--enable-debug-command", "local"}, extra...)
	srv, err := redisserver.Start(context.Background(), tb.TempDir(), extra)
	if err != nil {
		tb.Fatalf("testkit: start redis-server: %v", err)
	}
	s := &Redis{Server: srv, tb: tb}
	tb.Cleanup(s.cleanup)
	return s
}

// URL is redis://host:port/0.
func (s *Redis) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a client for the server, closed when the test ends. It survives Restart.
func (s *Redis) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{Addr: s.Addr()})
	}
	return s.client
}

// Restart kills the server (if running) and starts a new, empty one on the same port.
func (s *Redis) Restart() {
	s.tb.Helper()
	if err := s.Server.Restart(context.Background()); err != nil {
		s.tb.Fatalf("testkit: %v", err)
	}
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
