"""lut_gemm (W2A2) benchmark cases: every kernel on the active path, plus the AVX2 set (the pair
kernel and the DeepGEMM table kernel vs our AVX2 int8_gemm) that DeepGEMM's 1.74x headline is
compared with.

The W2A2 product is not the int8 product (2-bit codes instead of bytes), but the shapes and the
output are the same: the ratio answers "how much faster is a W2A2 layer than an int8 layer".
Activation preparation (codes -> kernel format) is inside the timing; weights are prepacked.
"""
from __future__ import annotations

import numpy as np

from .cases import Case, Problem, _make_int8_ours, packed_copies, register, rotating

A_LEVELS = (0, 1, 2, 3)
W_LEVELS = (-2, -1, 0, 1)


def _codes(p: Problem, rows: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed * 7919 + p.n + p.k)
    return g.integers(0, 4, size=(rows, p.k), dtype=np.uint8)


def _make_lut(kernel: str):
    def make(p: Problem):
        import pyquant
        from pyquant.lut import _lut_gemm

        a = _codes(p, p.m, 12345)
        packed = packed_copies(pyquant.prepack(_codes(p, p.n, 0), "lut_gemm", w_levels=W_LEVELS),
                               p.copies(0.25))
        return rotating([lambda pw=pw: _lut_gemm(a, pw, A_LEVELS, W_LEVELS, kernel)
                         for pw in packed])
    return make


def _needs(kernel: str, paths: tuple[str, ...], feature: str):
    """The case's `requires`: None if `kernel` runs on the active path, else what it needs."""
    def check() -> str | None:
        import pyquant
        from pyquant.lut import lut_kernel

        if lut_kernel(A_LEVELS, W_LEVELS, kernel):
            return None
        info = pyquant.cpu_info()
        if any(path in info["available"] for path in paths):  # e.g. PYQUANT_ISA=avx2
            return f"excluded by PYQUANT_ISA={info['isa']} (needs the {' or '.join(paths)} path)"
        return f"needs {feature}"
    return check


@register
def _lut_cases(p: Problem) -> list[Case]:
    w2 = {"bytes_per_weight": 0.25}
    deepgemm = _needs("deepgemm", ("avx2", "avx512", "neon"), "AVX2, AVX-512 or NEON")
    return [
        Case(p, "pyquant.lut_gemm", _make_lut("auto"), note="W2A2, fastest exact kernel", extra=w2),
        Case(p, "pyquant.lut_gemm[vpermb]", _make_lut("vpermb"), note="W2A2, AVX-512 VBMI",
             extra=w2, requires=_needs("vpermb", ("avx512",), "AVX-512 VBMI")),
        Case(p, "pyquant.lut_gemm[deepgemm]", _make_lut("deepgemm"), note="W2A2, DeepGEMM pshufb",
             extra=w2, requires=deepgemm),
        Case(p, "pyquant.lut_gemm[pair]", _make_lut("pair"), note="W2A2, pair tables (2 weights per pshufb index)",
             extra=w2, requires=_needs("pair", ("avx2",), "AVX2")),
        Case(p, "pyquant.int8_gemm[avx2]", _make_int8_ours, isa="avx2", kind="int8-baseline",
             note="activations 0..255: the exact split route"),
        Case(p, "pyquant.int8_gemm (7-bit act.)[avx2]", lambda q: _make_int8_ours(q, 7),
             isa="avx2", kind="int8-baseline",
             note="activations 0..127: the AVX2 fast route, Int8Config's default there"),
        Case(p, "pyquant.lut_gemm[deepgemm][avx2]", _make_lut("deepgemm"), isa="avx2",
             note="W2A2, DeepGEMM pshufb, AVX2", extra=w2, requires=deepgemm),
        Case(p, "pyquant.lut_gemm[pair][avx2]", _make_lut("pair"), isa="avx2",
             note="W2A2, pair tables, AVX2", extra=w2, requires=_needs("pair", ("avx2",), "AVX2")),
    ]
