package fib

import (
	"runtime"
	"sync/atomic"
)

// pair runs two closures at once on two goroutines, the caller's and a
// helper started for the lifetime of the pair (one Compute or Decimal call),
// with a fallback that makes it never much slower than running them in
// sequence.
//
// Why not just `go f(); wg.Wait()`: on the 2-vCPU VM this was measured on,
// a goroutine handed to the idle CPU starts running 70 µs to several ms
// later (waking a parked OS thread is slow there, and slower when other
// processes load the machine). A plain goroutine then makes the caller wait
// for work it could have done itself. Here the caller offers task a, runs b,
// and takes a back if the helper has not started it yet. A spinning helper
// avoided the wake-up cost on a quiet machine but was 2.5x slower than
// sequential code on a loaded one, so the helper blocks when idle.
//
// A nil *pair runs everything sequentially. do2 must only be called by the
// goroutine that created the pair, one call at a time, and the closures must
// not call do2.
type pair struct {
	task atomic.Pointer[func()]
	wake chan struct{} // capacity 1: "a task may be waiting"
	done chan struct{} // capacity 1: the helper finished the task it took
}

// newPair starts a helper goroutine, or returns nil if GOMAXPROCS is 1.
// Callers must call close.
func newPair() *pair {
	if runtime.GOMAXPROCS(0) < 2 {
		return nil
	}
	p := &pair{wake: make(chan struct{}, 1), done: make(chan struct{}, 1)}
	go p.help()
	return p
}

func (p *pair) help() {
	for range p.wake {
		if t := p.task.Swap(nil); t != nil {
			(*t)()
			p.done <- struct{}{}
		}
	}
}

// do2 runs a and b, concurrently if the helper picks a up in time, and
// returns when both are done.
func (p *pair) do2(a, b func()) {
	if p == nil {
		a()
		b()
		return
	}
	t := &a
	p.task.Store(t)
	select {
	case p.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	b()
	if p.task.CompareAndSwap(t, nil) {
		a() // the helper has not started it: cheaper than waiting
		return
	}
	<-p.done
}

// close stops the helper; it is safe on a nil pair.
func (p *pair) close() {
	if p != nil {
		close(p.wake)
	}
}
