package fib

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestSplitBarrett(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	p := newPair()
	defer p.close()
	for i := 0; i < 400; i++ {
		m, e := 8+r.IntN(8), r.IntN(9)
		k := m << e
		p10 := pow10(k)
		var hi, lo *big.Int
		switch i % 5 {
		case 0: // extremes of the quotient and the remainder
			hi = new(big.Int).Sub(p10, big.NewInt(int64(r.IntN(3)+1)))
			lo = new(big.Int).Sub(p10, big.NewInt(int64(r.IntN(3)+1)))
		case 1:
			hi, lo = big.NewInt(int64(r.IntN(3))), big.NewInt(int64(r.IntN(3)))
		case 2:
			hi, lo = randBelow(r, p10), big.NewInt(0)
		default:
			hi, lo = randBelow(r, p10), randBelow(r, p10)
		}
		x := new(big.Int).Mul(hi, p10)
		x.Add(x, lo)
		for _, pp := range []*pair{nil, p} {
			gh, gl := splitBarrett(x, k, recipFor(m, e), pp.offer2)
			if gh.Cmp(hi) != 0 || gl.Cmp(lo) != 0 {
				t.Fatalf("splitBarrett(k=%d, case %d): got %s, %s; want %s, %s", k, i%5, gh, gl, hi, lo)
			}
		}
	}
}

func BenchmarkSplit(b *testing.B) {
	for _, n := range benchNs[2:] {
		x := Compute(n)
		m, e := splitSize(int(float64(x.BitLen())*0.30102999566398120) + 1)
		k := m << e
		b.Run(benchName(n)+"/QuoRem", func(b *testing.B) {
			for b.Loop() {
				split(x, k, pow5(m, e))
			}
		})
		p := newPair()
		b.Run(benchName(n)+"/Barrett", func(b *testing.B) {
			for b.Loop() {
				splitBarrett(x, k, recipFor(m, e), p.offer2)
			}
		})
		b.Run(benchName(n)+"/Barrett-seq", func(b *testing.B) {
			for b.Loop() {
				splitBarrett(x, k, recipFor(m, e), (*pair)(nil).do2)
			}
		})
		p.close()
	}
}

// TestFormatAdversarial checks the converter, with every split and Barrett
// threshold forced down, on numbers near powers of ten and two, with long
// runs of zeros and nines in the middle, and on random numbers from one word
// to 100k words.
func TestFormatAdversarial(t *testing.T) {
	withSmallThresholds(t)
	var xs []*big.Int
	for _, k := range []int{1, 19, 20, 38, 64, 100, 1000, 5000, 20000, 100000} {
		p10 := pow10(k)
		p2 := new(big.Int).Lsh(big.NewInt(1), uint(k))
		for _, d := range []int64{-1, 0, 1} {
			xs = append(xs, new(big.Int).Add(p10, big.NewInt(d)), new(big.Int).Add(p2, big.NewInt(d)))
		}
		// a*10^m + b with b far below 10^m: a run of zeros (b >= 0) or of
		// nines (b < 0) between a and b.
		r := rand.New(rand.NewPCG(uint64(k), 7))
		a := randBelow(r, pow10(k))
		for _, m := range []int{k / 2, k, 2 * k} {
			for _, b := range []int64{0, 1, -1, 123456789} {
				x := new(big.Int).Mul(a, pow10(m))
				xs = append(xs, x.Add(x, big.NewInt(b)))
			}
		}
	}
	r := rand.New(rand.NewPCG(8, 9))
	sizes := []int{1, 2, 3, 7, 31, 100, 1000, 10000, 100000}
	if testing.Short() {
		sizes = sizes[:len(sizes)-1]
	}
	for _, words := range sizes {
		w := make([]big.Word, words)
		for i := range w {
			w[i] = big.Word(r.Uint64())
		}
		xs = append(xs, new(big.Int).SetBits(w))
	}
	for _, x := range xs {
		if x.Sign() >= 0 {
			checkFormat(t, x)
		}
	}
}

// TestDecimalRandomLarge compares Decimal with big.Int.String for a few
// random n up to 2·10^6 and with Compute for all n up to 3000.
func TestDecimalRandomLarge(t *testing.T) {
	for n := 0; n <= 3000; n++ {
		if got, want := Decimal(n), Compute(n).String(); got != want {
			t.Fatalf("Decimal(%d) = %s; want %s", n, got, want)
		}
	}
	if testing.Short() {
		return
	}
	r := rand.New(rand.NewPCG(10, 11))
	ns := []int{200001, 1 << 20, 2000000}
	for range 3 {
		ns = append(ns, 100000+r.IntN(1900000))
	}
	for _, n := range ns {
		if got, want := Decimal(n), Compute(n).String(); got != want {
			t.Fatalf("Decimal(%d) differs from Compute(%d).String()", n, n)
		}
	}
}

func FuzzFormat(f *testing.F) {
	for _, s := range []string{"", "\x00", "\x01", "\xff", "\x0a\x00\x00\x00\x00\x00\x00\x00\x00", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"} {
		f.Add([]byte(s))
	}
	f.Add(pow10(100).Bytes())
	f.Add(new(big.Int).Sub(pow10(300), big.NewInt(1)).Bytes())
	f.Add(Compute(1000).Bytes())
	d, bd := splitDigits, barrettMinDigits
	splitDigits, barrettMinDigits = 2, 0
	defer func() { splitDigits, barrettMinDigits = d, bd }()
	f.Fuzz(func(t *testing.T, b []byte) {
		x := new(big.Int).SetBytes(b)
		want := x.String()
		for _, par := range []bool{false, true} {
			if got := formatWith(x, par); got != want {
				t.Fatalf("formatDecimal(%s, par=%v) = %s", want, par, got)
			}
		}
	})
}
