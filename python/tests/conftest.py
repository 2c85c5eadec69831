"""Shared pytest setup for optim's Python tests: seeds that can be replayed.

Every random test takes the `seed` (or `rng`) fixture. The run's base seed
comes from $OPTIM_TEST_SEED (a number, or "random" for a fresh one), else a
fixed default, so that the suite is reproducible run to run; it is printed in
the report header, and each test's own seed (derived from the base seed and the
test's id, so that tests are independent of order and selection) is printed
in its captured output, shown when it fails. To replay a failure:

    OPTIM_TEST_SEED=<base seed> /usr/bin/python3 -m pytest python/tests -k <test>

The header also names the CPU path liboptim runs (OPTIM_ISA selects one; a
name the library cannot run is refused here rather than silently replaced
by its fallback) and every path, exercised or not (cpu_paths.py).

Under CI (CI=true in the environment, as .ci/run sets it) a skipped test is a
failure: every dependency of the suite is installed by `make test`
(scripts/deps.sh test), so a skip there means a missing dependency or a
broken import. The one justified skip is a CPU path the machine lacks, whose
reason starts with "not exercised:".

OPTIM_TEST_SAMPLE=k keeps the first, the last and every k-th case of each
parametrized test (run_path.py sets it for the per-CPU-path runs, whose every
variant the C suite already checks bit for bit against the scalar path); the
header says so, and the deselected cases are counted in pytest's summary.
"""
import os
import random
import zlib

import numpy as np
import pytest


DEFAULT_SEED = 20261122


def _base_seed():
    env = os.environ.get("OPTIM_TEST_SEED")
    if env == "random":
        return random.SystemRandom().randrange(2 ** 32)
    if env:
        try:
            return int(env, 0) % 2 ** 32
        except ValueError:
            raise pytest.UsageError("OPTIM_TEST_SEED=%r is not an integer or 'random'" % env) from None
    return DEFAULT_SEED


BASE_SEED = _base_seed()


CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
NOT_EXERCISED = "not exercised:"


def _cpu_report():
    try:
        import cpu_paths
        return cpu_paths.report()
    except Exception as exc:  # the tests that need the library fail on their own
        return "liboptim could not be loaded (%s: %s)" % (type(exc).__name__, exc)


def _sample():
    env = os.environ.get("OPTIM_TEST_SAMPLE", "")
    if not env:
        return 1
    try:
        k = int(env)
    except ValueError:
        k = 0
    if k < 1:
        raise pytest.UsageError("OPTIM_TEST_SAMPLE=%r is not a positive integer" % env)
    return k


def pytest_collection_modifyitems(config, items):
    k = _sample()
    if k == 1:
        return
    by_fn = {}
    for it in items:
        by_fn.setdefault((it.fspath, getattr(it, "originalname", it.name)), []).append(it)
    keep = set()
    for cases in by_fn.values():
        for i, it in enumerate(cases):
            if i % k == 0 or i == len(cases) - 1:
                keep.add(id(it))
    dropped = [it for it in items if id(it) not in keep]
    items[:] = [it for it in items if id(it) in keep]
    config.hook.pytest_deselected(items=dropped)


def pytest_report_header(config):
    k = _sample()
    return ["optim: %s" % ("every case of every parametrized test" if k == 1 else
                           "OPTIM_TEST_SAMPLE=%d: the first, the last and every %dth case of each "
                           "parametrized test" % (k, k)),
            "optim: random seed %d (replay with OPTIM_TEST_SEED=%d)" % (BASE_SEED, BASE_SEED),
            "optim: %s" % _cpu_report(),
            "optim: CI=%s: %s" % (os.environ.get("CI", ""), "a skip is a failure" if CI else "skips allowed")]


def pytest_configure(config):
    asked = os.environ.get("OPTIM_ISA")
    if asked:
        try:
            import cpu_paths
            used = cpu_paths.in_use()
        except Exception:
            return  # no library: the tests say so
        if used != asked:
            raise pytest.UsageError("OPTIM_ISA=%s, but liboptim runs the %s path (this build or CPU lacks %s): "
                                    "these tests would not exercise the path asked for" % (asked, used, asked))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, a skip (pytest.skip, skipif, importorskip) fails the test,
    unless its reason says a CPU path is not exercised."""
    outcome = yield
    rep = outcome.get_result()
    if CI and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
        if not reason.startswith(NOT_EXERCISED):
            rep.outcome = "failed"
            rep.longrepr = ("skipped under CI (CI=%s), which counts as a failure: every dependency of the suite "
                            "is installed by `make test` (scripts/deps.sh test). Reason given: %s"
                            % (os.environ.get("CI"), reason))


@pytest.fixture
def seed(request):
    """This test's seed: a function of the base seed and the test's id."""
    s = (BASE_SEED + zlib.crc32(request.node.nodeid.encode())) % 2 ** 32
    print("seed %d for %s (base seed %d: replay with OPTIM_TEST_SEED=%d)"
          % (s, request.node.nodeid, BASE_SEED, BASE_SEED))
    return s


@pytest.fixture(scope="module")
def module_seed(request):
    """The seed of a module-scoped fixture (one run shared by several tests): a function of the base seed
    and the module's id, printed as the `seed` fixture's are."""
    nodeid = request.node.nodeid + "::module_seed"
    s = (BASE_SEED + zlib.crc32(nodeid.encode())) % 2 ** 32
    print("seed %d for %s (base seed %d: replay with OPTIM_TEST_SEED=%d)" % (s, nodeid, BASE_SEED, BASE_SEED))
    return s


@pytest.fixture
def rng(seed):
    """A numpy Generator seeded with this test's seed."""
    return np.random.default_rng(seed)
