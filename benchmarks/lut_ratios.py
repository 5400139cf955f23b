"""Side-by-side W2A2 lut_gemm vs int8_gemm ratios on a shared, noisy machine (1 thread).

Times with the calling thread's CPU time (time.thread_time: with 1 thread all work runs on the
caller), interleaving kernels round by round and keeping each one's fastest round, so time
stolen by other processes on the 2-core VM neither counts nor favours any kernel. Prints ms,
MAC/cycle at the measured clock and ratios over int8_gemm on the same path.

    python benchmarks/lut_ratios.py [--rounds 7] [--levels=-3,-1,1,3:0,1,2,5] [--shapes 256x4096x4096] [--ghz GHZ]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pyquant
from pyquant import _C
from pyquant.bench.machine import clock_ghz, mac_per_cycle
from pyquant.lut import _lut_gemm, lut_kernel

SHAPES = [(256, 4096, 4096), (1, 4096, 4096), (3136, 64, 576), (784, 128, 1152)]


def best_time(fn, calls):
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--levels", default="0,1,2,3:-2,-1,0,1", help="a_levels:w_levels")
    ap.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--ghz", type=float, default=None,
                    help="clock for MAC/cycle (default: measured with a dependent-add chain)")
    args = ap.parse_args()
    a_lv, w_lv = (tuple(int(x) for x in part.split(",")) for part in args.levels.split(":"))
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    pyquant.set_num_threads(1)
    ghz = args.ghz or clock_ghz()
    print(f"clock {f'{ghz:.2f} GHz, measured' if ghz else 'not measurable: no MAC/cycle'}")
    rng = np.random.default_rng(0)
    paths = [i for i in ("avx512", "avx2") if i in pyquant.cpu_info()["available"]]
    for m, n, k in shapes:
        a2 = rng.integers(0, 4, (m, k), dtype=np.uint8)
        w2 = pyquant.prepack(rng.integers(0, 4, (n, k), dtype=np.uint8), "lut_gemm", w_levels=w_lv)
        a8 = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w8 = pyquant.prepack(rng.integers(-128, 128, (n, k), dtype=np.int8), "int8_gemm")
        cases = []
        for isa in paths:
            cases.append((isa, "int8_gemm", lambda: pyquant.int8_gemm(a8, w8)))
            _C.set_isa(isa)
            for kern in ("vpermb", "pair", "deepgemm"):
                if lut_kernel(a_lv, w_lv, kern):
                    cases.append((isa, kern, lambda kern=kern: _lut_gemm(a2, w2, a_lv, w_lv, kern)))
        calls = {}
        for isa, name, fn in cases:
            _C.set_isa(isa)
            fn()
            single = best_time(fn, 1)
            calls[(isa, name)] = max(1, int(0.05 / max(single, 1e-6)))
        best = {}
        for _ in range(args.rounds):
            for isa, name, fn in cases:
                _C.set_isa(isa)
                t = best_time(fn, calls[(isa, name)])
                best[(isa, name)] = min(best.get((isa, name), 1e9), t)
        print(f"\n{m}x{n}x{k} (1 thread, prepacked, a_levels={a_lv}, w_levels={w_lv})")
        for isa, name, _ in cases:
            t = best[(isa, name)]
            ratio = best[(isa, "int8_gemm")] / t
            mpc = mac_per_cycle(m * n * k, t, ghz)
            print(f"  {isa:7s} {name:10s} {t * 1e3:9.3f} ms  {f'{mpc:6.1f}' if mpc else '     -'} MAC/cycle"
                  f"  {ratio:5.2f}x int8_gemm[{isa}]")


if __name__ == "__main__":
    main()
