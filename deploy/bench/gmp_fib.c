/*
 * gmp_fib: reference timing of GMP's mpz_fib_ui + mpz_get_str (base 10), the
 * same work pkg/fib's Decimal does, printed in Go benchmark format so the two
 * can be read (or fed to benchstat) side by side.
 *
 *   cc -O2 deploy/bench/gmp_fib.c -lgmp -o /tmp/gmp_fib && /tmp/gmp_fib [count]
 *
 * Each n runs for about 1.5 s after one warm-up call; count repeats the
 * measurement (like go test -count).
 */
#include <gmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* one computes F(n) and its decimal string; returns the length so the work
 * cannot be optimised away. */
static size_t one(unsigned long n) {
	mpz_t f;
	mpz_init(f);
	mpz_fib_ui(f, n);
	char *s = mpz_get_str(NULL, 10, f);
	size_t len = strlen(s);
	void (*freefunc)(void *, size_t);
	mp_get_memory_functions(NULL, NULL, &freefunc);
	freefunc(s, len + 1);
	mpz_clear(f);
	return len;
}

int main(int argc, char **argv) {
	int count = argc > 1 ? atoi(argv[1]) : 1;
	const unsigned long ns[] = {100000, 1000000};
	const double budget = 1.5; /* seconds per measurement */
	size_t sink = 0;
	for (int c = 0; c < count; c++) {
		for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
			unsigned long n = ns[i];
			sink += one(n); /* warm-up */
			long iters = 0;
			double start = now(), elapsed;
			do {
				sink += one(n);
				iters++;
				elapsed = now() - start;
			} while (elapsed < budget);
			printf("BenchmarkGMP/n=%lu-1 \t%8ld\t%12.0f ns/op\n", n, iters,
			       elapsed * 1e9 / iters);
			fflush(stdout);
		}
	}
	if (sink == 0)
		fprintf(stderr, "impossible\n");
	return 0;
}
