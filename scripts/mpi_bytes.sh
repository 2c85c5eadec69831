#!/bin/sh
# mpi_bytes.sh [BUILD]: the bytes liboptim_mpi communicates per step, for each
# stage and 2 and 4 ranks, on loopback TCP (docs/DISTRIBUTED.md). Byte counts
# do not depend on the machine's speed or load: this is not a benchmark.
#   payload: what each rank's collectives must receive (counted by liboptim_mpi)
#   lo:      the loopback interface's counter (/proc/net/dev) around the steps,
#            with MPI forced onto TCP over lo: everything on the wire
set -eu
build=${1:-build}
exe=$build/examples/train_mpi
[ -x "$exe" ] || { echo "mpi_bytes.sh: build $exe first (cmake finds MPI)" >&2; exit 1; }
root=""
[ "$(id -u)" -eq 0 ] && root="--allow-run-as-root"
params=${PARAMS:-4000000}
echo "model: $params float32 parameters in 20 tensors, AdamW with clip_grad_norm, 16 MiB buckets, 5 steps"
printf "%-6s %-6s %16s %16s %16s %10s\n" ranks stage "payload/rank" "payload total" "lo total" "state/rank"
for k in 2 4; do
    for s in 0 1 2; do
        # shellcheck disable=SC2086
        out=$(OMP_NUM_THREADS=1 mpirun $root --oversubscribe -x OMP_NUM_THREADS -np $k \
            --mca btl tcp,self --mca btl_tcp_if_include lo \
            "$exe" --stage $s --params "$params" --tensors 20 --steps 5 --lo)
        per=$(echo "$out" | awk '/^rank 0:/ {for (i = 1; i <= NF; i++) if ($i ~ /^(reduce-scatter|all-gather|control)$/) s += $(i+1); print s}')
        state=$(echo "$out" | awk '/^rank 0:/ {for (i = 1; i <= NF; i++) if ($i == "state") print $(i+1)}')
        total=$(echo "$out" | awk '/payload received per step, all ranks/ {print $(NF-1)}')
        lo=$(echo "$out" | awk '/loopback interface per step/ {print $(NF-1)}')
        printf "%-6s %-6s %16s %16s %16s %10s\n" "$k" "$s" "$per" "$total" "$lo" "$state"
    done
done
