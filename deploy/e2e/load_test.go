package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestThousandClients: 1000 WebSockets open through HAProxy within a few seconds, 100 dialing at
// a time, and every one appears in ws:presence; after they close, presence is back to where it
// was.
func TestThousandClients(t *testing.T) {
	const n, inFlight = 1000, 100
	c := startCluster(t, localcluster.Options{})
	rc := c.RedisClient()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	baseline, err := rc.HLen(ctx, keys.Presence()).Result()
	if err != nil {
		t.Fatal(err)
	}

	readCtx, stopReading := context.WithCancel(ctx)
	var (
		mu         sync.Mutex
		conns      []*websocket.Conn
		perGateway = map[string]int{}
		errs       []error
		readers    sync.WaitGroup
	)
	t.Cleanup(func() {
		stopReading()
		for _, ws := range conns {
			ws.CloseNow()
		}
		readers.Wait()
	})
	sem := make(chan struct{}, inFlight)
	var dialers sync.WaitGroup
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		dialers.Go(func() {
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(dctx, fmt.Sprintf("ws://%s/ws?user=load%d", c.LBAddr, i), nil)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			mu.Lock()
			conns = append(conns, ws)
			mu.Unlock()
			_, data, err := ws.Read(readCtx)
			var f protocol.Frame
			if err == nil {
				f, err = protocol.Decode(data)
			}
			if err == nil && f.Type != protocol.TypeWelcome {
				err = fmt.Errorf("first frame %q, want welcome", f.Type)
			}
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
			} else {
				perGateway[f.Gateway]++
			}
			mu.Unlock()
			// Keep reading (ticks) so the gateway's pings are answered.
			readers.Go(func() {
				for {
					if _, _, err := ws.Read(readCtx); err != nil {
						return
					}
				}
			})
		})
	}
	dialers.Wait()
	connected := time.Since(start)
	if len(errs) > 0 {
		t.Fatalf("%d of %d clients failed; first: %v", len(errs), n, errs[0])
	}
	t.Logf("clients per gateway: %v", perGateway)
	measure(t, "load_connect", "%d clients welcomed through HAProxy in %v (%d dialing at once)", n, connected.Round(time.Millisecond), inFlight)
	if connected > 30*time.Second {
		t.Errorf("connecting %d clients took %v", n, connected)
	}

	waitFor(t, 15*time.Second, "every client in ws:presence", func() error {
		if got, err := rc.HLen(ctx, keys.Presence()).Result(); err != nil || got != baseline+n {
			return fmt.Errorf("HLEN ws:presence = %d (%v), want %d", got, err, baseline+n)
		}
		return nil
	})
	measure(t, "load_presence", "HLEN ws:presence reached %d %v after the first dial", baseline+n, time.Since(start).Round(time.Millisecond))

	closing := time.Now()
	stopReading()
	mu.Lock()
	for _, ws := range conns {
		ws.CloseNow()
	}
	mu.Unlock()
	waitFor(t, 15*time.Second, "ws:presence back to its baseline", func() error {
		if got, err := rc.HLen(ctx, keys.Presence()).Result(); err != nil || got != baseline {
			return fmt.Errorf("HLEN ws:presence = %d (%v) after closing, want %d", got, err, baseline)
		}
		return nil
	})
	measure(t, "load_close", "%d abrupt client closes removed from presence in %v", n, time.Since(closing).Round(time.Millisecond))
}
