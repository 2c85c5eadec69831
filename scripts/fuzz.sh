#!/bin/sh
# fuzz.sh BUILD_DIR [SECONDS]: build the checkpoint's libFuzzer harnesses with
# clang (address and undefined-behaviour sanitizers), write their seed corpora
# of valid checkpoints and schedules, and fuzz for SECONDS in all (default
# 60), shared between the harnesses, one per decoder entry point:
#   fuzz_checkpoint     the whole load (optim_load_buffer, optim_load, into optimizers): half
#   fuzz_ckpt_decode    the format's decoder alone, bytes to a plan: a quarter
#   fuzz_ckpt_schedule  the schedule decoder alone, bytes to a schedule, evaluated: a quarter
# Exit 77 (CTest: skipped) when clang or its fuzzer runtime is missing, but
# under CI (CI=true), where scripts/deps.sh installs them, that is a failure.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=$1
secs=${2:-60}
if ! command -v clang >/dev/null 2>&1; then
  exec "$src/scripts/missing.sh" fuzz.sh "clang is not installed (Debian: clang libclang-rt-14-dev)"
fi
cmake -S "$src" -B "$out" -DCMAKE_C_COMPILER=clang -DOPTIM_FUZZ=ON -DOPTIM_BUILD_TESTS=OFF -DOPTIM_BUILD_TOOLS=OFF \
  -DOPTIM_SIMD=OFF -DOPTIM_MUON=ON -DOPTIM_MPI=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$out" -j 2 --target fuzz_checkpoint fuzz_ckpt_decode fuzz_ckpt_schedule fuzz_checkpoint_corpus >/dev/null
rm -rf "$out/corpus" "$out/corpus-schedule" "$out/crashes"
mkdir -p "$out/corpus" "$out/corpus-schedule" "$out/crashes"
"$out/fuzz/fuzz_checkpoint_corpus" "$out/corpus" "$out/corpus-schedule"
echo "fuzz.sh: seed corpora of $(ls "$out/corpus" | wc -l) checkpoints and $(ls "$out/corpus-schedule" | wc -l)" \
  "schedules; fuzzing for ${secs}s in all"
half=$((secs / 2))
quarter=$(((secs - half) / 2))
rest=$((secs - half - quarter))
cd "$out/crashes"
run() { # harness seconds corpus
  echo "fuzz.sh: $1 for $2s"
  "$out/fuzz/$1" -max_total_time="$2" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$3"
}
run fuzz_checkpoint "$half" "$out/corpus"
run fuzz_ckpt_decode "$quarter" "$out/corpus"
run fuzz_ckpt_schedule "$rest" "$out/corpus-schedule"
