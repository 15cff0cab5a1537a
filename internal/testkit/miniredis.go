package testkit

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// StartMiniredis starts an in-memory miniredis, for fast unit tests that move Redis's clock
// (FastForward) or read TTLs, and a client for it; both are closed when the test ends.
func StartMiniredis(tb testing.TB) (*miniredis.Miniredis, *redis.Client) {
	tb.Helper()
	mr := miniredis.RunT(tb)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { c.Close() })
	return mr, c
}
