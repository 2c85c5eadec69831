#!/bin/sh
# timeout.sh MPIRUN TEST: a rank that stops answering (it sleeps) makes the
# others fail with OPTIM_ECOMM after their timeout (2 s), naming what did not
# complete and the rank that did not answer; they then call MPI_Abort, which
# ends the job.
set -eu
run=$1
t=$2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if timeout 240 "$run" 3 "$t" timeout >"$log" 2>&1; then
    cat "$log"
    echo "FAIL: the job with a stuck rank succeeded" >&2
    exit 1
fi
cat "$log"
grep -q "OPTIM_ECOMM: rank 0 of 3: .* did not complete within 2 s: rank 2 did not answer" "$log" || {
    echo "FAIL: rank 0 did not report the timeout" >&2
    exit 1
}
echo "timeout: passed"
