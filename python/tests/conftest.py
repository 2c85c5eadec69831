"""Shared pytest setup for optim's Python tests: seeds that can be replayed.

Every random test takes the `seed` (or `rng`) fixture. The run's base seed
comes from $OPTIM_TEST_SEED (a number, or "random" for a fresh one), else a
fixed default, so that the suite is reproducible run to run; it is printed in
the report header, and each test's own seed (derived from the base seed and the
test's id, so that tests are independent of order and selection) is printed
in its captured output, shown when it fails. To replay a failure:

    OPTIM_TEST_SEED=<base seed> /usr/bin/python3 -m pytest python/tests -k <test>
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


def pytest_report_header(config):
    return "optim: random seed %d (replay with OPTIM_TEST_SEED=%d)" % (BASE_SEED, BASE_SEED)


@pytest.fixture
def seed(request):
    """This test's seed: a function of the base seed and the test's id."""
    s = (BASE_SEED + zlib.crc32(request.node.nodeid.encode())) % 2 ** 32
    print("seed %d for %s (base seed %d: replay with OPTIM_TEST_SEED=%d)"
          % (s, request.node.nodeid, BASE_SEED, BASE_SEED))
    return s


@pytest.fixture
def rng(seed):
    """A numpy Generator seeded with this test's seed."""
    return np.random.default_rng(seed)
