package fib

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

// withSmallThresholds makes formatDecimal split small numbers too.
func withSmallThresholds(t *testing.T) {
	t.Helper()
	d, bd := splitDigits, barrettMinDigits
	splitDigits, barrettMinDigits = 2, 0
	t.Cleanup(func() { splitDigits, barrettMinDigits = d, bd })
}

func pow10(k int) *big.Int {
	return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(k)), nil)
}

func checkFormat(t *testing.T, x *big.Int) {
	t.Helper()
	want := x.String()
	for _, par := range []bool{false, true} {
		if got := formatWith(x, par); got != want {
			t.Fatalf("formatDecimal(par=%v) of a %d-digit number:\n got %s\nwant %s", par, len(want), got, want)
		}
	}
}

// Numbers with long runs of zeros (or nines) in the low half are where a
// missing zero-padding of the low piece shows up.
func TestFormatPowersOfTen(t *testing.T) {
	for _, small := range []bool{false, true} {
		if small {
			withSmallThresholds(t)
		}
		ks := []int{0, 1, 2, 5, 9, 10, 18, 19, 20, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 1000, 1999, 2000, 2001, 4095, 4096, 4097, 10007, 40000}
		for _, k := range ks {
			p := pow10(k)
			for _, d := range []int64{-1, 0, 1, 7} {
				x := new(big.Int).Add(p, big.NewInt(d))
				if x.Sign() < 0 {
					continue
				}
				checkFormat(t, x)
				// 10^k * 10^(k/2) + small: zeros in the middle.
				y := new(big.Int).Mul(x, pow10(k/2+1))
				checkFormat(t, y.Add(y, big.NewInt(3)))
			}
		}
	}
}

func TestFormatRandom(t *testing.T) {
	withSmallThresholds(t)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		bitsLen := 1 + r.IntN(20000)
		words := make([]big.Word, (bitsLen+63)/64)
		for j := range words {
			words[j] = big.Word(r.Uint64())
			// Sprinkle zero words, which make zero digit runs likely.
			if r.IntN(3) == 0 {
				words[j] = 0
			}
		}
		x := new(big.Int).SetBits(words)
		checkFormat(t, x)
	}
	checkFormat(t, new(big.Int))
}

func TestFormatFibonacci(t *testing.T) {
	withSmallThresholds(t)
	for _, n := range []int{94, 95, 200, 1000, 2047, 2048, 2049, 12345} {
		checkFormat(t, Compute(n))
	}
}

func TestSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		k := 1 + r.IntN(300)
		hi := randBelow(r, pow10(1+r.IntN(300)))
		lo := randBelow(r, pow10(k))
		if i%4 == 0 {
			lo.SetInt64(int64(i)) // mostly zero low half
		}
		x := new(big.Int).Mul(hi, pow10(k))
		x.Add(x, lo)
		p5 := new(big.Int).Exp(big.NewInt(5), big.NewInt(int64(k)), nil)
		gh, gl := split(x, k, p5)
		if gh.Cmp(hi) != 0 || gl.Cmp(lo) != 0 {
			t.Fatalf("split(k=%d): got %s, %s; want %s, %s", k, gh, gl, hi, lo)
		}
	}
}

// randBelow returns a random number in [0, max).
func randBelow(r *rand.Rand, max *big.Int) *big.Int {
	words := make([]big.Word, len(max.Bits()))
	for i := range words {
		words[i] = big.Word(r.Uint64())
	}
	x := new(big.Int).SetBits(words)
	return x.Mod(x, max)
}
