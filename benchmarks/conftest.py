"""pytest-benchmark front end over the shared cases in pyquant/bench/cases.py.

Run from the repository root:

    pytest --benchmark-only                 # the default grid, a few minutes
    pytest --benchmark-only --bench-full    # every shape, 1 and 2 threads
    pytest benchmarks/bench_sparq.py --benchmark-only   (add --benchmark-json=PATH to save)

Plain `pytest` never collects this directory (pytest_ignore_collect below), so the fast test
suite stays fast. Each benchmark times one kernel on one problem with prepacked weights (packing
happens in the case's setup, outside the timing), after a warm-up; extra_info records GOP/s,
MAC/cycle at the clock measured once per session (csrc/core/clock.cc; left out if it cannot be
measured) and the ISA. A case this CPU cannot run is skipped with the reason ("needs AVX-512
VBMI"). Speedup ratios side by side: `python -m pyquant bench`.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true", default=False,
                     help="benchmarks/: the full grid (every shape, 1 and 2 threads)")


def pytest_ignore_collect(collection_path, config):
    # benchmarks run only under --benchmark-only (an option of pytest-benchmark, if installed)
    if collection_path.name.startswith("bench_") and not config.getoption("benchmark_only", False):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    # `pytest --benchmark-only` with no paths also collects tests/ (testpaths); deselect those
    # rather than list ~3000 "Skipping non-benchmark" lines. Explicit paths are left alone.
    source = getattr(config, "args_source", None)  # pytest >= 7.2
    from_testpaths = source is not None and source.name == "TESTPATHS"
    if not (config.getoption("benchmark_only", False) and from_testpaths):
        return
    here = Path(__file__).resolve().parent
    keep = [item for item in items if here in item.path.resolve().parents]
    dropped = [item for item in items if here not in item.path.resolve().parents]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
def run_case(benchmark):
    import torch

    import pyquant
    from pyquant import _C
    from pyquant._kernels import active_kernels
    from pyquant.bench.machine import mac_per_cycle, session_clock_ghz
    from pyquant.bench.runner import SLOW_CALL_SECONDS, unavailable

    def run(case):
        reason = unavailable(case)
        if reason:
            pytest.skip(reason)
        p = case.problem
        old_torch, old_isa = torch.get_num_threads(), _C.active_isa()
        torch.set_num_threads(p.threads)
        pyquant.set_num_threads(p.threads)
        try:
            if case.isa:
                _C.set_isa(case.isa)
            fn = case.make(p)
            t0 = time.perf_counter()
            fn()
            slow = time.perf_counter() - t0 >= SLOW_CALL_SECONDS  # e.g. torch._int_mm without VNNI
            count = getattr(fn, "count", 1)  # the case's cold set (cases.rotating), else 1
            for _ in range(0 if slow else max(2, count) - 1):  # warm-up: one pass over the set
                fn()
            benchmark.group = p.name
            benchmark.extra_info.update(
                {"isa": _C.active_isa() if case.kernel.startswith("pyquant") else "torch",
                 "m": p.m, "n": p.n, "k": p.k, "threads": p.threads, "cold": p.cold,
                 # the micro-kernel per family (pyquant._kernels: the native kernel table)
                 "kernels": {f: e["name"] for f, e in active_kernels().items()}})
            iterations = count if p.cold else 1  # a round covers the whole cold set
            rounds = 1 if slow else 5
            benchmark.pedantic(fn, rounds=rounds, iterations=iterations,
                               warmup_rounds=0 if slow else 1)
            seconds = benchmark.stats.stats.min
            benchmark.extra_info["rounds"] = rounds
            benchmark.extra_info["gops"] = p.ops / seconds / 1e9
            mpc = mac_per_cycle(p.m * p.n * p.k, seconds, session_clock_ghz())
            if mpc is not None:
                benchmark.extra_info["mac_per_cycle"] = mpc
                benchmark.extra_info["clock_ghz"] = session_clock_ghz()
        finally:
            torch.set_num_threads(old_torch)
            pyquant.set_num_threads(None)
            _C.set_isa(old_isa)

    return run
