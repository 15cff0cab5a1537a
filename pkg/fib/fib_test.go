package fib

import (
	"bytes"
	"fmt"
	"math/big"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// iterative returns F(0..n) by plain additions: slow, obviously correct, and
// independent of the doubling formulas under test.
func iterative(n int) []*big.Int {
	fs := make([]*big.Int, n+1)
	a, b := big.NewInt(0), big.NewInt(1)
	for i := range fs {
		fs[i] = new(big.Int).Set(a)
		a.Add(a, b)
		a, b = b, a
	}
	return fs
}

func TestSmall(t *testing.T) {
	fs := iterative(MaxSmall + 1)
	for n := 0; n <= MaxSmall; n++ {
		v, ok := Small(n)
		if !ok || v != fs[n].Uint64() || !fs[n].IsUint64() {
			t.Fatalf("Small(%d) = %d, %v; want %s", n, v, ok, fs[n])
		}
		if got := Decimal(n); got != strconv.FormatUint(v, 10) {
			t.Fatalf("Decimal(%d) = %s; want %d", n, got, v)
		}
	}
	if fs[MaxSmall+1].IsUint64() {
		t.Fatalf("F(%d) fits a uint64: MaxSmall is too small", MaxSmall+1)
	}
	for _, n := range []int{-1, MaxSmall + 1, 1 << 20} {
		if v, ok := Small(n); ok || v != 0 {
			t.Errorf("Small(%d) = %d, %v; want 0, false", n, v, ok)
		}
	}
}

func TestComputeUpTo2000(t *testing.T) {
	fs := iterative(2000)
	for n, want := range fs {
		for _, par := range []bool{false, true} {
			var got *big.Int
			if n <= MaxSmall {
				got = Compute(n)
			} else {
				got = computeWith(n, par)
			}
			if got.Cmp(want) != 0 {
				t.Fatalf("Compute(%d) par=%v = %s; want %s", n, par, got, want)
			}
		}
		if got := naive(n); got.Cmp(want) != 0 {
			t.Fatalf("naive(%d) = %s; want %s", n, got, want)
		}
		if got := Decimal(n); got != want.String() {
			t.Fatalf("Decimal(%d) = %s; want %s", n, got, want)
		}
	}
}

func TestComputeLarge(t *testing.T) {
	ns := []int{4096, 10000, 12345, 65535, 65536, 100000}
	if testing.Short() {
		ns = ns[:4]
	}
	// Force the concurrent squarings down to small sizes as well.
	defer func(w int) { parSqrWords = w }(parSqrWords)
	parSqrWords = 2
	for _, n := range ns {
		want := testkit.Fib(n)
		for _, par := range []bool{false, true} {
			if got := computeWith(n, par); got.Cmp(want) != 0 {
				t.Fatalf("compute(%d, %v) differs from the iterative result", n, par)
			}
		}
		if got := Decimal(n); got != want.String() {
			t.Fatalf("Decimal(%d) differs from the iterative result", n)
		}
	}
}

func TestDecimalMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	const n = 1000000
	x := Compute(n)
	if got := naive(n); got.Cmp(x) != 0 {
		t.Fatalf("Compute(%d) != naive(%d)", n, n)
	}
	want := x.String()
	if got := Decimal(n); got != want {
		t.Fatalf("Decimal(%d) differs from Compute(%d).String()", n, n)
	}
	if got := formatDecimal(x, nil); got != want {
		t.Fatalf("sequential formatDecimal differs from String()")
	}
}

// computeWith runs compute with or without a helper goroutine.
func computeWith(n int, par bool) *big.Int {
	if !par {
		return compute(n, nil)
	}
	p := newPair()
	defer p.close()
	return compute(n, p)
}

// formatWith runs formatDecimal with or without a helper goroutine.
func formatWith(x *big.Int, par bool) string {
	if !par {
		return formatDecimal(x, nil)
	}
	p := newPair()
	defer p.close()
	return formatDecimal(x, p)
}

func TestComputeNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Compute(-1) did not panic")
		}
	}()
	Compute(-1)
}

// helpers returns the number of running pair helper goroutines.
func helpers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("fib.(*pair).help("))
}

func TestMain(m *testing.M) {
	if runtime.GOMAXPROCS(0) < 2 {
		// The concurrent paths are only taken with 2+ Ps; make sure the
		// tests exercise them even on a 1-CPU runner.
		runtime.GOMAXPROCS(2)
	}
	code := m.Run()
	// Every pair helper must have exited. Only they are counted: fuzzing
	// leaves goroutines of its own (os/signal) behind.
	deadline := time.Now().Add(2 * time.Second)
	for helpers() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := helpers(); code == 0 && n > 0 {
		fmt.Fprintf(os.Stderr, "goroutine leak: %d pair helpers still running after the tests\n", n)
		code = 1
	}
	os.Exit(code)
}

// TestPairLingers: a released pair's helper is handed to the next caller
// while it polls, a second caller meanwhile gets a pair of its own, and a
// helper nobody takes exits, including one that had blocked mid-call.
func TestPairLingers(t *testing.T) {
	defer pairSpin.Store(pairSpin.Load())
	waitGone := func() {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for (helpers() > 0 || lingering.Load() != nil) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := helpers(); n > 0 || lingering.Load() != nil {
			t.Fatalf("%d helpers still running, lingering %v", n, lingering.Load())
		}
	}
	waitGone()

	pairSpin.Store(int64(time.Minute)) // long enough for the hand-over to be certain
	p := acquirePair()
	var x, y int
	p.do2(func() { x = 1 }, func() { y = 2 })
	p.release()
	q := acquirePair()
	if q != p {
		t.Fatal("the next caller did not get the lingering pair")
	}
	r := acquirePair()
	if r == q || r == nil {
		t.Fatal("a concurrent caller did not get a pair of its own")
	}
	q.do2(func() { x = 3 }, func() { y = 4 })
	if x != 3 || y != 4 {
		t.Fatalf("tasks of the handed-over pair: x=%d y=%d", x, y)
	}
	r.release() // lingers
	q.release() // another one lingers already: closed
	if lingering.Load() != r {
		t.Fatal("the first released pair is not the lingering one")
	}
	pairSpin.Store(int64(time.Millisecond)) // the helper now stops polling soon
	waitGone()

	// A helper that blocked during the call (the caller paused longer
	// than pairSpin) is woken by release and exits.
	p = acquirePair()
	time.Sleep(20 * time.Millisecond)
	p.release()
	waitGone()
}
