package fib

import (
	"math/big"
	"math/bits"
	"strings"
	"sync"
)

// Decimal returns F(n) in decimal. It panics if n < 0.
//
// For n <= 93 it returns a precomputed string. Above, it is [Compute]
// followed by a decimal conversion that uses two cores: converting to
// decimal costs more than computing F(n), and big.Int.String does it on one
// goroutine.
func Decimal(n int) string {
	if n >= 0 && n <= MaxSmall {
		return smallDec[n]
	}
	if n < parMinN {
		return Compute(n).String()
	}
	p := acquirePair()
	defer p.release()
	return formatDecimal(compute(n, p), p)
}

// splitDigits is the number of digits from which formatDecimal splits the
// number in two and converts the halves on both goroutines of a pair.
var splitDigits = 8000

// waitDigits is the number of digits from which formatDecimal splits the
// number even if the helper is not polling yet: the conversion is long
// enough (several ms) for the helper's wake-up to pay off.
var waitDigits = 100000

// formatDecimal returns x >= 0 in decimal, converting two halves at once on p.
//
// x is split as x = hi*10^k + lo with k about half its digits; lo is then
// zero-padded to exactly k digits. Each half is converted by math/big's own
// divide-and-conquer (sequential) code, which is faster than a hand-written
// recursion on top of big.Int. The division by 10^k is done as a shift by k
// and a division by 5^k, whose divisor is 30% shorter (about 8% faster);
// for large k the division is a Barrett division whose products run on both
// goroutines (see splitBarrett).
func formatDecimal(x *big.Int, p *pair) string {
	if x.Sign() < 0 {
		panic("fib: formatDecimal of a negative number")
	}
	// An upper bound on the number of digits.
	width := int(float64(x.BitLen())*0.30102999566398120) + 1
	if p == nil || width < splitDigits || !p.ready() && width < waitDigits {
		return x.Text(10)
	}
	run := p.do2 // to the helper only if it is polling
	if width >= waitDigits {
		run = p.offer2 // long enough to be worth waking it
	}
	m, e := splitSize(width)
	k := m << e
	var hi, lo *big.Int
	if k >= barrettMinDigits {
		hi, lo = splitBarrett(x, k, recipFor(m, e), run)
	} else {
		hi, lo = split(x, k, pow5(m, e))
	}

	var hs, ls []byte
	run(func() { hs = hi.Append(nil, 10) }, func() { ls = lo.Append(nil, 10) })
	if len(ls) > k {
		panic("fib: internal error: low half longer than its digits")
	}
	if hi.Sign() == 0 {
		return string(ls)
	}
	var sb strings.Builder
	sb.Grow(len(hs) + k)
	sb.Write(hs)
	for range k - len(ls) {
		sb.WriteByte('0')
	}
	sb.Write(ls)
	return sb.String()
}

// splitSize returns the split point k = m<<e >= half the width, 16 <= m < 32
// (for widths of 32 and more), so that only a few distinct powers of five are
// ever needed (see pow5), while k stays within 1/16 of the half: the
// conversion of the low half, which has k digits, is not much longer than
// the high half's.
func splitSize(width int) (m, e int) {
	half := (width + 1) / 2
	e = max(bits.Len(uint(half))-splitBits, 0)
	m = (half + 1<<e - 1) >> e
	if m == 1<<splitBits {
		m, e = m/2, e+1
	}
	return m, e
}

// splitBits is the number of significant bits of a split size.
const splitBits = 5

// split returns hi, lo with x = hi*10^k + lo and 0 <= lo < 10^k, given
// p5 = 5^k: hi, r = (x >> k) divmod 5^k, lo = r<<k | (x mod 2^k).
func split(x *big.Int, k int, p5 *big.Int) (hi, lo *big.Int) {
	hi, lo = new(big.Int), new(big.Int)
	hi.Rsh(x, uint(k))
	hi.QuoRem(hi, p5, lo)
	return hi, joinLow(lo, x, k)
}

// joinLow returns r<<k | (x mod 2^k), reusing r: the low part of x = hi*10^k
// + lo given r = (x>>k) mod 5^k.
func joinLow(lo, x *big.Int, k int) *big.Int {
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
		return lo.SetBits(lw) // normalizes
	}
	copy(lw[:min(full, len(xw))], xw)
	if rem != 0 && full < len(xw) {
		lw[full] |= xw[full] & (1<<rem - 1)
	}
	return lo
}

// pow5Cache holds 5^(m<<j) for j = 0, 1, ... for each m, computed by
// repeated squaring. Entries are immutable once published, so readers share
// them without copying. For a given largest formatted number X, the memory
// stays below about 16 * 0.7 * size(X) (16 values of m, each ladder summing to
// about 0.7 times X's size): under 1 MB for F(10^6).
var pow5Cache struct {
	sync.Mutex
	ladders [1 << splitBits][]*big.Int
}

// pow5 returns 5^(m<<e), 1 <= m < 1<<splitBits, computing and caching it if needed.
// The result must not be modified.
func pow5(m, e int) *big.Int {
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
	return l[e]
}
