package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

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
	for _, q := range []string{"limit=0", "limit=10001", "limit=x", "limit=-1"} {
		resp, err := http.Get(hs.URL + "/users?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %s, want 400", q, resp.Status)
		}
	}

	var out, errOut bytes.Buffer
	if err := termclient.Users(context.Background(), []string{"-url", hs.URL + "/users", "-limit", "7"}, &out, &errOut); err != nil {
		t.Fatalf("client users: %v\n%s", err, errOut.String())
	}
	if n := strings.Count(out.String(), "\tgw\t"); n != 25 || !strings.Contains(out.String(), "count 25, distinct users 5") {
		t.Fatalf("client users printed %d connections:\n%s", n, out.String())
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
