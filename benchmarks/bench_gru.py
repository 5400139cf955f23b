"""QuantGRU forward (issue #17 part 2): the native cell against the Python-orchestrated forward it
replaces (backend "python"), the torch integer reference (backend "torch") and torch.nn.GRU fp32.

Shapes: the digits task (batch 64, 8 steps, input 8, hidden 64) and a long single sequence
(batch 1, 100 steps, input 64, hidden 256); uniform 8-bit widths and the mixed point NSGA-II
found on digits (docs/notes/search.md). 1 thread (pyquant and torch), prepacked weights,
after a warm-up. `pytest benchmarks/bench_gru.py --benchmark-only`; the two goal ratios, best of
several repeats: `python benchmarks/gru_ratios.py` (numbers in docs/notes/gru.md).
"""
from __future__ import annotations

import pytest
import torch

import pyquant
from gru_ratios import MIXED, SHAPES, models

IMPLS = ("nn.GRU", "native", "python", "torch")


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    pyquant.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    pyquant.set_num_threads(None)
    torch.set_num_threads(prev)


@pytest.mark.parametrize("widths", ["u8", "mixed"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_gru_forward(benchmark, shape, impl, widths):
    if impl == "nn.GRU" and widths == "mixed":
        pytest.skip("float model: no widths")
    gru, q, x = models(**SHAPES[shape], widths=8 if widths == "u8" else MIXED)
    q.backend = {"native": "kernels"}.get(impl, impl)
    fn = gru if impl == "nn.GRU" else q
    benchmark.extra_info.update(isa=pyquant.cpu_info()["isa"], shape=SHAPES[shape], widths=widths)
    with torch.no_grad():
        fn(x)  # warm-up
        benchmark.pedantic(fn, args=(x,), rounds=5 if impl == "python" else 20, iterations=1,
                           warmup_rounds=1)


if __name__ == "__main__":
    import sys

    from common import run_as_script

    sys.exit(run_as_script(__file__))
