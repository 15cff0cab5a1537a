package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestSentinelFailover: a gateway and a ticker behind Sentinel. Ticks reach the client before
// and after a failover, and presence writes made after it (a join, a leave, the heartbeat)
// land on the new master.
func TestSentinelFailover(t *testing.T) {
	binDir(t)
	st := testkit.StartSentinel(t)
	env := []string{"REDIS_SENTINEL_MASTER=" + st.MasterName, "REDIS_ADDRS=" + strings.Join(st.SentinelAddrs, ",")}
	startTicker(t, "tk-s1", env...)
	_, addr := startGateway(t, "gw-s1", env...)
	a := dial(t, addr, "sent-a")
	a.waitTicks(15*time.Second, 2)
	waitFor(t, 5*time.Second, "presence on the first master", func() error {
		return st.Master.Client().HGet(bg, keys.Presence(), a.welcome.ConnID).Err()
	})

	oldMaster := st.Master.Addr()
	before := a.lastSeq()
	start := time.Now()
	st.Failover()
	took := time.Since(start)
	if st.Master.Addr() == oldMaster {
		t.Fatal("master unchanged after Failover")
	}
	newMaster := st.Master.Client()
	f := a.waitTick(15*time.Second, max(a.lastSeq(), seqNow()))
	t.Logf("failover %s → %s took %v; first tick after it %v after it returned (seq %d → %d)",
		oldMaster, st.Master.Addr(), took.Round(time.Millisecond), f.At.Sub(start.Add(took)).Round(time.Millisecond), before, f.Seq)
	gap := largestGap(a.ticks())
	t.Logf("largest gap between two ticks at the client: %v", gap.Round(time.Millisecond))

	// Writes after the failover reach the new master: a join, the heartbeat, a leave.
	b := dial(t, addr, "sent-b")
	landed := waitFor(t, 10*time.Second, "new connection's field on the new master", func() error {
		v, err := newMaster.HGet(bg, keys.Presence(), b.welcome.ConnID).Result()
		if err != nil {
			return err
		}
		var p protocol.Presence
		return jsonStrict(v, &p)
	})
	if err := newMaster.HGet(bg, keys.Presence(), a.welcome.ConnID).Err(); err != nil {
		t.Errorf("first connection's field on the new master: %v", err)
	}
	hb := keys.Heartbeat("gw-s1")
	ttl1, _ := newMaster.PTTL(bg, hb).Result()
	time.Sleep(presenceTTL/3 + 500*time.Millisecond)
	ttl2, err := newMaster.PTTL(bg, hb).Result()
	if err != nil || ttl2 <= 0 {
		t.Errorf("heartbeat on the new master: PTTL %v (%v)", ttl2, err)
	}
	t.Logf("heartbeat TTL on the new master %v, then %v (refreshed)", ttl1, ttl2)
	b.close()
	waitFor(t, 10*time.Second, "closed connection's field deleted on the new master", func() error {
		if n, err := newMaster.HExists(bg, keys.Presence(), b.welcome.ConnID).Result(); err != nil || n {
			return fmt.Errorf("HEXISTS %v (%v)", n, err)
		}
		return nil
	})
	t.Logf("a join after the failover reached the new master in %v", landed.Round(time.Millisecond))
	a.waitTick(5*time.Second, a.lastSeq()+1)
	checkTicks(t, a, func(prev, next frame) bool { return true })
	if err := a.lastErr(); err != nil {
		t.Errorf("client lost its socket in the failover: %v", err)
	}
}

