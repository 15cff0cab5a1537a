package gateway

import "sync"

// writerBatch is how many connections a writer takes off the ready list at once: few enough
// that the other writers share a burst, enough to take the lock rarely.
const writerBatch = 64

// writers hands the frames queued on connections to their WebSocket writers, on a fixed set of
// goroutines. The hub's goroutines only enqueue a tick and put the connection on the ready
// list (hub.Sink); these goroutines do the writing. A write never waits for a peer (the
// connection's outbox keeps what the socket does not take), so one slow or hostile socket
// costs a writer a system call, not a stall, and an idle connection costs no goroutine.
//
// A connection is on the ready list at most once (conn.scheduled). Lock order: conn.mu is
// never held while taking mu.
type writers struct {
	mu    sync.Mutex
	cond  sync.Cond
	ready []*conn
	head  int // ready[head:] are waiting
	stop  bool
	wg    sync.WaitGroup
}

func newWriters(n int) *writers {
	w := &writers{}
	w.cond.L = &w.mu
	for range n {
		w.wg.Go(w.run)
	}
	return w
}

// schedule puts c on the ready list. The caller has set c.scheduled. With wake false the
// writers are not woken: the hub's goroutines queue a tick on thousands of connections, and
// waking the writers at the first would have them take a few, sleep, be woken again, and
// contend with the hub for mu all along; the tick's sender calls wake once at the end.
func (w *writers) schedule(c *conn, wake bool) {
	w.mu.Lock()
	w.ready = append(w.ready, c)
	if wake && len(w.ready)-w.head == 1 {
		w.cond.Broadcast() // the list was empty: every writer may be asleep
	}
	w.mu.Unlock()
}

// wake starts the writers on whatever is on the ready list.
func (w *writers) wake() {
	w.mu.Lock()
	if w.head < len(w.ready) {
		w.cond.Broadcast()
	}
	w.mu.Unlock()
}

func (w *writers) run() {
	var batch [writerBatch]*conn
	for {
		w.mu.Lock()
		for w.head == len(w.ready) && !w.stop {
			w.cond.Wait()
		}
		if w.head == len(w.ready) { // stopped and nothing left
			w.mu.Unlock()
			return
		}
		n := copy(batch[:], w.ready[w.head:])
		clear(w.ready[w.head : w.head+n])
		w.head += n
		if w.head == len(w.ready) {
			w.ready, w.head = w.ready[:0], 0
		}
		w.mu.Unlock()
		for i, c := range batch[:n] {
			c.writeQueued()
			batch[i] = nil
		}
	}
}

// close stops the writers once the ready list is empty and waits for them.
func (w *writers) close() {
	w.mu.Lock()
	w.stop = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.wg.Wait()
}
