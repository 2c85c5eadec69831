#!/bin/sh
# mpirun.sh K PROGRAM ARGS...: PROGRAM on K ranks, oversubscribed (CI has 2
# cores), with --allow-run-as-root only when running as root.
set -eu
k=$1
shift
mpiexec=${OPTIM_MPIEXEC:-mpirun}
root=""
# One OpenMP thread per rank: K ranks share 2 cores, and idle OpenMP threads
# spin (the results do not depend on the thread count).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
[ "$(id -u)" -eq 0 ] && root="--allow-run-as-root"
# shellcheck disable=SC2086
exec "$mpiexec" $root --oversubscribe -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -np "$k" "$@"
