package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/termclient"
)

// TestUsersPages walks GET /users in pages of 10 over 25 connections of 5 users, checks the
// totals on every page and the 400s for a bad limit; then `client users` walks it whole.
func TestUsersPages(t *testing.T) {
	store := presence.NewMemory()
	for i := range 25 {
		store.Join(protocol.User{ConnID: fmt.Sprintf("c-%02d", i), User: fmt.Sprintf("u%d", i%5), Gateway: "gw",
			ConnectedAt: time.Unix(int64(i), 0).UTC()})
	}
	srv := NewServer(slog.New(slog.DiscardHandler), metrics.New(), broker.NewMemory(), store, Options{ID: "gw"})
	hs := serve(t, srv)

	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		u := getUsersPage(t, hs.URL+"/users?limit=10&cursor="+cursor)
		pages++
		if u.Count != 25 || u.DistinctUsers != 5 || len(u.Users) > 10 {
			t.Fatalf("page %d: count %d, distinct %d, %d users", pages, u.Count, u.DistinctUsers, len(u.Users))
		}
		for _, x := range u.Users {
			seen[x.ConnID] = true
		}
		if u.NextCursor == "" {
			break
		}
		cursor = u.NextCursor
	}
	if pages != 3 || len(seen) != 25 {
		t.Fatalf("%d pages, %d connections", pages, len(seen))
	}
	if u := getUsersPage(t, hs.URL+"/users"); len(u.Users) != 25 || u.NextCursor != "" {
		t.Fatalf("default page: %d users, next %q", len(u.Users), u.NextCursor)
	}
	usersBadRequest(t, hs.URL, "limit=0", "limit=10001", "limit=x", "limit=-1")

	var out, errOut bytes.Buffer
	if err := termclient.Users(context.Background(), []string{"-url", hs.URL + "/users", "-limit", "7"}, &out, &errOut); err != nil {
		t.Fatalf("client users: %v\n%s", err, errOut.String())
	}
	if n := strings.Count(out.String(), "\tgw\t"); n != 25 || !strings.Contains(out.String(), "count 25, distinct users 5") {
		t.Fatalf("client users printed %d connections:\n%s", n, out.String())
	}
}

// usersBadRequest checks that GET /users answers 400 to each query.
func usersBadRequest(t *testing.T, base string, queries ...string) {
	t.Helper()
	for _, q := range queries {
		resp, err := http.Get(base + "/users?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %s, want 400", q, resp.Status)
		}
	}
}

func getUsersPage(t *testing.T, url string) protocol.Users {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var u protocol.Users
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&u) != nil {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return u
}

// TestUsersPollersKeepRedisFree: 20 loops poll GET /users with 15,000 online. Behind them
// Redis runs no command over the whole hash (no HGETALL, HKEYS or HVALS), and its time per
// page, HSCAN of about 1000 fields, stays a fraction of an HGETALL of the hash (measured
// with INFO commandstats, averaged over every call: robust to this machine's load), so ticks
// and presence writes keep flowing however many pollers there are.
//
// Fails before paging: every call was one HGETALL of the whole hash (about 1.7 MB): "20
// hgetall calls behind /users", all the 20 loops managed in 2 s.
func TestUsersPollersKeepRedisFree(t *testing.T) {
	srv := testkit.StartRedis(t)
	c := srv.Client()
	ctx := context.Background()
	prefix := testkit.Prefix(t)
	const n = 15000
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			p.HSet(ctx, prefix+"presence", fmt.Sprintf("c-01JD%020d", i),
				fmt.Sprintf(`{"user":"user-%d","gateway":"gw-7f3a21","connected_at":"2026-11-22T07:30:01.123Z"}`, i%5000))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	store := presence.NewRedis(c, presence.RedisOptions{Prefix: prefix, GatewayID: "gw-u", TTL: time.Minute,
		Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { // after the drain
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		store.Close(cctx)
	})
	hs := serve(t, NewServer(slog.New(slog.DiscardHandler), metrics.New(), broker.NewMemory(), store, Options{ID: "gw-u"}))
	c.ConfigResetStat(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	calls := 0
	end := time.Now().Add(2 * time.Second)
	for range 20 {
		wg.Go(func() {
			for time.Now().Before(end) {
				resp, err := http.Get(hs.URL + "/users")
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				calls++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stats := testkit.CommandStats(t, c)
	for _, cmd := range []string{"hgetall", "hkeys", "hvals"} {
		if stats[cmd].Calls != 0 {
			t.Fatalf("%d %s calls behind /users", stats[cmd].Calls, cmd)
		}
	}
	for range 5 {
		c.HGetAll(ctx, prefix+"presence") // the reference: one command over the whole hash
	}
	stats = testkit.CommandStats(t, c)
	scan, all := stats["hscan"].UsecPerCall, stats["hgetall"].UsecPerCall
	t.Logf("%d GET /users in 2 s from 20 loops: %d HSCAN at %.0f µs each; one HGETALL of %d fields: %.0f µs",
		calls, stats["hscan"].Calls, scan, n, all)
	if stats["hscan"].Calls == 0 || scan > all/2 { // about 1/15 on a quiet machine
		t.Fatalf("HSCAN %.0f µs per page against HGETALL %.0f µs", scan, all)
	}
	u := getUsers(t, hs.URL) // the fields were written by hand: no ws:users, distinct 0
	if u.Count != n || u.DistinctUsers != 0 || len(u.Users) != presence.DefaultPageSize || u.NextCursor == "" {
		t.Fatalf("first page: count %d, %d users, next %q", u.Count, len(u.Users), u.NextCursor)
	}
	usersBadRequest(t, hs.URL, "cursor=zzz", "cursor=7:0", "cursor=0:x") // not a cursor; shard 7 of 1; bad scan
}
