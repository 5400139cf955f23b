"""Kernels of one family forced in turn in one process (alternating rounds, min and median): the
side-by-side ratios the notes quote for kernels the dispatcher would not pick by itself.

    python benchmarks/forced_kernels.py int8 256x4096x4096,... amx_32x32,avx512vnni_6x64
        raw int8_gemm (M x N x K) per kernel, beside torch._int_mm
    python benchmarks/forced_kernels.py lowbit 64,256 amx_64x64,avx512vnni_6x64
        QuantLinear 4096 -> 4096 (WeightOnlyConfig W4 g32 / g128, W2 g32) per lowbit kernel at
        these M, beside QuantLinear(Int8Config()) with the dispatcher's int8 kernel

T=2 for two threads; A_BITS=7 for 7-bit int8 rows (the AVX2 kernels' fast route, what
Int8Config() uses on AVX2 without VNNI). Kernel names: `python -m pyquant info`.
"""
import os
import sys
import time

import numpy as np
import torch

import pyquant
from pyquant import _C

T = int(os.environ.get("T", "1"))
A_BITS = int(os.environ.get("A_BITS", "8"))
pyquant.set_num_threads(T)
torch.set_num_threads(T)
ROUNDS = 7


def timed(fn):
    fn()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(label, res):
    cells = [f"{k} min {min(v) * 1e3:.3f} med {np.median(v) * 1e3:.3f} ms" for k, v in res.items() if v]
    print(label, "|", " | ".join(cells), flush=True)


def int8(shapes, kernels):
    rng = np.random.default_rng(0)
    for s in shapes.split(","):
        m, n, k = map(int, s.split("x"))
        a = rng.integers(0, 1 << A_BITS, (m, k), dtype=np.uint8)
        w = rng.integers(-127, 128, (n, k), dtype=np.int8)
        pw = pyquant.prepack(w, "int8_gemm")
        at, bt = torch.from_numpy(a.view(np.int8)), torch.from_numpy(w).t()
        res = {name: [] for name in kernels + ["torch._int_mm"]}
        for _ in range(ROUNDS):
            for name in kernels:
                _C.set_kernel("int8_gemm", name)
                res[name].append(timed(lambda: pyquant.int8_gemm(a, pw)))
            _C.set_kernel("int8_gemm", None)
            if m > 16:  # torch._int_mm needs M > 16
                res["torch._int_mm"].append(timed(lambda: torch._int_mm(at, bt)))
        report(f"{s} T={T}", res)


def lowbit(ms, kernels):
    lin = torch.nn.Linear(4096, 4096)
    configs = {"W4 g32": pyquant.WeightOnlyConfig(4, 32), "W4 g128": pyquant.WeightOnlyConfig(4, 128),
               "W2 g32": pyquant.WeightOnlyConfig(2, 32)}
    mods = {name: pyquant.nn.QuantLinear.from_linear(lin, c) for name, c in configs.items()}
    int8_mod = pyquant.nn.QuantLinear.from_linear(lin, pyquant.Int8Config())
    for m in map(int, ms.split(",")):
        x = torch.randn(m, 4096)
        res = {"Int8Config": []}
        res.update({f"{c} {k}": [] for c in mods for k in kernels})
        with torch.no_grad():
            for _ in range(ROUNDS):
                for k in kernels:
                    _C.set_kernel("lowbit_gemm", k)
                    for c, mod in mods.items():
                        res[f"{c} {k}"].append(timed(lambda: mod(x)))
                _C.set_kernel("lowbit_gemm", None)
                res["Int8Config"].append(timed(lambda: int8_mod(x)))
        report(f"M={m} T={T}", res)


if __name__ == "__main__":
    from script_args import parsed_args

    run, what, names = parsed_args(__doc__, lambda a: ({"int8": int8, "lowbit": lowbit}[a[0]], a[1],
                                                       a[2].split(",")))
    run(what, names)
