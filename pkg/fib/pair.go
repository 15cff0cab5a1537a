package fib

import (
	"runtime"
	"sync/atomic"
	"time"
)

// pair runs two closures at once on two goroutines, the caller's and a
// helper that serves one Compute or Decimal call at a time (and the next
// call too if it starts while the helper still polls: see acquirePair),
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
	awake  atomic.Bool // the helper is polling for tasks (see ready)
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

// lingering is a pair whose owner has released it while its helper still
// polls for work (for up to pairSpin). The next call takes it over instead
// of starting a helper that would wait for a thread wake-up: back-to-back
// large requests keep one helper awake, and an idle process has none.
var lingering atomic.Pointer[pair]

// acquirePair returns the lingering pair if there is one, else a new one
// (nil if GOMAXPROCS is 1). Callers must call release.
func acquirePair() *pair {
	if p := lingering.Swap(nil); p != nil {
		return p
	}
	return newPair()
}

// release hands p to the next acquirePair while its helper polls, or
// closes it if another pair already lingers. It is safe on a nil pair.
func (p *pair) release() {
	if p == nil {
		return
	}
	if !lingering.CompareAndSwap(nil, p) {
		p.close()
		return
	}
	// Wake a helper that blocked during the call, so that it polls for
	// pairSpin and then leaves (see help).
	p.poke()
}

func (p *pair) help() {
	for {
		p.spin()
		// Done polling. If p is lingering, nobody owns it: take it back
		// out of reach and exit. Otherwise an owner has it (or will close
		// it): wait for its next task.
		if lingering.CompareAndSwap(p, nil) {
			return
		}
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
// It is atomic so that tests can change it while helpers run.
var pairSpin atomic.Int64 // nanoseconds

func init() { pairSpin.Store(int64(100 * time.Microsecond)) }

// spinLimit returns pairSpin as a duration.
func spinLimit() time.Duration { return time.Duration(pairSpin.Load()) }

// spin polls for a task for up to pairSpin, running the tasks it finds. It
// yields between polls: the caller, when it blocks waiting for a task, is
// woken up on this thread's queue.
func (p *pair) spin() {
	if spinLimit() <= 0 {
		return
	}
	p.awake.Store(true)
	defer p.awake.Store(false)
	start := time.Now()
	for !p.closed.Load() {
		if p.run() {
			start = time.Now()
		} else if time.Since(start) > spinLimit() {
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

// ready reports whether the helper is polling, so that a task offered now
// starts at once. It is false on a nil pair.
//
// On the VM this was tuned on, a parked helper takes 0.1 ms (quiet machine,
// BenchmarkWakeAfterIdle) to over 1 ms to run after it is woken (an idle vCPU
// is halted): as long as a big squaring of F(10^5), or all of it. Work that
// cannot wait that long is only split when the helper
// is ready; offering it anyway made an isolated call 10–30% slower than
// sequential code (the hand-offs, and a split path that only pays off on
// two cores).
func (p *pair) ready() bool {
	return p != nil && p.awake.Load()
}

// do2 runs a and b, concurrently if the helper is ready, and returns when
// both are done.
func (p *pair) do2(a, b func()) {
	if !p.ready() {
		a()
		b()
		return
	}
	p.offer2(a, b)
}

// offer2 is do2 for tasks long enough to cover the helper's wake-up: a is
// offered even if the helper is parked, in case it wakes while b runs.
func (p *pair) offer2(a, b func()) {
	if p == nil {
		a()
		b()
		return
	}
	t := &a
	p.task.Store(t)
	p.poke() // a no-op if a wake-up is already pending
	b()
	if p.task.CompareAndSwap(t, nil) {
		a() // the helper has not started it: cheaper than waiting
		return
	}
	// Poll for a while before blocking, as the helper does.
	for start := time.Now(); time.Since(start) < spinLimit(); runtime.Gosched() {
		select {
		case <-p.done:
			return
		default:
		}
	}
	<-p.done
}

// poke wakes the helper without a task, so that it is polling (for up to
// pairSpin) by the time the first task comes: the thread wake-up then
// overlaps the caller's work instead of delaying the task. It is safe on a
// nil pair.
func (p *pair) poke() {
	if p == nil {
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// close stops the helper; it is safe on a nil pair.
func (p *pair) close() {
	if p != nil {
		p.closed.Store(true)
		close(p.wake)
	}
}
