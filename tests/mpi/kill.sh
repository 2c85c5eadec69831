#!/bin/sh
# kill.sh MPIRUN TEST: a rank killed with SIGKILL mid-run ends the job with a
# message naming it, well within a minute (a generous bound on an outcome on
# a loaded machine, not a speed test); `timeout` stops a hang.
set -eu
run=$1
t=$2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
if timeout 240 "$run" 3 "$t" kill --rank 1 --at 5 >"$log" 2>&1; then
    cat "$log"
    echo "FAIL: the job with a killed rank succeeded" >&2
    exit 1
fi
end=$(date +%s)
cat "$log"
grep -q "rank 1 .*exited on signal 9\|process rank 1" "$log" || { echo "FAIL: no message names rank 1" >&2; exit 1; }
if [ $((end - start)) -gt 60 ]; then
    echo "FAIL: the job took $((end - start)) s to end after rank 1 died" >&2
    exit 1
fi
echo "killed rank: the job ended in $((end - start)) s, naming rank 1"
