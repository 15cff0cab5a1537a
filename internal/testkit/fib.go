package testkit

import "math/big"

// Fib is F(n) by plain additions: slow, obviously right, and independent of pkg/fib, so tests
// of pkg/fib and of the whole gateway can check answers against it.
func Fib(n int) *big.Int {
	a, b := big.NewInt(0), big.NewInt(1)
	for range n {
		a.Add(a, b)
		a, b = b, a
	}
	return a
}
