#!/bin/sh
# fuzz.sh BUILD_DIR [SECONDS]: build the checkpoint loader's libFuzzer harness
# with clang (address and undefined-behaviour sanitizers), write a seed corpus
# of valid checkpoints, and fuzz for SECONDS (default 60). Exit 77 (CTest:
# skipped) when clang is missing, 1 under CI (CI=true),
# where `make test` installs them (scripts/deps.sh test).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=$1
secs=${2:-60}
if ! command -v clang >/dev/null 2>&1; then
  exec "$src/scripts/missing.sh" fuzz.sh "clang is not installed (Debian: clang libclang-rt-14-dev)"
fi
cmake -S "$src" -B "$out" -DCMAKE_C_COMPILER=clang -DOPTIM_FUZZ=ON -DOPTIM_BUILD_TESTS=OFF -DOPTIM_BUILD_TOOLS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$out" -j 2 --target fuzz_checkpoint fuzz_checkpoint_corpus >/dev/null
rm -rf "$out/corpus" "$out/crashes"
mkdir -p "$out/corpus" "$out/crashes"
"$out/fuzz/fuzz_checkpoint_corpus" "$out/corpus"
echo "fuzz.sh: seed corpus of $(ls "$out/corpus" | wc -l) checkpoints; fuzzing for ${secs}s"
cd "$out/crashes"
exec "$out/fuzz/fuzz_checkpoint" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  "$out/corpus"
