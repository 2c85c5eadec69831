#!/bin/sh
# sanitize.sh BUILD_DIR [LONG_LOOP_STEPS]: build the library, the tools and
# every C test suite with AddressSanitizer + UndefinedBehaviorSanitizer (the
# default compiler; leaks included) in BUILD_DIR, and run there every C suite
# (label c: the core, gradient, schedule and checkpoint suites and optim lab's
# C tests, whose IDX and gzip parsers need OpenBLAS and zlib, as the normal
# build does) and the long training loop (LONG_LOOP_STEPS steps, default
# 20000: its checkpoint round trips through memory and files, its flat-memory
# check), the examples (label examples: the quick start and the C training
# loop), and the optim command end to end: the lab's quick default report
# (every default experiment, small: the data set's readers, the MLP with
# OpenBLAS, SAM, the run directory and summary.json)
# and a tiny `optim bench`. Any report fails.
#
# sanitize.sh --build-only BUILD_DIR: only configure and build the tree (CTest's
# sanitize.build, a fixture: sanitize.c_suites and python.asan then share it);
# sanitize.sh --no-build BUILD_DIR [STEPS]: only run, in a tree built so.
set -eu
mode=all
case "${1:-}" in
  --build-only) mode=build; shift ;;
  --no-build) mode=run; shift ;;
esac
src=$(cd "$(dirname "$0")/.." && pwd)
out=$1
steps=${2:-20000}
# -g1: line tables only (the sanitizers' stack traces keep their files, lines and functions; what they
# detect does not depend on debug information): the kernel files compile in a fifth less CPU time than with -g.
if [ "$mode" != run ]; then
  cmake -S "$src" -B "$out" -DOPTIM_SANITIZE=address,undefined -DOPTIM_BUILD_TOOLS=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" >/dev/null
  cmake --build "$out" -j 2 >/dev/null
fi
[ "$mode" = build ] && exit 0
if [ ! -f "$out/CMakeCache.txt" ] || ! grep -q '^OPTIM_SANITIZE:.*=address,undefined' "$out/CMakeCache.txt"; then
  echo "sanitize.sh: $out is not a sanitizer tree (run sanitize.sh --build-only $out first)" >&2
  exit 1
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$out"
if ! ctest -N -L '^c$' | grep -q 'c\.lab_'; then
  echo "sanitize.sh: optim lab's C tests are not in the sanitizer build (OpenBLAS or zlib missing?)" >&2
  exit 1
fi
ctest -L '^c$|^examples$' --output-on-failure -j 2
echo "sanitize.sh: the long loop, $steps steps, under ASan + UBSan"
"$out/tests/optim_long_loop" "$steps"
echo "sanitize.sh: optim lab --quick and optim bench, under ASan + UBSan"
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
"$out/tools/optim" lab --quick --no-render --threads 2 --out "$runs/lab" >"$runs/lab.log" 2>&1 || {
  tail -40 "$runs/lab.log" >&2
  exit 1
}
test -s "$runs/lab/summary.json"
"$out/tools/optim" bench --rules adam,sgd:momentum=0.9,adam:clip=1 --sizes 4K,64K --threads 1,all --reps 1 \
  --min-time 0 --quiet >"$runs/bench.log" 2>&1 || {
  cat "$runs/bench.log" >&2
  exit 1
}
