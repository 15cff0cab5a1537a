package fib

import (
	"math/big"
	"math/bits"
	"sync"
)

// Barrett division for the top-level split of formatDecimal.
//
// big.Int.QuoRem is sequential: while it runs (3.8–4.4 ms for F(10^6)) the
// second core idles. With a reciprocal of 5^k computed once per split size
// and cached, the quotient and the remainder each come from one product,
// and each product is cut in two roughly equal parts that run on the two
// goroutines of a pair. Only the parts of the products that matter are
// computed: the high part of N·inv (a truncated product, one more unit of
// error) and the low part of q·5^k (the remainder is known to be small).

// barrettMinDigits is the split size (in digits) from which formatDecimal
// uses splitBarrett instead of split.
var barrettMinDigits = 5000

// Balance of the two halves of each product (fractions of the operand
// sizes), tuned on a 2-core machine.
var (
	barrettInvCut = 0.62 // share of inv's bits in the low part of N1·inv
	barrettQCut   = 0.40 // share of 5^k's bits taken from q as its low part of q·5^k
)

// recip is 5^k with its Barrett reciprocal for one split size k.
type recip struct {
	p5  *big.Int // 5^k, bp bits
	inv *big.Int // floor(2^(bp+lq) / 5^k), at most lq+1 bits
	bp  int      // bit length of 5^k
	lq  int      // bp + k: any quotient x / 10^k with x < 10^(2k) is < 2^lq
}

// recipCache maps k to its recip. Like pow5Cache it only holds split sizes
// k = m<<e (see splitSize) that were used, each about 1.4 times the size of 5^k.
var recipCache struct {
	sync.Mutex
	m map[int]*recip
}

// recipFor returns the cached reciprocal for k = m<<e, computing it if
// needed (one division, done once per size). It must not be modified.
func recipFor(m, e int) *recip {
	k := m << e
	recipCache.Lock()
	r := recipCache.m[k]
	recipCache.Unlock()
	if r != nil {
		return r
	}
	p5 := pow5(m, e)
	bp := p5.BitLen()
	r = &recip{p5: p5, bp: bp, lq: bp + k}
	pow := new(big.Int).Lsh(big.NewInt(1), uint(bp+r.lq))
	r.inv = pow.Quo(pow, p5)
	recipCache.Lock()
	if recipCache.m == nil {
		recipCache.m = make(map[int]*recip)
	}
	if old := recipCache.m[k]; old != nil {
		r = old // someone else got there first
	} else {
		recipCache.m[k] = r
	}
	recipCache.Unlock()
	return r
}

// words returns the words of x as a read-only big.Int view of words
// [from, to) (to is clipped to len(x)); it shares x's backing array.
func words(x *big.Int, from, to int) *big.Int {
	w := x.Bits()
	to = min(to, len(w))
	if from >= to {
		return new(big.Int)
	}
	return new(big.Int).SetBits(w[from:to:to])
}

// splitBarrett is split (x = hi*10^k + lo, 0 <= lo < 10^k) with the
// quotient and remainder products each cut in two parts run by run (a pair's
// do2 or offer2, or a nil pair's: sequentially). It requires x < 10^(2k), which
// splitSize guarantees (k >= half the width).
func splitBarrett(x *big.Int, k int, r *recip, run func(a, b func())) (hi, lo *big.Int) {
	const W = bits.UintSize
	n := new(big.Int).Rsh(x, uint(k)) // hi, lo' = n divmod 5^k
	// q ≈ floor(n1*inv / 2^T) with n1 = n >> (bp-1) < 2^T.
	// Cut inv = ih*2^s + il and n1 = nh*2^t + nl (word-aligned, s+t <= T)
	// and drop nl*il < 2^T: with the reciprocal's own error, q-3 <= q <= hi.
	T := r.lq + 1
	n1 := new(big.Int).Rsh(n, uint(r.bp-1))
	sw := int(float64(T)*barrettInvCut) / W
	tw := (T - sw*W) / W
	a, b := new(big.Int), new(big.Int)
	ih, il := words(r.inv, sw, 1<<62), words(r.inv, 0, sw)
	nh := words(n1, tw, 1<<62)
	run(func() { a.Mul(n1, ih) }, func() { b.Mul(nh, il) })
	// q = (a*2^s + b*2^t) >> T, with s >= t or not.
	s, t := sw*W, tw*W
	if s >= t {
		a.Lsh(a, uint(s-t))
		a.Add(a, b)
		hi = a.Rsh(a, uint(T-t))
	} else {
		b.Lsh(b, uint(t-s))
		b.Add(a, b)
		hi = b.Rsh(b, uint(T-s))
	}

	// rem = n - hi*5^k is in [0, 4*5^k): compute it mod 2^R, R >= bp+2,
	// from the low R bits of hi*5^k = ql*5^k + (qh*5^k)<<u.
	rw := (r.bp+2)/W + 1
	uw := min(int(float64(r.bp)*barrettQCut)/W, len(hi.Bits()))
	c, d := new(big.Int), new(big.Int)
	ql, qh := words(hi, 0, uw), words(hi, uw, rw)
	p5l := words(r.p5, 0, rw-uw)
	run(func() { c.Mul(ql, r.p5) }, func() { d.Mul(qh, p5l) })
	d.Lsh(d, uint(uw*W))
	c.Add(c, d)
	rem := new(big.Int).Set(words(n, 0, rw))
	rem.Sub(rem, words(c, 0, rw))
	if rem.Sign() < 0 {
		rem.Add(rem, new(big.Int).Lsh(big.NewInt(1), uint(rw*W)))
	}
	for rem.Cmp(r.p5) >= 0 {
		rem.Sub(rem, r.p5)
		hi.Add(hi, one)
	}
	return hi, joinLow(rem, x, k)
}

var one = big.NewInt(1)
