"""sparq_gemm against pyquant.int8_gemm on the same activations (issue 6).

Problem: 1 thread, prepacked weights, M x N x K = 256 x 4096 x 4096, half the activations zero
(post-ReLU-like). Goal: sparq_gemm time / int8_gemm time <= 1.15.

    pytest benchmarks/bench_sparq.py --benchmark-only       # pytest-benchmark, per kernel
    python benchmarks/bench_sparq.py [--repeats 7]           # side-by-side ratios, min of repeats
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import pyquant
from pyquant import _C
from pyquant.bench.machine import clock_ghz, mac_per_cycle, session_clock_ghz

SHAPE = (256, 4096, 4096)
CONFIGS = [  # (bits, options, rounding, pairs)
    (4, 5, "round", True), (4, 3, "round", True), (4, 2, "round", True), (4, 5, "trunc", False),
    (3, 6, "round", True), (2, 7, "round", True),
]


def make_data(m, n, k, seed=6):
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 256, (m, k), dtype=np.uint8)
    a[rng.random((m, k)) < 0.5] = 0  # half the activations zero
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    return a, w


def kernels(a, w, configs=CONFIGS):
    """name -> zero-argument callable, all on prepacked weights."""
    pi = pyquant.prepack(w, "int8_gemm")
    out = {"int8_gemm": lambda: pyquant.int8_gemm(a, pi)}
    for b, o, r, p in configs:
        kw = dict(bits=b, options=o, rounding=r, pairs=p)
        pw = pyquant.prepack(w, "sparq_gemm", **kw)
        out[f"sparq_gemm b{b} o{o} {r} {'vSPARQ' if p else 'bSPARQ'}"] = (
            lambda pw=pw, kw=kw: pyquant.sparq_gemm(a, pw, **kw))
    payload, meta = pyquant.sparq_encode(a)
    pw = pyquant.prepack(w, "sparq_gemm")
    out["sparq_gemm_encoded b4 o5 round vSPARQ (from the compact format)"] = (
        lambda: pyquant.sparq_gemm_encoded(payload, meta, pw))
    out["sparq_quantize (trim only)"] = lambda: pyquant.sparq_quantize(a)
    return out


@pytest.fixture(scope="module")
def fns():
    return kernels(*make_data(*SHAPE))  # packed once for all the module's benchmarks


@pytest.mark.parametrize("name", list(kernels(*make_data(8, 64, 64))))
def test_sparq_vs_int8(benchmark, fns, name):
    pyquant.set_num_threads(1)
    try:
        fn = fns[name]
        fn()
        benchmark.group = "sparq 256x4096x4096 1t half-zero"
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
        sec = benchmark.stats.stats.min
        m, n, k = SHAPE
        benchmark.extra_info["isa"] = _C.active_isa()
        if "gemm" in name:
            benchmark.extra_info["gops"] = 2 * m * n * k / sec / 1e9
            benchmark.extra_info["mac_per_cycle"] = mac_per_cycle(m * n * k, sec, session_clock_ghz())
    finally:
        pyquant.set_num_threads(None)


def side_by_side(repeats=7, isas=None, shape=SHAPE, threads=1, ghz=None):
    """Min time of each kernel over `repeats` rounds; the kernels alternate within a round.

    Records wall time and process CPU time: on this shared, oversubscribed machine the CPU time
    of a 1-thread run excludes the time slices other processes take, so it is the steadier one.
    """
    a, w = make_data(*shape)
    m, n, k = shape
    pyquant.set_num_threads(threads)
    prev = _C.active_isa()
    rows = []
    try:
        for isa in isas or [pyquant.cpu_info()["isa"]]:
            _C.set_isa(isa)
            fns = kernels(a, w)
            for fn in fns.values():
                fn()
            best = {name: float("inf") for name in fns}
            cpu = dict(best)
            for _ in range(repeats):
                for name, fn in fns.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    cpu[name] = min(cpu[name], time.process_time() - c0)
                    best[name] = min(best[name], time.perf_counter() - t0)
            for name, sec in best.items():
                gemm = name != "sparq_quantize (trim only)"
                c = cpu[name]
                rows.append((isa, name, sec * 1e3, sec / best["int8_gemm"], c * 1e3,
                             2 * m * n * k / c / 1e9 if gemm else None,
                             mac_per_cycle(m * n * k, c, ghz) if gemm else None,
                             c / cpu["int8_gemm"]))
    finally:
        _C.set_isa(prev)
        pyquant.set_num_threads(None)
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--isa", action="append", help="path(s) to time (default: the active one)")
    args = ap.parse_args()
    print(f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}, 1 thread, prepacked, half the activations zero, "
          f"min of {args.repeats}")
    ghz = clock_ghz()
    print(f"| ISA | kernel | wall ms | wall / int8 | CPU ms | GOP/s (CPU) | MAC/cycle "
          f"@{f'{ghz:.2f}' if ghz else '? (clock not measured)'} GHz | CPU / int8 |")
    print("|---|---|---|---|---|---|---|---|")
    for isa, name, ms, ratio, cms, gops, mpc, cratio in side_by_side(args.repeats, args.isa, ghz=ghz):
        g = f"{gops:.0f}" if gops else "-"
        c = f"{mpc:.1f}" if mpc else "-"
        print(f"| {isa} | {name} | {ms:.2f} | {ratio:.3f} | {cms:.2f} | {g} | {c} | {cratio:.3f} |")
