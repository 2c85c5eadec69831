#!/bin/sh
# missing.sh TEST WHY: stand in for a test whose dependency is missing. Says so and
# exits 77 (CTest: skipped), or 1 under CI (CI=true), where `make test` has installed
# every dependency (scripts/deps.sh test) and a skip would hide a broken setup.
echo "$1: $2"
case "${CI:-}" in
  true|1|yes) echo "$1: CI=$CI: a missing dependency is a failure"; exit 1 ;;
esac
exit 77
