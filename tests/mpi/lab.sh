#!/bin/sh
# lab.sh MPIRUN OPTIM DIR: `optim lab fashion-mnist --distributed` on 2 ranks
# (quick configuration): the run directory and summary.json as the lab writes
# them, with the distributed facts, and accuracies equal to one process's.
set -eu
run=$1
optim=$2
dir=$3
rm -rf "$dir" "$dir.data"
mkdir -p "$dir.data"
# A small learnable data set in Fashion-MNIST's format (as python/tests/test_lab.py makes), so that the
# test needs no data package: each class a bright bar at its own place, plus noise.
/usr/bin/python3 - "$dir.data" <<'PY'
import gzip, struct, sys
import numpy as np
rng = np.random.default_rng(12345)
for prefix, n in (("train", 1200), ("t10k", 400)):
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 90, (n, 28, 28)).astype(np.int32)
    for i, c in enumerate(y):
        x[i, 2 + 2 * int(c):5 + 2 * int(c), 4:24] += 150
    x = np.clip(x, 0, 255).astype(np.uint8)
    with gzip.open("%s/%s-images-idx3-ubyte.gz" % (sys.argv[1], prefix), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
    with gzip.open("%s/%s-labels-idx1-ubyte.gz" % (sys.argv[1], prefix), "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + y.tobytes())
PY
"$run" 2 "$optim" lab fashion-mnist --distributed --zero 1 --quick --no-render --out "$dir" --optimizers adam,sam \
    --data "$dir.data" --dataset fashion-mnist
/usr/bin/python3 - "$dir/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["status"] == "complete", s["status"]
d = s["distributed"]
assert d["ranks"] == 2 and d["zero_stage"] == 1, d
for o in ("adam", "sam"):
    per_rank = d["state_bytes_per_rank"][o]
    one = d["state_bytes_one_process"][o]
    assert len(per_rank) == 2 and sum(per_rank) == one, (o, per_rank, one)  # ZeRO-1: the ranks share the state
    assert max(per_rank) < one, (o, per_rank, one)
    acc = s["fashion_mnist"][o]["test_accuracy"]
    ref = d["one_process"][o]["test_accuracy"]
    assert abs(acc - ref) <= 0.01, (o, acc, ref)
    assert d["runs"][o]["bytes_per_reduction"]["reduce_scatter"] > 0
assert d["finding"]["held"] is True
print("lab --distributed: summary.json holds", sorted(d))
PY
# Misuse is refused before anything runs.
if "$optim" lab sam --distributed >/dev/null 2>&1; then echo "FAIL: --distributed accepted for sam" >&2; exit 1; fi
if "$optim" lab fashion-mnist --zero 1 >/dev/null 2>&1; then echo "FAIL: --zero accepted alone" >&2; exit 1; fi
echo "lab --distributed: passed"
