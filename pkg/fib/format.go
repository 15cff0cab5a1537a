package fib

import (
	"math/big"
	"math/bits"
	"runtime"
	"sync"
)

// Decimal returns F(n) in decimal. It panics if n < 0.
//
// For n <= 93 it returns a precomputed string. Above, it is [Compute]
// followed by a divide-and-conquer decimal conversion that uses both cores:
// converting to decimal costs as much as computing F(n) or more, and
// big.Int.String does it on one goroutine.
func Decimal(n int) string {
	if n >= 0 && n <= MaxSmall {
		return smallDec[n]
	}
	par := runtime.GOMAXPROCS(0) > 1
	return formatDecimal(Compute(n), par)
}

// leafDigits is the width below which a piece is converted by math/big's
// own (sequential, already divide-and-conquer) Append. parDigits is the
// width from which the two halves of a split are converted concurrently.
// Both measured on a 2-core machine (see BENCHMARKS.md).
var (
	leafDigits = 2000
	parDigits  = 20000
)

// formatDecimal returns x >= 0 in decimal, using goroutines if par.
//
// x is split as x = hi*10^k + lo with k about half its digits; lo is written
// zero-padded to exactly k digits and both halves are converted recursively
// into disjoint parts of one buffer. Division by 10^k is done as a shift by
// k followed by a division by 5^k, whose divisor is 30% shorter.
// The split points form a ladder k_j = m<<j (8 <= m < 16), so that every
// level reuses the same cached powers of five (see pow5Ladder).
func formatDecimal(x *big.Int, par bool) string {
	if x.Sign() < 0 {
		panic("fib: formatDecimal of a negative number")
	}
	// An upper bound on the number of digits; the extra leading zero, if
	// any, is stripped at the end.
	width := int(float64(x.BitLen())*0.30102999566398120) + 1
	if width <= leafDigits {
		return x.Text(10)
	}
	half := (width + 1) / 2
	e := bits.Len(uint(half)) - 4 // m = ceil(half / 2^e) in [8, 16]
	m := (half + 1<<e - 1) >> e
	if m == 16 {
		m, e = 8, e+1
	}
	ladder := pow5Ladder(m, e)

	buf := make([]byte, width)
	f := formatter{m: m, ladder: ladder, par: par}
	f.convert(buf, x, e)
	i := 0
	for i < len(buf)-1 && buf[i] == '0' {
		i++
	}
	return string(buf[i:])
}

type formatter struct {
	m      int
	ladder []*big.Int // ladder[j] = 5^(m<<j)
	par    bool
}

// convert writes x into dst as exactly len(dst) digits, zero-padded on the
// left. It requires x < 10^len(dst) and len(dst) <= 2*(m<<j).
func (f *formatter) convert(dst []byte, x *big.Int, j int) {
	if len(dst) <= leafDigits || j < 0 {
		leaf(dst, x)
		return
	}
	k := f.m << j
	if k >= len(dst) {
		// The high half would be empty: split at the next rung down.
		f.convert(dst, x, j-1)
		return
	}
	hi, lo := split(x, k, f.ladder[j])
	w := len(dst) - k
	if f.par && len(dst) >= parDigits {
		var wg sync.WaitGroup
		wg.Go(func() { f.convert(dst[:w], hi, j-1) })
		f.convert(dst[w:], lo, j-1)
		wg.Wait()
		return
	}
	f.convert(dst[:w], hi, j-1)
	f.convert(dst[w:], lo, j-1)
}

// split returns hi, lo with x = hi*10^k + lo and 0 <= lo < 10^k, given
// p5 = 5^k: hi, r = (x >> k) divmod 5^k, lo = r<<k | (x mod 2^k).
func split(x *big.Int, k int, p5 *big.Int) (hi, lo *big.Int) {
	hi, lo = new(big.Int), new(big.Int)
	hi.Rsh(x, uint(k))
	hi.QuoRem(hi, p5, lo)
	lo.Lsh(lo, uint(k))
	// OR in the low k bits of x, word by word: lo's low k bits are zero.
	lw, xw := lo.Bits(), x.Bits()
	full, rem := k/bits.UintSize, k%bits.UintSize
	if len(lw) == 0 {
		// lo was zero: it is just x mod 2^k.
		n := min(len(xw), full+1)
		lw = append(lw[:0], xw[:n]...)
		if n == full+1 {
			lw[full] &= 1<<rem - 1
		}
		lo.SetBits(lw) // normalizes
		return hi, lo
	}
	copy(lw[:min(full, len(xw))], xw)
	if rem != 0 && full < len(xw) {
		lw[full] |= xw[full] & (1<<rem - 1)
	}
	return hi, lo
}

// leaf writes x into dst right-aligned and zero-padded.
func leaf(dst []byte, x *big.Int) {
	var scratch [leafScratch]byte
	s := x.Append(scratch[:0], 10)
	if len(s) > len(dst) {
		panic("fib: internal error: piece does not fit its digits")
	}
	pad := len(dst) - len(s)
	for i := range pad {
		dst[i] = '0'
	}
	copy(dst[pad:], s)
}

const leafScratch = 4096

// pow5Cache holds the ladders of powers of five used by formatDecimal,
// keyed by m. Entries are immutable once published, so readers share them
// without copying. Memory stays below about six times the size of the
// largest number formatted so far (8 ladders, each about 0.7 times it).
var pow5Cache struct {
	sync.Mutex
	ladders [16][]*big.Int // ladders[m][j] = 5^(m<<j)
}

// pow5Ladder returns 5^(m<<j) for j = 0..e, extending the cached ladder by
// squaring if needed. The returned slice must not be modified.
func pow5Ladder(m, e int) []*big.Int {
	pow5Cache.Lock()
	defer pow5Cache.Unlock()
	l := pow5Cache.ladders[m]
	if l == nil {
		l = []*big.Int{new(big.Int).Exp(big.NewInt(5), big.NewInt(int64(m)), nil)}
	}
	for len(l) <= e {
		top := l[len(l)-1]
		l = append(l, new(big.Int).Mul(top, top))
	}
	pow5Cache.ladders[m] = l
	return l[:e+1]
}
