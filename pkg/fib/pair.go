package fib

import (
	"runtime"
	"sync/atomic"
	"time"
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
// and takes a back if the helper has not started it yet. A helper spinning
// for the whole call avoided the wake-up cost on a quiet machine but was
// 2.5x slower than sequential code on a loaded one. So the helper (and the
// caller waiting for it) polls for at most pairSpin, yielding between polls,
// and then blocks: the tasks of one call come close together, so the helper
// is usually awake for the next one, and an idle or loaded machine loses at
// most pairSpin of CPU per gap (measured: no slowdown with two CPU hogs
// running, within noise with four concurrent callers).
//
// A nil *pair runs everything sequentially. do2 must only be called by the
// goroutine that created the pair, one call at a time, and the closures must
// not call do2.
type pair struct {
	task atomic.Pointer[func()]
	wake chan struct{} // capacity 1: "a task may be waiting"
	done chan struct{} // capacity 1: the helper finished the task it took

	closed atomic.Bool // set by close, ends the helper's polling
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
	for {
		p.spin()
		if _, ok := <-p.wake; !ok {
			return
		}
		p.run()
	}
}

// pairSpin is how long the helper polls for a task before it blocks, after
// it starts and after each task: the tasks of one call come in quick
// succession, and each one that finds the helper parked waits for a
// thread wake-up. The poll is bounded, so a loaded machine loses at most
// this much CPU time per gap between tasks.
var pairSpin = 100 * time.Microsecond

// spin polls for a task for up to pairSpin, running the tasks it finds. It
// yields between polls: the caller, when it blocks waiting for a task, is
// woken up on this thread's queue.
func (p *pair) spin() {
	if pairSpin <= 0 {
		return
	}
	start := time.Now()
	for !p.closed.Load() {
		if p.run() {
			start = time.Now()
		} else if time.Since(start) > pairSpin {
			return
		}
		runtime.Gosched()
	}
}

// run runs the offered task, if any, and reports whether there was one.
func (p *pair) run() bool {
	t := p.task.Swap(nil)
	if t == nil {
		return false
	}
	(*t)()
	p.done <- struct{}{}
	return true
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
	// Poll for a while before blocking, as the helper does.
	for start := time.Now(); time.Since(start) < pairSpin; runtime.Gosched() {
		select {
		case <-p.done:
			return
		default:
		}
	}
	<-p.done
}

// close stops the helper; it is safe on a nil pair.
func (p *pair) close() {
	if p != nil {
		p.closed.Store(true)
		close(p.wake)
	}
}
