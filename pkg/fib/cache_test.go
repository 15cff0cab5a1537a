package fib

import (
	"slices"
	"sync"
	"testing"
)

// state returns the cached ns (most recent first) and the byte total.
func (c *Cache) state() ([]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ns []int
	for el := c.lru.Front(); el != nil; el = el.Next() {
		ns = append(ns, el.Value.(*entry).n)
	}
	return ns, c.bytes
}

func TestCacheValues(t *testing.T) {
	c := NewCache(1 << 20)
	for _, n := range []int{0, 1, 93, 94, 999, 1000, 5000, 20000, 5000, 1000} {
		if got, want := c.Decimal(n), Compute(n).String(); got != want {
			t.Fatalf("Cache.Decimal(%d) = %.20s…; want %.20s…", n, got, want)
		}
	}
	ns, bytes := c.state()
	if want := []int{1000, 5000, 20000}; !slices.Equal(ns, want) {
		t.Errorf("cached ns = %v; want %v (small n are not cached)", ns, want)
	}
	if want := len(Decimal(1000)) + len(Decimal(5000)) + len(Decimal(20000)); bytes != want {
		t.Errorf("cached bytes = %d; want %d", bytes, want)
	}
}

func TestCacheEvictsByBytes(t *testing.T) {
	l1, l2, l3 := len(Decimal(10000)), len(Decimal(11000)), len(Decimal(12000))
	c := NewCache(l1 + l2 + l3 - 1) // room for two of the three
	c.Decimal(10000)
	c.Decimal(11000)
	c.Decimal(10000) // 10000 is now the most recently used
	c.Decimal(12000) // evicts 11000
	ns, bytes := c.state()
	if want := []int{12000, 10000}; !slices.Equal(ns, want) {
		t.Fatalf("cached ns = %v; want %v", ns, want)
	}
	if bytes != l1+l3 {
		t.Fatalf("cached bytes = %d; want %d", bytes, l1+l3)
	}
	// Bigger than the whole budget: returned, not kept, nothing evicted.
	if got := c.Decimal(200000); got != Decimal(200000) {
		t.Fatal("Cache.Decimal(200000) is wrong")
	}
	if ns, _ := c.state(); !slices.Equal(ns, []int{12000, 10000}) {
		t.Fatalf("after an oversized value, cached ns = %v", ns)
	}
}

func TestCacheDisabled(t *testing.T) {
	for _, max := range []int{0, -1} {
		c := NewCache(max)
		if got := c.Decimal(5000); got != Decimal(5000) {
			t.Fatal("disabled cache returns a wrong value")
		}
		if ns, bytes := c.state(); len(ns) != 0 || bytes != 0 {
			t.Fatalf("NewCache(%d) cached %v (%d bytes)", max, ns, bytes)
		}
	}
}

func TestCacheConcurrent(t *testing.T) {
	ns := []int{1000, 3000, 7000, 15000, 30000, 500, 60000}
	want := make(map[int]string)
	total := 0
	for _, n := range ns {
		want[n] = Decimal(n)
		total += len(want[n])
	}
	c := NewCache(total / 2) // force evictions while others read
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				n := ns[(g+i)%len(ns)]
				if got := c.Decimal(n); got != want[n] {
					t.Errorf("Cache.Decimal(%d) is wrong", n)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, bytes := c.state(); bytes > total/2 {
		t.Fatalf("cached %d bytes, over the %d budget", bytes, total/2)
	}
}
