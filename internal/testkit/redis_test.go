package testkit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

func TestStartKillRestart(t *testing.T) {
	t.Parallel()
	s := testkit.StartRedis(t)
	ctx := context.Background()
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") || s.Pid() == 0 {
		t.Fatalf("URL %q pid %d", s.URL(), s.Pid())
	}
	s.Kill()
	if s.Pid() != 0 {
		t.Fatal("pid after kill")
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping after kill succeeded")
	}
	s.Restart()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	if n, _ := c.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("restarted server is not empty")
	}
}

func TestPrefixUnique(t *testing.T) {
	t.Parallel()
	a, b := testkit.Prefix(t), testkit.Prefix(t)
	if a == b || !strings.HasSuffix(a, ":") {
		t.Fatalf("prefixes %q %q", a, b)
	}
	if h := testkit.HashTagPrefix(t); !strings.HasPrefix(h, "{t") || !strings.HasSuffix(h, "}:") {
		t.Fatalf("hash-tag prefix %q", h)
	}
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	st := testkit.StartSentinel(t)
	c := st.Client()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := st.Master.Addr()
	start := time.Now()
	st.Failover()
	t.Logf("failover took %v", time.Since(start))
	if st.Master.Addr() == old {
		t.Fatal("master unchanged")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Set(ctx, "k", "2", 0).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write after failover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v, _ := st.Master.Client().Get(ctx, "k").Result(); v != "2" {
		t.Fatalf("new master has k=%q", v)
	}
	if err := st.Replica.Client().Set(ctx, "k", "3", 0).Err(); err == nil {
		t.Fatal("former master still takes writes")
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	cl := testkit.StartCluster(t)
	c := cl.Client()
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if len(cl.Addrs()) != 3 {
		t.Fatal(cl.Addrs())
	}
}
