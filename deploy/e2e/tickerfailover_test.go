package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
)

// TestTickerFailover, with the default LEASE_TTL: the lease holder killed with SIGKILL is replaced within LEASE_TTL + 1 s;
// the holder stopped with SIGTERM releases the lease and is replaced at the standby's next tick.
// At the clients (two dialed to gateways, three redialing through HAProxy) seq never repeats
// and never goes back, no client reconnects, and every gateway forwards the same ticks.
func TestTickerFailover(t *testing.T) {
	leaseTTL := defaultLeaseTTL // the figure README.md's failure table quotes
	c := startCluster(t, localcluster.Options{Gateways: 3, Tickers: 2, Env: []string{"LEASE_TTL=" + leaseTTL.String()}})
	rc := c.RedisClient()
	a, b := dial(t, c.Gateways[0].Addr, "tf-a"), dial(t, c.Gateways[1].Addr, "tf-b")
	clients := append([]*client{a, b}, startClients(t, c.LBAddr, "tk", 3, true, 20*time.Second)...)
	for _, cl := range clients {
		cl.waitTicks(10*time.Second, 3)
	}

	holder := func() *localcluster.Proc {
		t.Helper()
		id, err := rc.Get(bg, keys.TickerLeader()).Result()
		if err != nil {
			t.Fatalf("GET ws:ticker:leader: %v", err)
		}
		for _, p := range c.Tickers {
			if p.Name == id { // localcluster sets TICKER_ID to the process name
				return p
			}
		}
		t.Fatalf("ws:ticker:leader is %q, not one of the tickers", id)
		return nil
	}
	// failover stops the holder with stop and returns the new holder, how long after the stop
	// the first tick the old holder cannot have published reached both clients, and the seq jump.
	failover := func(how string, stop func(p *localcluster.Proc) error) (*localcluster.Proc, time.Duration, int64) {
		t.Helper()
		old := holder()
		stopped := time.Now()
		if err := stop(old); err != nil {
			t.Fatalf("%s %s: %v", how, old.Name, err)
		}
		// The old holder published nothing after its exit: no seq past the current one.
		exitSeq := seqNow()
		lastBefore := min(a.lastSeq(), b.lastSeq())
		var gap time.Duration
		var next int64
		for _, cl := range clients {
			f := cl.waitTick(10*time.Second, exitSeq)
			gap = max(gap, f.At.Sub(stopped))
			next = f.Seq
		}
		newHolder := holder()
		if newHolder == old {
			t.Fatalf("after %s the lease is still held by %s", how, old.Name)
		}
		t.Logf("%s of holder %s: %s took over, ticks at both clients %v after the signal, seq %d → %d",
			how, old.Name, newHolder.Name, gap.Round(time.Millisecond), lastBefore, next)
		return old, gap, next - lastBefore
	}

	// SIGKILL: the lease expires at most LEASE_TTL after the last renewal (the last tick); the
	// standby takes it at its next tick. Ticks are on whole seconds, so the seq jump measures
	// that exactly; the time, taken at the clients, gets slack for a loaded machine.
	killed, gap, jump := failover("SIGKILL", (*localcluster.Proc).Kill)
	if maxJump := int64((leaseTTL + time.Second) / tickInterval); jump > maxJump {
		t.Errorf("after SIGKILL seq jumped by %d, want ≤ %d (LEASE_TTL + 1 s)", jump, maxJump)
	}
	if bound := leaseTTL + time.Second + 500*time.Millisecond; gap > bound {
		t.Errorf("after SIGKILL ticks resumed after %v, want ≤ LEASE_TTL + 1 s (%v, with 500 ms slack)", gap, leaseTTL+time.Second)
	}
	var largest int64 // the largest jump between consecutive seqs a client saw
	for _, cl := range clients {
		ts := cl.ticks()
		for i := 1; i < len(ts); i++ {
			largest = max(largest, ts[i].Seq-ts[i-1].Seq)
		}
	}
	measure(t, "ticker_kill9", "leader %s killed; %s publishing, ticks resumed %v later, largest seq jump %d (LEASE_TTL %v)",
		killed.Name, holder().Name, gap.Round(time.Millisecond), largest, leaseTTL)

	// The killed one comes back as a standby and does not take the lease.
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	seq := a.lastSeq()
	a.waitTick(5*time.Second, seq+2)
	if h := holder(); h == killed {
		t.Fatalf("restarted %s took the lease from the holder", killed.Name)
	}

	// SIGTERM: the holder releases the lease before it exits, so the standby publishes the very
	// next tick, or the one after when the release lands just after the standby's try.
	_, gap, jump = failover("SIGTERM", func(p *localcluster.Proc) error { return p.Term(5 * time.Second) })
	if bound := 2*tickInterval + 500*time.Millisecond; gap > bound {
		t.Errorf("after SIGTERM ticks resumed after %v, want ≤ 2 ticks (%v, with 500 ms slack)", gap, 2*tickInterval)
	}
	if jump > 2 {
		t.Errorf("after SIGTERM seq jumped by %d, want ≤ 2 (at most one tick missed)", jump)
	}

	a.waitTick(5*time.Second, a.lastSeq()+1)
	for _, cl := range clients {
		checkTicks(t, cl, func(prev, next frame) bool { return true }) // gaps allowed, repeats and going back not
		if err := cl.lastErr(); err != nil || len(cl.history()) != 1 {
			t.Errorf("client %s: socket closed (%d connections): %v", cl.user, len(cl.history()), err)
		}
		if n := cl.duplicates(); n != 0 {
			t.Errorf("%s received %d duplicate ticks", cl.user, n)
		}
	}
	// Every gateway forwarded the same ticks: identical seqs over the common range.
	common := func(cl *client, from, to int64) []int64 {
		var out []int64
		for _, f := range cl.ticks() {
			if f.Seq >= from && f.Seq <= to {
				out = append(out, f.Seq)
			}
		}
		return out
	}
	from, to := int64(0), a.lastSeq()
	for _, cl := range clients {
		from, to = max(from, cl.ticks()[0].Seq), min(to, cl.lastSeq())
	}
	for _, cl := range clients[1:] {
		if sa, sb := common(a, from, to), common(cl, from, to); fmt.Sprint(sa) != fmt.Sprint(sb) {
			t.Errorf("%s and %s got different ticks:\n%v\n%v", a.user, cl.user, sa, sb)
		}
	}
}
