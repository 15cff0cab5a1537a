package presence

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// walk pages through s with limit, checking each page's size, and returns how often each
// conn_id was listed and the last page's totals.
func walk(t *testing.T, s Store, limit int) (map[string]int, Page) {
	t.Helper()
	seen := make(map[string]int)
	var last Page
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("the walk does not end")
		}
		p, err := s.Page(context.Background(), cursor, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Users) > limit {
			t.Fatalf("page of %d with limit %d", len(p.Users), limit)
		}
		for _, u := range p.Users {
			seen[u.ConnID]++
		}
		last = p
		if p.NextCursor == "" {
			return seen, last
		}
		cursor = p.NextCursor
	}
}

// waitCount waits until a first page reports count connections and distinct users.
func waitCount(t *testing.T, s Store, count, distinct int) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		p, err := s.Page(context.Background(), "", 1)
		if err == nil && p.Count == count && p.Distinct == distinct {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("count %d, distinct %d (err %v), want %d and %d", p.Count, p.Distinct, err, count, distinct)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runPageContract checks paging and distinct users against stores made by newStore. Each
// store starts empty (its own prefix).
func runPageContract(t *testing.T, newStore newStoreFunc) {
	for _, n := range []int{100, 700} { // a small hash (listpack in Redis) and a large one
		t.Run(fmt.Sprintf("PagesWalkAll%d", n), func(t *testing.T) {
			t.Parallel()
			s, gw := newStore(t)
			for i := range n {
				s.Join(user(gw, i))
			}
			waitCount(t, s, n, 7)
			for _, limit := range []int{1, 30, 10000} {
				seen, last := walk(t, s, limit)
				if len(seen) != n || last.Count != n || last.Distinct != 7 {
					t.Fatalf("limit %d: %d listed, count %d, distinct %d", limit, len(seen), last.Count, last.Distinct)
				}
			}
			if _, err := s.Page(context.Background(), "", 0); err != nil { // 0: the default size
				t.Fatal(err)
			}
		})
	}

	t.Run("PagesUnderChurn", func(t *testing.T) {
		t.Parallel()
		s, gw := newStore(t)
		const stable = 400
		for i := range stable {
			s.Join(user(gw, i))
		}
		waitCount(t, s, stable, 7)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { // others come and go during the walks
			for i := stable; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := user(gw, i)
				s.Join(u)
				if i%3 != 0 {
					s.Leave(u.ConnID, protocol.ReasonClosed)
				}
				time.Sleep(100 * time.Microsecond)
			}
		})
		for range 5 {
			seen, _ := walk(t, s, 25)
			for i := range stable {
				if seen[user(gw, i).ConnID] == 0 {
					close(stop)
					wg.Wait()
					t.Fatalf("%s, online throughout, was missed", user(gw, i).ConnID)
				}
			}
		}
		close(stop)
		wg.Wait()
	})

	t.Run("DistinctUsers", func(t *testing.T) {
		t.Parallel()
		s, gw := newStore(t)
		a1, a2, b := user(gw, 1), user(gw, 8), user(gw, 2) // user1, user1, user2
		s.Join(a1)
		s.Join(a2)
		s.Join(b)
		waitCount(t, s, 3, 2)
		s.Leave(a1.ConnID, protocol.ReasonClosed)
		waitCount(t, s, 2, 2)
		s.Leave(a2.ConnID, protocol.ReasonClosed)
		s.Leave(a2.ConnID, protocol.ReasonClosed) // twice: ignored
		waitCount(t, s, 1, 1)
		s.Leave(b.ConnID, protocol.ReasonClosed)
		waitCount(t, s, 0, 0)
		s.Join(b)
		waitCount(t, s, 1, 1)
	})
}

func TestMemoryPageContract(t *testing.T) {
	t.Parallel()
	runPageContract(t, func(t *testing.T) (Store, string) { return NewMemory(), "gw-mem" })
}
