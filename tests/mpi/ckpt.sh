#!/bin/sh
# ckpt.sh MPIRUN TEST OPTIM DIR: sharded checkpoints across runs of different
# sizes. Every resumed run compares each step with one process replaying the
# whole history (mpi_test.c), bit for bit.
set -eu
run=$1
t=$2
optim=$3
base=$4
rm -rf "$base"
mkdir -p "$base"
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() { echo "== $*"; }

step "2 ranks (stage 2) -> 3 ranks (stage 1, other buckets)"
"$run" 2 "$t" save --dir "$base/a" --steps 12 --stage 2 --rule adam-amsgrad-clip3
"$run" 3 "$t" resume --dir "$base/a" --from 12 --old-ranks 2 --steps 8 --stage 1 --rule adam-amsgrad-clip3 --bucket 131072

step "3 ranks (stage 1, SAM) -> 2 ranks (stage 2)"
"$run" 3 "$t" save --dir "$base/b" --steps 10 --stage 1 --rule sam-adam-clip
"$run" 2 "$t" resume --dir "$base/b" --from 10 --old-ranks 3 --steps 8 --stage 2 --rule sam-adam-clip

step "3 ranks -> one process: optim ckpt merge, then optim_load"
"$optim" ckpt info "$base/b"
"$optim" ckpt merge "$base/b" "$base/b.ckpt"
"$run" 1 "$t" plain --ckpt "$base/b.ckpt" --dir "$base/b" --from 10 --old-ranks 3 --steps 8 --rule sam-adam-clip
"$run" 1 "$t" merge --dir "$base/a" --out "$base/a.ckpt"
"$run" 1 "$t" plain --ckpt "$base/a.ckpt" --dir "$base/a" --from 12 --old-ranks 2 --steps 6 --rule adam-amsgrad-clip3

step "3 ranks -> 1 rank with optim_mpi_load; stage 0 (one shard) -> 3 ranks"
"$run" 1 "$t" resume --dir "$base/b" --from 10 --old-ranks 3 --steps 5 --stage 1 --rule sam-adam-clip
"$run" 2 "$t" save --dir "$base/c" --steps 9 --stage 0 --rule nadam-clip0.5
"$run" 3 "$t" resume --dir "$base/c" --from 9 --old-ranks 2 --steps 6 --stage 2 --rule nadam-clip0.5

step "a save that dies before its manifest leaves the previous checkpoint, which a restart resumes"
"$run" 2 "$t" save --dir "$base/d" --steps 6 --stage 1 --rule sgd-nesterov-clip2
if "$run" 2 "$t" save --dir "$base/d" --steps 11 --stage 1 --rule sgd-nesterov-clip2 --crash-before-manifest \
    >"$base/crash.log" 2>&1; then
    fail "the save that crashes succeeded"
fi
[ "$(ls "$base/d" | grep -c '^shard-')" -eq 4 ] || fail "the crashed save left no shards: $(ls "$base/d")"
"$run" 3 "$t" resume --dir "$base/d" --from 6 --old-ranks 2 --steps 5 --stage 1 --rule sgd-nesterov-clip2
"$optim" ckpt info "$base/d" | grep -q "save s6-" || fail "optim ckpt info does not show the step-6 save"
# The next complete save removes the dead one's shards.
"$run" 2 "$t" save --dir "$base/d" --steps 7 --stage 1 --rule sgd-nesterov-clip2
[ "$(ls "$base/d" | grep -c '^shard-')" -eq 2 ] || fail "older shards left after a complete save: $(ls "$base/d")"

step "incomplete or damaged checkpoints are refused, named; nothing changes"
if "$run" 2 "$t" save --dir "$base/e" --steps 4 --stage 2 --crash-before-manifest >"$base/crash2.log" 2>&1; then
    fail "the save that crashes succeeded"
fi
"$run" 2 "$t" load-fails --dir "$base/e" --expect "has no manifest: no complete checkpoint there; it holds the shards of a save that did not finish: save s4-"
"$run" 2 "$t" load-fails --dir "$base/nothing" --expect "no checkpoint there"
cp -r "$base/a" "$base/f"
# One byte of the manifest changed.
sed -i 's/^rule adam$/rule adan/' "$base/f/manifest"
grep -q "^rule adan$" "$base/f/manifest" || fail "the manifest was not damaged"
"$run" 2 "$t" load-fails --dir "$base/f" --expect "checksum mismatch: the manifest is corrupt"
cp -r "$base/a" "$base/g"
rm "$base"/g/shard-00001-of-00002.*
"$run" 2 "$t" load-fails --dir "$base/g" --expect "shard of rank 1 of 2"
if "$optim" ckpt info "$base/g" >"$base/info.log"; then fail "optim ckpt info called an incomplete checkpoint complete"; fi
grep -q "INCOMPLETE: 1 shard file missing" "$base/info.log" || fail "optim ckpt info: $(cat "$base/info.log")"
if "$optim" ckpt merge "$base/e" "$base/e.ckpt" 2>"$base/merge.log"; then fail "merged an incomplete checkpoint"; fi
grep -q "has no manifest" "$base/merge.log" || fail "optim ckpt merge: $(cat "$base/merge.log")"
echo "checkpoints: passed"
