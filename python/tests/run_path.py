"""Run Python test files on one CPU path of liboptim, in a process of its own:

    /usr/bin/python3 python/tests/run_path.py PATH FILE_OR_NODE...

with OPTIM_ISA=PATH (scalar, avx2, avx512, avx512bf16, neon). CTest runs the key
comparisons with torch this way once per path the build has (tests
python.path.<path>); the process's default path is left to the whole suite
(CTest's python), which runs on it. A path the CPU or the build lacks is not exercised:
said so on the output, exit 77, which CTest shows as a skipped test (a
missing CPU path is a fact of the machine, not a missing dependency, so
this holds under CI too). The suite's conftest.py checks that the path in
use is the one asked for (the library falls back silently otherwise).

The runs on a path sample each parametrized test (OPTIM_TEST_SAMPLE, default
5 here: the first, the last and every fifth case): the C suite checks every
variant of every rule, clipped or not, NaN included, on every path bit for bit
against the scalar path (tests/test_paths.c), so the per-path Python runs
are there to show the binding drives each path, against torch, in a few
minutes."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cpu_paths  # noqa: E402


def main(argv):
    if len(argv) < 3 or argv[1] not in cpu_paths.PATHS:
        sys.stderr.write("usage: run_path.py {%s} FILE_OR_NODE...\n" % ",".join(cpu_paths.PATHS))
        return 2
    path = argv[1]
    have = cpu_paths.available()
    if not have[path]:
        print("CPU path %s: not exercised (this build does not have it or this CPU cannot run it); "
              "paths exercised on this machine: %s" % (path, ", ".join(n for n, ok in have.items() if ok)))
        return 77
    if path == cpu_paths.in_use():
        # Without OPTIM_ISA this is the best path, which the whole suite (CTest's python) runs on.
        print("CPU path %s: the default path of this process, on which the whole Python suite runs "
              "(CTest's test python); not run twice" % path)
        return 0
    print("CPU path %s: running %s" % (path, " ".join(os.path.relpath(a, HERE) for a in argv[2:])))
    sys.stdout.flush()
    env = dict(os.environ, OPTIM_ISA=path)
    env.setdefault("OPTIM_TEST_SAMPLE", "5")
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + argv[2:], env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
