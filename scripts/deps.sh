#!/bin/sh
# deps.sh GROUP...: make sure the Debian packages a make target needs are
# installed; installs the missing ones with apt-get when run as root, or says
# which to install otherwise.
#   build: compiler, CMake, OpenMP (in gcc), OpenBLAS and zlib for the optim command, Open MPI for
#          liboptim_mpi and `optim lab --distributed` (built when CMake finds MPI)
#   test:  Debian's Python with torch, numpy, pytest; clang for the fuzzer and sanitizers; valgrind;
#          Open MPI's mpirun for the tests of liboptim_mpi (label mpi); and what the lab's tests run on
#          (matplotlib, Fashion-MNIST, sklearn's digits); pip, setuptools, venv and dpkg-dev for the
#          install tests (label install: pip install ., cpack -G DEB): under CI (CI=true) a test skipped for a
#          missing dependency fails, so the test target installs them all
#   run:   matplotlib for the report's figures, Fashion-MNIST and the sklearn data sets
set -eu
pkgs=""
for group in "$@"; do
  case "$group" in
    build) pkgs="$pkgs build-essential cmake pkg-config libopenblas-dev zlib1g-dev openmpi-bin libopenmpi-dev" ;;
    test)  pkgs="$pkgs python3 python3-torch python3-numpy python3-pytest clang libclang-rt-14-dev valgrind openmpi-bin libopenmpi-dev"
           pkgs="$pkgs git python3-pip python3-setuptools python3-wheel python3-venv dpkg-dev" # tests/install: pip install ., cpack -G DEB
           pkgs="$pkgs python3-matplotlib dataset-fashion-mnist python3-sklearn" ;;
    run)   pkgs="$pkgs python3 python3-numpy python3-matplotlib dataset-fashion-mnist python3-sklearn" ;;
    *) echo "deps.sh: unknown group '$group' (build, test, run)" >&2; exit 2 ;;
  esac
done
missing=""
for p in $pkgs; do
  case " $missing " in *" $p "*) continue ;; esac
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages:$missing" >&2
  echo "Install them with: sudo apt-get install -y$missing" >&2
  exit 1
fi
echo "Installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
