package fib

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// Run with: go test -run='^$' -bench=. -benchmem ./pkg/fib
// deploy/bench/run-fib-bench.sh runs GMP's numbers side by side.

var sinkString string

func BenchmarkSmall(b *testing.B) {
	b.Run("n=90/Decimal", func(b *testing.B) {
		for b.Loop() {
			sinkString = Decimal(90)
		}
	})
	b.Run("n=90/SmallFormatUint", func(b *testing.B) {
		for b.Loop() {
			v, _ := Small(90)
			sinkString = strconv.FormatUint(v, 10)
		}
	})
}

var benchNs = []int{1000, 10000, 100000, 1000000}

func benchName(n int) string { return "n=" + strconv.Itoa(n) }

// BenchmarkDecimal is the gateway's cold path: F(n) computed and formatted
// with no result cache (the powers-of-five table is warm after the first call).
func BenchmarkDecimal(b *testing.B) {
	for _, n := range benchNs {
		b.Run(benchName(n), func(b *testing.B) {
			for b.Loop() {
				sinkString = Decimal(n)
			}
		})
	}
}

// BenchmarkDecimalIsolated is Decimal called alone on an idle process (a
// pause of 2 ms before each call, not timed): no helper from a previous call
// is still polling, so each call pays the thread wake-up of its own helper.
// BenchmarkDecimal's back-to-back calls are a busy server's case.
func BenchmarkDecimalIsolated(b *testing.B) {
	for _, n := range benchNs[2:] {
		b.Run(benchName(n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				time.Sleep(2 * time.Millisecond)
				b.StartTimer()
				sinkString = Decimal(n)
			}
		})
	}
}

// BenchmarkDecimalSequential is Decimal restricted to one goroutine, to show
// what the concurrency buys.
func BenchmarkDecimalSequential(b *testing.B) {
	for _, n := range benchNs[2:] {
		b.Run(benchName(n), func(b *testing.B) {
			for b.Loop() {
				sinkString = formatDecimal(compute(n, nil), nil)
			}
		})
	}
}

// BenchmarkNaive is the baseline: textbook fast doubling and big.Int.String.
func BenchmarkNaive(b *testing.B) {
	for _, n := range benchNs[2:] {
		b.Run(benchName(n), func(b *testing.B) {
			for b.Loop() {
				sinkString = naive(n).String()
			}
		})
	}
}

func BenchmarkComputeOnly(b *testing.B) {
	for _, n := range benchNs[2:] {
		b.Run(benchName(n), func(b *testing.B) {
			for b.Loop() {
				Compute(n)
			}
		})
		b.Run(benchName(n)+"/sequential", func(b *testing.B) {
			for b.Loop() {
				compute(n, nil)
			}
		})
		b.Run(benchName(n)+"/naive", func(b *testing.B) {
			for b.Loop() {
				naive(n)
			}
		})
	}
}

func BenchmarkFormatOnly(b *testing.B) {
	for _, n := range benchNs[2:] {
		x := Compute(n)
		b.Run(benchName(n), func(b *testing.B) {
			for b.Loop() {
				sinkString = formatWith(x, runtime.GOMAXPROCS(0) > 1)
			}
		})
		b.Run(benchName(n)+"/sequential", func(b *testing.B) {
			for b.Loop() {
				sinkString = formatDecimal(x, nil)
			}
		})
		b.Run(benchName(n)+"/String", func(b *testing.B) {
			for b.Loop() {
				sinkString = x.String()
			}
		})
	}
}

// BenchmarkWakeAfterIdle measures what the pair helper is up against: the time from a channel
// send to a goroutine parked for 2 ms until that goroutine runs, while the sender keeps its own
// CPU busy (as a caller computing its half does). On a VM an idle vCPU is halted, and waking
// it dominates.
func BenchmarkWakeAfterIdle(b *testing.B) {
	ch := make(chan struct{})
	ran := make(chan struct{}, 1)
	go func() {
		for range ch {
			ran <- struct{}{}
		}
	}()
	defer close(ch)
	for b.Loop() {
		b.StopTimer()
		time.Sleep(2 * time.Millisecond)
		b.StartTimer()
		ch <- struct{}{}
		for waiting := true; waiting; {
			select {
			case <-ran:
				waiting = false
			default: // spin: this CPU stays busy
			}
		}
	}
}