// TestRedisCluster: gateways and a ticker on a three-master Redis Cluster (prefix "{ws}:").
// Ticks reach the clients, presence lives under {ws}:presence, and a gateway killed with SIGKILL
// is swept with gateway_lost leaves.
func TestRedisCluster(t *testing.T) {
	binDir(t)
	cl := testkit.StartCluster(t)
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { rc.Close() })
	env := []string{"REDIS_ADDRS=" + strings.Join(cl.Addrs(), ",")}
	startTicker(t, "tk-c1", env...)
	_, addr1 := startGateway(t, "gw-c1", env...)
	g2, addr2 := startGateway(t, "gw-c2", env...)
	a, b := dial(t, addr1, "clu-a"), dial(t, addr2, "clu-b")
	a.waitTicks(15*time.Second, 3)
	b.waitTicks(15*time.Second, 3)
	from := max(a.ticks()[0].Seq, b.ticks()[0].Seq)
	for seq := from; seq <= min(a.lastSeq(), b.lastSeq()); seq++ {
		_, inA := a.tick(seq)
		_, inB := b.tick(seq)
		if !inA || !inB {
			t.Errorf("seq %d did not reach both gateways' clients", seq)
		}
	}

	waitFor(t, 5*time.Second, "both connections in {ws}:presence", func() error {
		return hasAll(presence(t, rc, clusterKeys.Presence()), connIDs(a, b))
	})
	for _, id := range []string{"gw-c1", "gw-c2"} {
		hb, ttl, err := heartbeat(t, rc, clusterKeys.Heartbeat(id))
		if err != nil || ttl <= 0 || ttl > presenceTTL {
			t.Errorf("heartbeat of %s: %+v TTL %v (%v)", id, hb, ttl, err)
		}
	}
	for _, k := range []string{"ws:presence", "ws:gateways", "ws:ticker:leader"} {
		if n, err := rc.Exists(bg, k).Result(); err != nil || n != 0 {
			t.Errorf("%s exists in Cluster mode (EXISTS %d, %v); keys belong under {ws}:", k, n, err)
		}
	}
	if v, err := rc.Get(bg, clusterKeys.TickerLeader()).Result(); err != nil || v != "tk-c1" {
		t.Errorf("{ws}:ticker:leader = %q (%v), want tk-c1", v, err)
	}

	events := subscribeEvents(t, rc, clusterKeys.Events())
	killed := time.Now()
	_ = g2.Kill()
	bound := 2*presenceTTL + time.Second
	swept := waitFor(t, bound, "killed gateway swept", func() error {
		return hasNone(presence(t, rc, clusterKeys.Presence()), connIDs(b))
	})
	waitFor(t, 2*time.Second, "its gateway_lost leave", func() error {
		if len(events.about(connIDs(b))) == 0 {
			return errors.New("no leave yet")
		}
		return nil
	})
	waitFor(t, bound-time.Since(killed), "gw-c2 out of {ws}:gateways", func() error {
		if ok, err := rc.SIsMember(bg, clusterKeys.Gateways(), "gw-c2").Result(); err != nil || ok {
			return fmt.Errorf("still a member (%v)", err)
		}
		return nil
	})
	time.Sleep(presenceTTL/3 + 500*time.Millisecond) // one more sweep round: still one leave
	events.checkLeaves(t, protocol.ReasonGatewayLost, 0, refs(b)...)
	if evs := events.about(connIDs(b)); len(evs) != 1 {
		t.Errorf("events about the swept connection: %+v, want its one leave", evs)
	}
	if evs := events.about(connIDs(a)); len(evs) != 0 {
		t.Errorf("events about the live connection: %+v", evs)
	}
	if err := hasAll(presence(t, rc, clusterKeys.Presence()), connIDs(a)); err != nil {
		t.Errorf("live connection: %v", err)
	}
	a.waitTick(5*time.Second, a.lastSeq()+1)
	checkTicks(t, a, nil)
	t.Logf("Cluster: ticks on both gateways from seq %d; SIGKILL of gw-c2 swept after %v (bound %v)",
		from, swept.Round(time.Millisecond), bound)
}

// largestGap is the longest time between two consecutive ticks.
func largestGap(ts []frame) time.Duration {
	var g time.Duration
	for i := 1; i < len(ts); i++ {
		g = max(g, ts[i].At.Sub(ts[i-1].At))
	}
	return g
}
