#!/bin/sh
# torch_dist_bytes.sh [BUILD]: the bytes torch.distributed (gloo, TCP over the
# loopback interface) moves per training step around optim.torch.AdamW, for
# DistributedDataParallel alone and with ZeroRedundancyOptimizer, on 2, 3 and 4
# ranks (docs/DISTRIBUTED.md, "Python: torch.distributed"). It runs
# examples/ddp_zero.py --bytes, which reads the loopback interface's counter
# (/proc/net/dev: everything on the wire, gloo's and TCP/IP's headers included,
# and any other process's loopback traffic) around 10 steps. Byte counts do not
# depend on the machine's speed or load: this is not a benchmark.
set -eu
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
lib=${OPTIM_LIBRARY:-$here/$build/liboptim.so}
[ -f "$lib" ] || { echo "torch_dist_bytes.sh: build $lib first" >&2; exit 1; }
py=${OPTIM_PYTHON:-/usr/bin/python3}
width=${WIDTH:-1024}
printf "%-6s %-18s %14s %12s %22s\n" ranks role "bytes/step" "/ (4N)" "optimizer state/rank"
for k in 2 3 4; do
    for mode in "ddp" "zero" "zero --bucket-view"; do
        # shellcheck disable=SC2086
        out=$(OPTIM_LIBRARY=$lib PYTHONPATH=$here/python "$py" "$here/examples/ddp_zero.py" --ranks $k \
              --mode $mode --bytes --width "$width" --steps 13)
        bytes=$(echo "$out" | awk '/^loopback:/ {print $2}')
        n=$(echo "$out" | awk '/^loopback:/ {for (i = 1; i <= NF; i++) if ($i == "float32") print $(i-1)}' | tr -d '(;')
        state=$(echo "$out" | sed -n 's/.*optimizer state per rank: \(.*\) bytes.*/\1/p')
        role=$(echo "$mode" | sed 's/ --bucket-view/+buckets/')
        printf "%-6s %-18s %14s %12s %22s\n" "$k" "$role" "$bytes" \
            "$(awk -v b="$bytes" -v n="$n" 'BEGIN {printf "%.3f", b / (4 * n)}')" "$state"
    done
done
echo "model: $n float32 parameters (4N = $((4 * n)) bytes), AdamW, 10 steps counted after 3"
