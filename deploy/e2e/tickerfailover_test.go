package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
)

// TestTickerFailover: the lease holder killed with SIGKILL is replaced within LEASE_TTL + 1 s;
// the holder stopped with SIGTERM releases the lease and is replaced at the standby's next tick.
// At the clients seq never repeats and never goes back, and both gateways forward the same ticks.
func TestTickerFailover(t *testing.T) {
	c := startCluster(t, 2, 2)
	rc := c.RedisClient()
	a, b := dial(t, c.Gateways[0].Addr, "tf-a"), dial(t, c.Gateways[1].Addr, "tf-b")
	a.waitTicks(10*time.Second, 3)
	b.waitTicks(10*time.Second, 3)

	holder := func() *localcluster.Proc {
		t.Helper()
		id, err := rc.Get(bg, key("ticker:leader")).Result()
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
		for _, cl := range []*wsClient{a, b} {
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
	for _, cl := range []*wsClient{a, b} {
		checkTicks(t, cl, func(prev, next frame) bool { return true }) // gaps allowed, repeats and going back not
		if err := cl.err(); err != nil {
			t.Errorf("client %s: socket closed: %v", cl.welcome.ConnID, err)
		}
	}
	// Both gateways forwarded the same ticks: identical seqs over the common range.
	common := func(cl *wsClient, from, to int64) []int64 {
		var out []int64
		for _, f := range cl.ticks() {
			if f.Seq >= from && f.Seq <= to {
				out = append(out, f.Seq)
			}
		}
		return out
	}
	from := max(a.ticks()[0].Seq, b.ticks()[0].Seq)
	to := min(a.lastSeq(), b.lastSeq())
	if sa, sb := common(a, from, to), common(b, from, to); fmt.Sprint(sa) != fmt.Sprint(sb) {
		t.Errorf("the two gateways forwarded different ticks:\n%v\n%v", sa, sb)
	}
}
