"""lowbit_gemm (W4A8, W2A8) benchmark cases: same activations and shapes as the int8 baseline,
signed 4- or 2-bit weight codes, prepacked (4 or 2 bits per weight in memory). For cold decode
problems each kernel rotates through a set of its own weights of at least 2x L3 (more copies for
fewer bytes per weight), so every one of them reads from DRAM, and each call streams its own,
fewer, bytes: that is the point of them."""
from __future__ import annotations

import numpy as np

from .cases import Case, Problem, packed_copies, random_u8, register, rotating


def _codes(p: Problem, bits: int) -> np.ndarray:
    g = np.random.default_rng(p.n + p.k + bits)
    half = 1 << (bits - 1)
    return g.integers(-half, half, size=(p.n, p.k), dtype=np.int8)


def _make_lowbit(bits: int):
    def make(p: Problem):
        import pyquant

        a = random_u8(p)
        packed = packed_copies(pyquant.prepack(_codes(p, bits), "lowbit_gemm", bits=bits),
                               p.copies(bits / 8))
        return rotating([lambda pw=pw: pyquant.lowbit_gemm(a, pw, bits=bits) for pw in packed])
    return make


@register
def _lowbit_cases(p: Problem) -> list[Case]:
    return [
        Case(p, "pyquant.lowbit_gemm[W4A8]", _make_lowbit(4), note="4-bit weights, int32 out",
             extra={"bytes_per_weight": 0.5}),
        Case(p, "pyquant.lowbit_gemm[W2A8]", _make_lowbit(2), note="2-bit weights, int32 out",
             extra={"bytes_per_weight": 0.25}),
    ]
