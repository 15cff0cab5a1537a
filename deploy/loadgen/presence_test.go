package loadgen

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/gateway"
)

// TestWaitPresence fills a presence hash in a real redis-server while WaitPresence polls it.
func TestWaitPresence(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := testkit.Prefix(t)
	key := presenceKey(prefix)
	if err := rdb.HSet(ctx, key, "old", "{}").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go func() {
		for i := range 50 {
			rdb.HSet(ctx, key, fmt.Sprint("c", i), "{}")
			time.Sleep(2 * time.Millisecond)
		}
	}()
	w, err := WaitPresence(ctx, rdb, key, 51, start, 10*time.Millisecond)
	if err != nil || w.TimedOut || w.Last != 51 {
		t.Fatalf("wait = %+v, %v", w, err)
	}
	if w.Elapsed < 80*time.Millisecond || w.Elapsed > 2*time.Second {
		t.Errorf("elapsed %v for 50 writes 2 ms apart", w.Elapsed)
	}

	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	w, err = WaitPresence(short, rdb, key, 1000, time.Now(), 10*time.Millisecond)
	if err != nil || !w.TimedOut || w.Last != 51 {
		t.Errorf("unreachable target: %+v, %v", w, err)
	}

	// Storm with presence against a Redis that never fills: the run reports the timeout.
	url := startGateway(t, gateway.Options{})
	res, err := Run(ctx, Config{URL: url, Mode: ModeStorm, N: 10, RedisURL: srv.URL(), Prefix: prefix, Hold: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 10 || !res.PresenceTimedOut || res.PresenceBase != 51 {
		t.Errorf("storm against a standalone gateway: %+v", res)
	}
}
