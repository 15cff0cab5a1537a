// Package fib computes Fibonacci numbers exactly and formats them in decimal,
// which is what the gateway sends to its clients.
//
// Entry points:
//
//   - [Small] returns F(n) for n <= 93 (the largest that fits a uint64) from a table.
//   - [Compute] returns F(n) as a *big.Int.
//   - [Decimal] returns F(n) as a decimal string; it is the hot path and is tuned
//     to stay within reach of GMP (see BENCHMARKS.md).
//   - [Cache] memoizes Decimal for large n under a byte budget.
//
// Large n use both the available cores: the two squarings of each big doubling
// step run concurrently, and the decimal conversion splits the number by powers
// of ten and converts the halves concurrently. Everything here is safe for
// concurrent use.
package fib

import (
	"fmt"
	"math/big"
	"math/bits"
	"strconv"
)

// MaxSmall is the largest n whose F(n) fits in a uint64.
const MaxSmall = 93

var (
	smallTable [MaxSmall + 1]uint64
	smallDec   [MaxSmall + 1]string
)

func init() {
	smallTable[1] = 1
	for i := 2; i <= MaxSmall; i++ {
		smallTable[i] = smallTable[i-1] + smallTable[i-2]
	}
	for i, v := range smallTable {
		smallDec[i] = strconv.FormatUint(v, 10)
	}
}

// Small returns F(n) and true for 0 <= n <= 93, and 0 and false otherwise.
// It is a table lookup, so callers on the hot path can skip math/big entirely.
func Small(n int) (uint64, bool) {
	if n < 0 || n > MaxSmall {
		return 0, false
	}
	return smallTable[n], true
}

// parSqrWords is the operand size (in words) from which the two squarings of
// a doubling step run on two goroutines. Below it the goroutine hand-off costs
// more than it saves. Measured on a 2-core machine (see BENCHMARKS.md).
var parSqrWords = 256

// longSqrWords is the operand size from which a squaring (about 0.25 ms and
// more) is offered to the helper even if it is parked (see pair.offer2).
var longSqrWords = 1024

// Compute returns F(n) exactly (F(0) = 0, F(1) = 1). It panics if n < 0.
//
// For n <= 93 it is a table lookup. Above, it uses fast doubling from the top
// bit of n, with two squarings per bit as GMP's mpz_fib_ui does (squaring is
// cheaper than a general multiplication in math/big): from a = F(k) and
// b = F(k-1),
//
//	F(2k+1) = 4a² - b² + 2(-1)^k
//	F(2k-1) = a² + b²
//	F(2k)   = F(2k+1) - F(2k-1)
//
// The two squarings are independent; for large operands they run concurrently
// when GOMAXPROCS > 1 (see pair). The caller owns the result.
func Compute(n int) *big.Int {
	if n < 0 {
		panic(fmt.Sprintf("fib: Compute(%d): negative n", n))
	}
	if n <= MaxSmall {
		return new(big.Int).SetUint64(smallTable[n])
	}
	if n < parMinN {
		return compute(n, nil)
	}
	p := acquirePair()
	defer p.release()
	return compute(n, p)
}

// parMinN is the n from which Compute and Decimal use a second goroutine
// (see pair). Below it F(n) is done before the helper would wake up.
var parMinN = 40000

// compute is Compute for n > MaxSmall. Big squarings run on p (nil: sequentially).
func compute(n int, p *pair) *big.Int {
	// Start from k = the top 6 bits of n (32 <= k < 64), taken from the table.
	shift := bits.Len(uint(n)) - 6
	k := n >> shift
	// Every buffer gets the capacity of the final result up front, so the
	// loop does not reallocate as the numbers double in size. math/big
	// reuses z's backing array when it is large enough.
	words := int(float64(n)*0.6943/bits.UintSize) + 4
	newBuf := func() *big.Int { return new(big.Int).SetBits(make([]big.Word, 0, 2*words)) }
	a, b := newBuf(), newBuf() // F(k), F(k-1)
	a2, b2 := newBuf(), newBuf()
	a.SetUint64(smallTable[k])
	b.SetUint64(smallTable[k-1])
	p.poke() // the small steps below hide the helper's wake-up

	for i := shift - 1; i >= 0; i-- {
		if w := len(b.Bits()); w >= longSqrWords {
			p.offer2(func() { a2.Mul(a, a) }, func() { b2.Mul(b, b) })
		} else if w >= parSqrWords {
			p.do2(func() { a2.Mul(a, a) }, func() { b2.Mul(b, b) })
		} else {
			a2.Mul(a, a)
			b2.Mul(b, b)
		}
		// a2 = F(2k+1) = 4a² - b² ± 2, b = F(2k-1) = a² + b², then F(2k).
		b.Add(a2, b2)
		a2.Lsh(a2, 2)
		a2.Sub(a2, b2)
		if k&1 == 0 {
			a2.Add(a2, two)
		} else {
			a2.Sub(a2, two)
		}
		if n>>i&1 == 1 {
			// (F(2k+1), F(2k))
			b2.Sub(a2, b)
			a, b, a2, b2 = a2, b2, a, b
			k = 2*k + 1
		} else {
			// (F(2k), F(2k-1))
			a2.Sub(a2, b)
			a, a2 = a2, a
			k = 2 * k
		}
	}
	return a
}

var two = big.NewInt(2)

// naive is the textbook fast doubling (three multiplications per bit, no
// table, no concurrency), kept as the baseline the benchmarks compare with.
func naive(n int) *big.Int {
	a, b := big.NewInt(0), big.NewInt(1) // F(k), F(k+1), k = 0
	t1, t2 := new(big.Int), new(big.Int)
	for i := bits.Len(uint(n)) - 1; i >= 0; i-- {
		// F(2k) = F(k)(2F(k+1) - F(k)), F(2k+1) = F(k)² + F(k+1)²
		t1.Lsh(b, 1)
		t1.Sub(t1, a)
		t1.Mul(t1, a)
		t2.Mul(a, a)
		b.Mul(b, b)
		b.Add(b, t2)
		a.Set(t1)
		if n>>i&1 == 1 {
			a.Add(a, b)
			a, b = b, a
		}
	}
	return a
}
