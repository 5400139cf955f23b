"""Shared fixtures: every ISA path this machine can run, and a seeded RNG.

`isa` parametrizes a test over scalar/avx2/avx512/neon; paths this CPU cannot run are reported
as skipped (never as passed). The active path is switched in-process through the internal
pyquant._C.set_isa and restored afterwards; tests/test_dispatch.py covers PYQUANT_ISA itself.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import pyquant
from pyquant import _C

ALL_ISAS = ("scalar", "avx2", "avx512", "neon")
SEED = int(os.environ.get("PYQUANT_TEST_SEED", "20261121"))


@pytest.fixture(params=ALL_ISAS)
def isa(request):
    name = request.param
    if name not in pyquant.cpu_info()["available"]:
        pytest.skip(f"this CPU cannot run the {name} path")
    previous = _C.active_isa()
    _C.set_isa(name)
    try:
        yield name
    finally:
        _C.set_isa(previous)


@pytest.fixture
def rng(request):
    """A generator seeded from PYQUANT_TEST_SEED and the test's name (printed on failure)."""
    seed = (SEED + sum(map(ord, request.node.nodeid))) % (2**32)
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    """Every native call on this many threads: the modules' small-work thread cap
    (pyquant/nn/modules.py: call_threads) is lifted so that small test layers run them all."""
    from pyquant.nn import modules

    monkeypatch.setattr(modules, "_THREAD_WEIGHT_BYTES", 1)
    monkeypatch.setattr(modules, "_THREAD_MACS", 1)
    pyquant.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        pyquant.set_num_threads(None)


def pytest_report_header(config):
    info = pyquant.cpu_info()
    return f"pyquant: active ISA {info['isa']}, available {info['available']}, seed {SEED}"
