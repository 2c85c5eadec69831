#!/bin/sh
# sanitize.sh BUILD_DIR: build the library and the C test suites with
# AddressSanitizer + UndefinedBehaviorSanitizer (the default compiler; leaks
# included) in BUILD_DIR, and run every C suite there. Any report fails.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=$1
cmake -S "$src" -B "$out" -DOPTIM_SANITIZE=address,undefined -DOPTIM_BUILD_TOOLS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >/dev/null
cmake --build "$out" -j 2 >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$out"
exec ctest -L c --output-on-failure -j 2
