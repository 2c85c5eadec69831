#!/bin/sh
# sanitize_python.sh BUILD_DIR [PYTHON]: build liboptim with AddressSanitizer +
# UndefinedBehaviorSanitizer in BUILD_DIR (the library only), and run the
# Python tests that exercise the binding's memory under it: the binding's own
# tests (test_memory: tensors without memory, storages replaced by threads
# during calls, SAM's memory and lifetimes, paths; test_binding), SAM,
# checkpoints, the tensor errors, the state views, LBFGS's parameters and
# state changed between its C calls, and the int8 state attacks
# (test_torch_int8_attacks, but its subprocess runs). Any report fails.
#
# The interpreter is not built with ASan, so the runtime is preloaded (the one
# the library links, as ldd shows it) with libstdc++ (torch throws C++
# exceptions, whose interceptor needs the real __cxa_throw at start-up).
# PYTHONMALLOC=malloc gives every Python object its own malloc block, so that
# ASan also sees reads past small ctypes objects. Leak detection is off:
# CPython keeps memory until exit by design. pytest captures only sys.stdout
# and sys.stderr (--capture=sys), so that a report written to fd 2 is shown.
#
# sanitize_python.sh --no-build BUILD_DIR [PYTHON]: use the library of a tree
# that scripts/sanitize.sh --build-only built (CTest's python.asan shares the
# sanitize.build fixture's tree with sanitize.c_suites: one ASan build, not two).
set -eu
build=1
if [ "${1:-}" = --no-build ]; then
  build=0
  shift
fi
src=$(cd "$(dirname "$0")/.." && pwd)
out=$1
python=${2:-/usr/bin/python3}
if [ "$build" = 1 ]; then
  cmake -S "$src" -B "$out" -DOPTIM_SANITIZE=address,undefined -DOPTIM_BUILD_TOOLS=OFF -DOPTIM_BUILD_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" >/dev/null
  cmake --build "$out" -j 2 --target optim_shared >/dev/null
fi
lib="$out/liboptim.so"
if [ ! -f "$lib" ]; then
  echo "sanitize_python.sh: $lib is missing (build the tree first: scripts/sanitize.sh --build-only $out)" >&2
  exit 1
fi
asan=$(ldd "$lib" | awk '/libasan|libclang_rt\.asan/ {print $3; exit}')
stdcxx=$(ldd "$lib" | awk '/libstdc\+\+/ {print $3; exit}')
if [ -z "$stdcxx" ]; then
  stdcxx=$(ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64|libstdc\+\+\.so\.6 .*AArch64/ {print $NF; exit}')
fi
if [ -z "$asan" ] || [ ! -f "$asan" ]; then
  echo "sanitize_python.sh: $lib does not link an AddressSanitizer runtime" >&2
  exit 1
fi
export LD_PRELOAD="$asan${stdcxx:+ $stdcxx}"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONMALLOC=malloc
export OPTIM_LIBRARY="$lib" PYTHONPATH="$src/python" PYTHONDONTWRITEBYTECODE=1
tests="$src/python/tests"
cd "$src"
"$python" -m pytest -q -p no:cacheprovider --capture=sys "$tests/test_memory.py" "$tests/test_binding.py" \
  "$tests/test_sam.py" "$tests/test_checkpoint.py" "$tests/test_torch_errors.py" "$tests/test_torch_sparse.py" \
  "$tests/test_lbfgs_memory.py"
"$python" -m pytest -q -p no:cacheprovider --capture=sys "$tests/test_torch_state_dtype.py" \
  -k "lifetime or in_memory or round_trips or dequantize or loads_across"
"$python" -m pytest -q -p no:cacheprovider --capture=sys "$tests/test_torch_int8_attacks.py" -k "not simd_paths"
"$python" -m pytest -q -p no:cacheprovider --capture=sys "$tests/test_torch_state.py" \
  -k "views or bad_loads or reset or step_counts or copies or before_the_first or momentum_buffer or amsgrad"
