package fib

import (
	"container/list"
	"sync"
)

// cacheMinN is the smallest n a Cache stores: below it Decimal takes a few
// microseconds at most, about what a cache hit costs under contention.
const cacheMinN = 1000

// Cache memoizes [Decimal] for large n, bounded by the total length in bytes
// of the cached strings, evicting the least recently used first.
//
// The gateway sends the same F(n) to many clients and computing F(10^6) takes
// about 10 ms of two cores, so a Cache also collapses concurrent requests for
// the same n into one computation: the first caller computes, the others wait
// for its result. Strings longer than the whole budget are computed and
// returned but not kept.
//
// A Cache is safe for concurrent use. The zero value is not usable; call
// [NewCache].
type Cache struct {
	maxBytes int

	mu    sync.Mutex
	bytes int            // sum of len(s) over the entries in lru
	lru   *list.List     // of *entry, most recently used first; finished entries only
	byN   map[int]*entry // finished and in-flight entries
}

type entry struct {
	n     int
	s     string        // valid once ready is closed
	ready chan struct{} // closed when s is set
	elem  *list.Element // nil while being computed
}

// NewCache returns a cache holding up to maxBytes bytes of decimal strings.
// maxBytes <= 0 means no caching: Decimal just computes (concurrent requests
// for the same n are not collapsed either).
func NewCache(maxBytes int) *Cache {
	return &Cache{maxBytes: maxBytes, lru: list.New(), byN: make(map[int]*entry)}
}

// Decimal returns F(n) in decimal, as the package-level [Decimal] does, from
// the cache when possible. It panics if n < 0.
func (c *Cache) Decimal(n int) string {
	if c.maxBytes <= 0 || n < cacheMinN {
		return Decimal(n)
	}
	c.mu.Lock()
	if e, ok := c.byN[n]; ok {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
			c.mu.Unlock()
			return e.s
		}
		c.mu.Unlock()
		<-e.ready // someone else is computing it
		return e.s
	}
	e := &entry{n: n, ready: make(chan struct{})}
	c.byN[n] = e
	c.mu.Unlock()

	// Decimal cannot panic for n >= cacheMinN, so waiters are always released.
	e.s = Decimal(n)
	close(e.ready)

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(e.s) > c.maxBytes {
		delete(c.byN, n)
		return e.s
	}
	e.elem = c.lru.PushFront(e)
	c.bytes += len(e.s)
	for c.bytes > c.maxBytes {
		old := c.lru.Remove(c.lru.Back()).(*entry)
		delete(c.byN, old.n)
		c.bytes -= len(old.s)
	}
	return e.s
}
