#!/bin/sh
# run-fib-bench.sh: GMP's mpz_fib_ui + mpz_get_str next to pkg/fib's
# benchmarks, in one run on one machine, so the ratio is meaningful.
#
#   deploy/bench/run-fib-bench.sh [count]     # from the repository root; count defaults to 3
#
# Needs a C compiler and libgmp-dev. Builds into a temporary directory that
# is removed on exit; leaves nothing in the repository.
set -eu

count=${1:-3}
case $count in
'' | *[!0-9]*)
	echo "usage: $0 [count]" >&2
	exit 2
	;;
esac

root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(go version)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

cc -O2 "$root/deploy/bench/gmp_fib.c" -lgmp -o "$tmp/gmp_fib"
echo "# GMP $(printf '#include <gmp.h>\n#include <stdio.h>\nint main(void){puts(gmp_version);return 0;}\n' |
	cc -x c - -lgmp -o "$tmp/gmpver" && "$tmp/gmpver"): mpz_fib_ui + mpz_get_str(10)"
"$tmp/gmp_fib" "$count"

echo "# go test -run='^\$' -bench=. -benchmem -count=$count ./pkg/fib"
cd "$root"
go test -run='^$' -bench=. -benchmem -count="$count" ./pkg/fib

# GMP once more at the end: the machine may be shared, and its load may
# have changed during the Go run.
echo "# GMP again, after the Go benchmarks"
"$tmp/gmp_fib" 1
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
