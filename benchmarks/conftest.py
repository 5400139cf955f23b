"""pytest-benchmark front end over the shared cases in pyquant/bench/cases.py.

Run: pytest benchmarks --benchmark-only   (add --benchmark-json=PATH to save).
Each benchmark times one kernel on one problem with prepacked weights (packing happens in the
case's setup, outside the timing), after a warm-up; extra_info records GOP/s, MAC/cycle (at the
nominal 3.64 GHz) and the ISA. Speedup ratios side by side: `python -m pyquant bench`.
"""
from __future__ import annotations

import pytest

import pyquant
from pyquant import _C
from pyquant._kernels import active_kernels
from pyquant.bench.runner import NOMINAL_GHZ


@pytest.fixture
def run_case(benchmark):
    import torch

    def run(case):
        p = case.problem
        old_torch, old_isa = torch.get_num_threads(), _C.active_isa()
        torch.set_num_threads(p.threads)
        pyquant.set_num_threads(p.threads)
        try:
            if case.isa:
                if case.isa not in pyquant.cpu_info()["available"]:
                    pytest.skip(f"CPU cannot run {case.isa}")
                _C.set_isa(case.isa)
            fn = case.make(p)
            for _ in range(max(2, p.layers)):
                fn()
            benchmark.group = p.name
            benchmark.extra_info.update(
                {"isa": _C.active_isa() if case.kernel.startswith("pyquant") else "torch",
                 "m": p.m, "n": p.n, "k": p.k, "threads": p.threads, "cold": p.cold,
                 # the micro-kernel per family (pyquant._kernels: the native kernel table)
                 "kernels": {f: e["name"] for f, e in active_kernels().items()}})
            iterations = p.layers if p.cold else 1
            benchmark.pedantic(fn, rounds=5, iterations=iterations, warmup_rounds=1)
            seconds = benchmark.stats.stats.min
            benchmark.extra_info["gops"] = p.ops / seconds / 1e9
            benchmark.extra_info["mac_per_cycle"] = p.m * p.n * p.k / seconds / (NOMINAL_GHZ * 1e9)
        finally:
            torch.set_num_threads(old_torch)
            pyquant.set_num_threads(None)
            _C.set_isa(old_isa)

    return run
