package presence

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// eventually is how long a Redis-backed store may take to show a change.
const eventually = 2 * time.Second

// newStoreFunc makes a store for one test and returns it with its gateway id.
type newStoreFunc func(t *testing.T) (Store, string)

func user(gw string, i int) protocol.User {
	return protocol.User{
		ConnID:      fmt.Sprintf("c-%s-%05d", gw, i),
		User:        fmt.Sprintf("user%d", i%7),
		Gateway:     gw,
		ConnectedAt: time.Date(2026, 11, 22, 7, 30, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
	}
}

// waitList polls List until ok accepts it.
func waitList(t *testing.T, s Store, what string, ok func([]protocol.User) bool) []protocol.User {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		got, err := s.List(context.Background())
		if err == nil && ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: err %v, %d users: %v", what, eventually, err, len(got), head(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func head(u []protocol.User) []protocol.User { return u[:min(len(u), 5)] }

func mine(all []protocol.User, gw string) []protocol.User {
	var out []protocol.User
	for _, u := range all {
		if u.Gateway == gw {
			out = append(out, u)
		}
	}
	return out
}

// runContract checks the Store contract against stores made by newStore.
func runContract(t *testing.T, newStore newStoreFunc) {
	t.Run("JoinThenList", func(t *testing.T) {
		t.Parallel()
		s, gw := newStore(t)
		u := user(gw, 1)
		s.Join(u)
		got := waitList(t, s, "join", func(l []protocol.User) bool { return len(mine(l, gw)) == 1 })
		g := mine(got, gw)[0]
		if g.ConnID != u.ConnID || g.User != u.User || g.Gateway != gw || !g.ConnectedAt.Equal(u.ConnectedAt) {
			t.Fatalf("listed %+v, joined %+v", g, u)
		}
	})

	t.Run("LeaveRemoves", func(t *testing.T) {
		t.Parallel()
		s, gw := newStore(t)
		a, b := user(gw, 1), user(gw, 2)
		s.Join(a)
		s.Join(b)
		waitList(t, s, "joins", func(l []protocol.User) bool { return len(mine(l, gw)) == 2 })
		s.Leave(a.ConnID, protocol.ReasonClosed)
		got := waitList(t, s, "leave", func(l []protocol.User) bool { return len(mine(l, gw)) == 1 })
		if mine(got, gw)[0].ConnID != b.ConnID {
			t.Fatalf("left %v", got)
		}
		s.Leave("c-unknown", protocol.ReasonClosed) // ignored
	})

	t.Run("ManyJoinsSorted", func(t *testing.T) {
		t.Parallel()
		s, gw := newStore(t)
		const n = 500
		var want []string
		for i := n - 1; i >= 0; i-- { // joined in reverse connection order
			s.Join(user(gw, i))
		}
		for i := range n {
			want = append(want, user(gw, i).ConnID)
		}
		got := waitList(t, s, "many joins", func(l []protocol.User) bool { return len(mine(l, gw)) == n })
		var ids []string
		for _, u := range mine(got, gw) {
			ids = append(ids, u.ConnID)
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("not sorted by connected_at: %v…", ids[:5])
		}
	})

	t.Run("CloseRemovesGateway", func(t *testing.T) {
		t.Parallel()
		s, gw := newStore(t)
		for i := range 5 {
			s.Join(user(gw, i))
		}
		s.Leave(user(gw, 0).ConnID, protocol.ReasonDrained)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m := mine(got, gw); len(m) != 0 {
			t.Fatalf("after Close: %v", m)
		}
		s.Join(user(gw, 9)) // after Close: ignored, must not panic
		if err := s.Close(ctx); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestMemoryContract(t *testing.T) {
	t.Parallel()
	runContract(t, func(t *testing.T) (Store, string) {
		return NewMemory(), "gw-mem"
	})
}
