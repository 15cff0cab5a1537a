package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestTicksIdenticalAcrossGateways: 30 clients through HAProxy are spread over the gateways
// (leastconn) and all receive the same ticks, the same time for the same seq, in order and once.
func TestTicksIdenticalAcrossGateways(t *testing.T) {
	c := startCluster(t)
	const n, ticks = 30, 3
	cs := startClients(t, c.LBAddr, "tick", n, false, 20*time.Second)

	perGateway := map[string]int{}
	for _, cl := range cs {
		perGateway[cl.current().Gateway]++
	}
	t.Logf("clients per gateway: %v", perGateway)
	if len(perGateway) < 2 {
		t.Errorf("30 clients landed on %d gateway(s) %v, want at least 2", len(perGateway), perGateway)
	}
	for id := range perGateway {
		if c.GatewayByID(id) == nil {
			t.Errorf("welcome names gateway %q, not one of the cluster's", id)
		}
	}

	// The first seq every client can have seen: the newest first tick over all clients.
	var first int64
	err := waitFor(10*time.Second, 50*time.Millisecond, func() error {
		first = 0
		for _, cl := range cs {
			cl.mu.Lock()
			m := int64(0)
			for s := range cl.ticks {
				if m == 0 || s < m {
					m = s
				}
			}
			cl.mu.Unlock()
			if m == 0 {
				return fmt.Errorf("%s has no tick yet", cl.user)
			}
			first = max(first, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = waitFor(15*time.Second, 50*time.Millisecond, func() error {
		for _, cl := range cs {
			cl.mu.Lock()
			_, ok := cl.ticks[first+ticks-1]
			cl.mu.Unlock()
			if !ok {
				return fmt.Errorf("%s has not seen seq %d", cl.user, first+ticks-1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for seq := first; seq < first+ticks; seq++ {
		want := protocol.TickTime(seq, time.Second).Format(protocol.TimeLayout)
		for _, cl := range cs {
			cl.mu.Lock()
			got, ok := cl.ticks[seq]
			cl.mu.Unlock()
			if !ok {
				t.Errorf("%s (on %s) missed seq %d", cl.user, cl.current().Gateway, seq)
			} else if got != want {
				t.Errorf("%s: seq %d time %q, want %q", cl.user, seq, got, want)
			}
		}
	}
	for _, cl := range cs {
		cl.mu.Lock()
		if cl.dupes != 0 {
			t.Errorf("%s received %d duplicate ticks", cl.user, cl.dupes)
		}
		cl.mu.Unlock()
	}
	measure(t, "ticks", "%d clients on %d gateways saw seqs %d..%d identically", n, len(perGateway), first, first+ticks-1)
}
