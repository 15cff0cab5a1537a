package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestSteadyState: three gateways and two tickers, two clients dialed to each gateway and 30
// more through HAProxy, which spreads them over the gateways (leastconn). Every client on every
// gateway gets the same ticks (same seq, same time) with no gap and no duplicate; Fibonacci
// answers go to the asker only; the presence hash, the heartbeats and the gateways set are as
// PROTOCOL.md says.
func TestSteadyState(t *testing.T) {
	c := startCluster(t, localcluster.Options{Gateways: 3, Tickers: 2})
	rc := c.RedisClient()
	start := time.Now()

	var clients []*client
	for gi, g := range c.Gateways {
		for k := range 2 {
			cl := dial(t, g.Addr, fmt.Sprintf("u%d-%d", gi+1, k))
			if cl.welcome.Gateway != g.ID {
				t.Fatalf("welcome from %s names gateway %q", g.ID, cl.welcome.Gateway)
			}
			clients = append(clients, cl)
		}
	}
	const viaLB = 30
	lbClients := startClients(t, c.LBAddr, "tick", viaLB, false, 20*time.Second)
	perGateway := map[string]int{}
	for _, cl := range lbClients {
		perGateway[cl.welcome.Gateway]++
	}
	t.Logf("clients of HAProxy per gateway: %v", perGateway)
	if len(perGateway) < 2 {
		t.Errorf("%d clients landed on %d gateway(s) %v, want at least 2", viaLB, len(perGateway), perGateway)
	}
	for id := range perGateway {
		if c.GatewayByID(id) == nil {
			t.Errorf("welcome names gateway %q, not one of the cluster's", id)
		}
	}
	asking := clients // the direct clients ask for Fibonacci numbers
	clients = append(slices.Clone(clients), lbClients...)

	// Fibonacci: each client asks with ids of its own, all at once.
	const asks = 3
	askN := map[string]int{} // request id → n; ids are unique across clients
	for i, cl := range asking {
		for k := range asks {
			id, n := fmt.Sprintf("%s-r%d", cl.welcome.User, k), 30+7*i+k
			askN[id] = n
			cl.send(fibRequest{Type: protocol.TypeFib, N: n, ID: id})
		}
	}

	// Ticks: wait for 7 at every client, so at least 5 are common to all.
	for _, cl := range clients {
		cl.waitTicks(20*time.Second, 7)
	}
	first := int64(0)
	for _, cl := range clients {
		first = max(first, cl.ticks()[0].Seq)
	}
	common := 0
	for seq := first; ; seq++ {
		tm := ""
		all := true
		for _, cl := range clients {
			ts := cl.ticks()
			i := slices.IndexFunc(ts, func(f frame) bool { return f.Seq == seq })
			if i < 0 {
				all = false
				break
			}
			if tm == "" {
				tm = ts[i].Time
			} else if ts[i].Time != tm {
				t.Errorf("seq %d: client %s got time %q, another got %q", seq, cl.welcome.ConnID, ts[i].Time, tm)
			}
		}
		if !all {
			break
		}
		common++
	}
	if common < 5 {
		t.Errorf("only %d consecutive seqs from %d reached every client, want ≥ 5", common, first)
	}
	for _, cl := range clients {
		checkTicks(t, cl, nil) // no gap, no repeat, time matches seq
		if n := cl.duplicates(); n != 0 {
			t.Errorf("%s received %d duplicate ticks", cl.user, n)
		}
	}
	measure(t, "ticks", "%d clients on %d gateways saw seqs %d..%d identically", len(clients), len(c.Gateways),
		first, first+int64(common)-1)

	// Fibonacci answers: each client has exactly its own.
	for _, cl := range asking {
		waitFor(t, 10*time.Second, "fib answers of "+cl.welcome.User, func() error {
			n := 0
			fs, _ := cl.snapshot()
			for _, f := range fs {
				if f.Type == protocol.TypeFib || f.Type == protocol.TypeError {
					n++
				}
			}
			if n < asks {
				return fmt.Errorf("%d of %d answers", n, asks)
			}
			return nil
		})
	}
	time.Sleep(300 * time.Millisecond) // let any stray answer arrive
	for _, cl := range clients {
		fs, err := cl.snapshot()
		if err != nil {
			t.Errorf("client %s: socket closed: %v", cl.welcome.ConnID, err)
		}
		var got []string
		for _, f := range fs {
			switch f.Type {
			case protocol.TypeTime:
			case protocol.TypeFib:
				if !strings.HasPrefix(f.ID, cl.welcome.User+"-r") {
					t.Errorf("client %s got someone else's answer: %+v", cl.welcome.User, f.Frame)
					continue
				}
				if n := askN[f.ID]; f.N != n || f.Result != testkit.Fib(n).String() {
					t.Errorf("client %s: answer %s is n=%d result=%s, want F(%d)=%s", cl.welcome.User, f.ID, f.N, f.Result, n, testkit.Fib(n))
				}
				got = append(got, f.ID)
			default:
				t.Errorf("client %s: unexpected frame %+v", cl.welcome.User, f.Frame)
			}
		}
		want := 0
		if slices.Contains(asking, cl) {
			want = asks
		}
		if len(got) != want {
			t.Errorf("client %s: answers %v, want %d", cl.welcome.User, got, want)
		}
	}

	// Presence: one field per open connection, the contract's JSON.
	ids := connIDs(clients...)
	waitFor(t, 5*time.Second, "HLEN ws:presence = open connections", func() error {
		if n, err := rc.HLen(bg, keys.Presence()).Result(); err != nil || n != int64(len(clients)) {
			return fmt.Errorf("HLEN %d (%v), want %d", n, err, len(clients))
		}
		return nil
	})
	hash := presence(t, rc, keys.Presence())
	if got := sortedKeys(hash); !slices.Equal(got, sorted(ids)) {
		t.Errorf("presence fields %v, want the welcomes' conn_ids %v", got, sorted(ids))
	}
	for _, cl := range clients {
		p, ok := hash[cl.welcome.ConnID]
		if !ok {
			continue
		}
		if p.User != cl.welcome.User || p.Gateway != cl.welcome.Gateway {
			t.Errorf("presence of %s: %+v, want user %s gateway %s", cl.welcome.ConnID, p, cl.welcome.User, cl.welcome.Gateway)
		}
		if p.ConnectedAt.Before(start.Add(-time.Second)) || p.ConnectedAt.After(time.Now().Add(time.Second)) {
			t.Errorf("presence of %s: connected_at %v outside the test's run (from %v)", cl.welcome.ConnID, p.ConnectedAt, start)
		}
	}

	// Heartbeats: JSON {addr, started_at, connections}, TTL ≤ PRESENCE_TTL.
	perGateway = map[string]int{}
	for _, cl := range clients {
		perGateway[cl.welcome.Gateway]++
	}
	var gwIDs []string
	for _, g := range c.Gateways {
		gwIDs = append(gwIDs, g.ID)
		k := keys.Heartbeat(g.ID)
		var hb protocol.Heartbeat
		var ttl time.Duration
		want := perGateway[g.ID]
		waitFor(t, 5*time.Second, fmt.Sprintf("%s with %d connections", k, want), func() error {
			var err error
			if hb, ttl, err = heartbeat(t, rc, k); err != nil {
				return err
			}
			if hb.Connections != want {
				return fmt.Errorf("connections %d", hb.Connections)
			}
			return nil
		})
		if ttl <= 0 || ttl > presenceTTL {
			t.Errorf("%s: TTL %v, want in (0, %v]", k, ttl, presenceTTL)
		}
		_, port, _ := net.SplitHostPort(g.Addr)
		if _, hbPort, err := net.SplitHostPort(hb.Addr); err != nil || hbPort != port {
			t.Errorf("%s: addr %q, want the listen address %s", k, hb.Addr, g.Addr)
		}
		if hb.StartedAt.IsZero() || hb.StartedAt.After(time.Now()) || hb.StartedAt.Before(start.Add(-time.Minute)) {
			t.Errorf("%s: started_at %v", k, hb.StartedAt)
		}
		t.Logf("%s = %+v, TTL %v", k, hb, ttl)
	}
	members, err := rc.SMembers(bg, keys.Gateways()).Result()
	if err != nil || !slices.Equal(sorted(members), sorted(gwIDs)) {
		t.Errorf("SMEMBERS ws:gateways = %v (%v), want %v", members, err, gwIDs)
	}

	// GET /users on any gateway lists the whole cluster.
	resp, err := http.Get("http://" + c.Gateways[2].Addr + "/users")
	if err != nil {
		t.Fatal(err)
	}
	var users protocol.Users
	err = json.NewDecoder(resp.Body).Decode(&users)
	resp.Body.Close()
	if err != nil || users.Count != len(clients) || len(users.Users) != len(clients) {
		t.Errorf("/users: %+v (%v), want %d connections", users, err, len(clients))
	}
}
