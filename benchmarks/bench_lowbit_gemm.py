"""lowbit_gemm (W4A8 / W2A8) against pyquant.int8_gemm, 1 thread, prepacked weights (issue 5).

Cases:
  * decode GEMV, M = 1, 4096x4096, weights cold: 8 layers called in turn (int8: 128 MiB; the
    W4/W2 sets are the same 8 layers at 4/2 bits, 64/32 MiB, which a large L3 may hold), and
    each kernel rotating its own set of 2x this CPU's L3 (all three from DRAM).
  * prefill GEMM, M = 256, 4096x4096 (hot).
`pytest benchmarks/bench_lowbit_gemm.py --benchmark-only` times each case (extra_info: GB/s of
weights streamed, GOP/s, MAC/cycle at the measured clock, ISA). `python benchmarks/bench_lowbit_gemm.py`
interleaves all kernels of a problem round by round and prints the ratios side by side (the
numbers in docs/notes/lowbit_gemm.md).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import pyquant
from pyquant import _C
from pyquant.bench.cases import l3_bytes
from pyquant.bench.machine import (clock_ghz, dram_read_gbps, mac_per_cycle,
                                   session_clock_ghz)

N = K = 4096
LAYERS = 8


def _weights(kernel: str, layers: int):
    rng = np.random.default_rng(5)
    out = []
    for _ in range(layers):
        if kernel == "int8":
            out.append(pyquant.prepack(rng.integers(-128, 128, (N, K), dtype=np.int8), "int8_gemm"))
        else:
            bits = int(kernel[1])
            half = 1 << (bits - 1)
            w = rng.integers(-half, half, (N, K), dtype=np.int8)
            out.append(pyquant.prepack(w, "lowbit_gemm", bits=bits))
    return out


def make(kernel: str, m: int, cold: bool, layers: int = LAYERS, group_size: int = 0):
    """A callable running one layer per call (rotating through `layers` when cold).
    group_size > 0: lowbit_gemm_grouped with float32 scales [N, K / group_size]."""
    a = np.random.default_rng(1).integers(0, 256, (m, K), dtype=np.uint8)
    ws = _weights(kernel, layers if cold else 1)
    state = {"i": 0}
    if kernel == "int8":
        fns = [lambda pw=pw: pyquant.int8_gemm(a, pw) for pw in ws]
    elif group_size:
        bits = int(kernel[1])
        sc = np.full((N, K // group_size), 0.01, np.float32)
        fns = [lambda pw=pw: pyquant.lowbit_gemm_grouped(a, pw, bits=bits, group_size=group_size,
                                                         scales=sc) for pw in ws]
    else:
        bits = int(kernel[1])
        fns = [lambda pw=pw: pyquant.lowbit_gemm(a, pw, bits=bits) for pw in ws]

    def call():
        i = state["i"]
        state["i"] = (i + 1) % len(fns)
        return fns[i]()

    return call


def weight_bytes(kernel: str) -> int:
    """Bytes streamed per call (weights, plus float32 scales for the grouped variant)."""
    if kernel == "int8":
        return N * K
    scales = N * (K // int(kernel[3:])) * 4 if "g" in kernel else 0
    return N * K * int(kernel[1]) // 8 + scales


CASES = [("decode M=1 cold", 1, True, k) for k in ("int8", "W4", "W2")] + [
    ("prefill M=256", 256, False, k) for k in ("int8", "W4", "W2")
]


@pytest.fixture(autouse=True)
def one_thread():
    pyquant.set_num_threads(1)
    yield
    pyquant.set_num_threads(None)


@pytest.mark.parametrize("group,m,cold,kernel", CASES, ids=[f"{c[0]}|{c[3]}" for c in CASES])
def test_lowbit_gemm(benchmark, group, m, cold, kernel):
    fn = make(kernel, m, cold)
    for _ in range(LAYERS if cold else 2):
        fn()
    benchmark.group = group
    iterations = LAYERS if cold else 1
    benchmark.pedantic(fn, rounds=20 if cold else 3, iterations=iterations, warmup_rounds=1)
    s = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "isa": _C.active_isa(), "m": m, "n": N, "k": K, "cold": cold,
        "gops": 2 * m * N * K / s / 1e9,
        "mac_per_cycle": mac_per_cycle(m * N * K, s, session_clock_ghz()),
        "weight_gbs": weight_bytes(kernel) / s / 1e9,
    })


def side_by_side(rounds_decode: int = 40, rounds_gemm: int = 12, only: str = "") -> None:
    groups = [
        ("decode M=1, 8 layers rotated (cold)", 1, True, LAYERS, ("int8", "W4", "W2")),
        (f"decode M=1, each kernel rotating 2x L3 ({2 * l3_bytes() >> 20} MiB of its own weights)",
         1, True, 0, ("int8", "W4", "W2")),
        ("decode M=1 grouped (float scales, group 32 / 128), 8 layers", 1, True, LAYERS,
         ("int8", "W4", "W4g32", "W4g128", "W2g32", "W2g128")),
        ("prefill M=256 (hot)", 256, False, 1, ("int8", "W4", "W2", "W4g128")),
    ]
    if not any(only in g[0] for g in groups):
        sys.exit(f"no group matches {only!r}; groups: " + "; ".join(g[0] for g in groups))
    pyquant.set_num_threads(1)
    ghz, dram = clock_ghz(), dram_read_gbps(1)
    print(f"ISA {_C.active_isa()}, 1 thread, {N}x{K}; min over interleaved rounds; measured: clock "
          f"{f'{ghz:.2f} GHz' if ghz else 'n/a'}, one-stream DRAM read (x.sum()) {dram:.1f} GB/s "
          "(the %1str base: a reference, several streams can pass it)")
    for group, m, cold, layers, kernels in groups:
        if only not in group:
            continue
        n_layers = {k: layers or -(-2 * l3_bytes() // weight_bytes(k[:2] if k != "int8" else k))
                    for k in kernels}
        fns = {k: make(k[:2] if k != "int8" else k, m, cold, n_layers[k],
                       int(k[3:]) if "g" in k else 0) for k in kernels}
        for k, f in fns.items():
            for _ in range(n_layers[k] if cold else 1):
                f()
        times = {k: [] for k in kernels}
        for _ in range(rounds_decode if cold else rounds_gemm):
            for k, f in fns.items():
                # timed per call: each call streams a different (cold) layer
                for _ in range(n_layers[k] if cold else 1):
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
        best = {k: min(v) for k, v in times.items()}
        med = {k: float(np.median(v)) for k, v in times.items()}
        print(f"\n{group}")
        print(f"  {'kernel':<6} {'min ms':>8} {'GB/s':>7} {'%1str':>6} {'MAC/cyc':>8} "
              f"{'int8/this (min)':>16} {'median ms':>10} {'int8/this (med)':>16}")
        for k in kernels:
            s = best[k]
            gbs = weight_bytes(k) / s / 1e9
            mpc = mac_per_cycle(m * N * K, s, ghz)
            print(f"  {k:<6} {s * 1e3:8.3f} {gbs:7.1f} {100 * gbs / dram:5.0f}% "
                  f"{f'{mpc:8.1f}' if mpc else '       -'} {best['int8'] / s:16.2f} "
                  f"{med[k] * 1e3:10.3f} {med['int8'] / med[k]:16.2f}")
        del fns

if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__ + "\n    python benchmarks/bench_lowbit_gemm.py [GROUP_SUBSTRING]  "
              "(e.g. 'each kernel', 'grouped', 'prefill'; default: every group)")
        sys.exit(0)
    side_by_side(only=sys.argv[1] if len(sys.argv) > 1 else "")
