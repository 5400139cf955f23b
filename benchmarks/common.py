"""Parametrization helpers shared by the benchmark modules."""
from __future__ import annotations

import pytest

from pyquant.bench.cases import Problem, cases_for


def full_grid(config) -> bool:
    """--bench-full (benchmarks/conftest.py): every shape and thread count."""
    return bool(config.getoption("bench_full", False))


def case_params(problems: list[Problem], kernel_filter=None):
    params = []
    for p in problems:
        for case in cases_for(p):
            if kernel_filter and not kernel_filter(case):
                continue
            params.append(pytest.param(case, id=f"{p.name}|{case.kernel}|{case.isa or 'active'}"))
    return params


def run_as_script(path: str) -> int:
    """A pytest-only benchmark module called as a script (`python benchmarks/bench_conv.py
    [-k ...]`): its own cases under pytest-benchmark, instead of exiting silently."""
    import sys

    return pytest.main([path, "--benchmark-only", "-q", *sys.argv[1:]])
