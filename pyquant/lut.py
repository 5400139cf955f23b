"""pyquant.lut_gemm: W2A2 lookup-table GEMM (DeepGEMM and faster exact kernels).

``C[m, n] = sum_k a_levels[a[m, k]] * w_levels[w[n, k]]`` exactly in int32, where ``a`` and ``w``
are 2-bit codes (uint8 values 0..3) and every pairwise product of the two codebooks fits int8.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _arrays, _C
from ._threads import get_num_threads
from .packed import PackedWeight, register_prepack, resolve_weight

_MAX_K = _C.PACKED_MAX_K  # the packed format's limit (csrc/core/packed_format.h)
DEFAULT_A_LEVELS = (0, 1, 2, 3)
DEFAULT_W_LEVELS = (-2, -1, 0, 1)
KERNELS = ("auto", "scalar", "deepgemm", "vpermb", "pair")


def _levels(levels, name: str) -> tuple:
    try:
        values = tuple(levels)
    except TypeError:
        raise TypeError(f"{name}: expected 4 integers, got {type(levels).__name__}") from None
    if len(values) != 4:
        raise ValueError(f"{name}: expected 4 levels (a 2-bit codebook), got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: levels must be integers, got {v!r}")
        v = int(v)
        if not -128 <= v <= 127:
            raise ValueError(f"{name}: level {v} does not fit int8")
        out.append(v)
    return tuple(out)


def _check_codebooks(a_levels, w_levels) -> tuple[tuple, tuple]:
    a_lv, w_lv = _levels(a_levels, "a_levels"), _levels(w_levels, "w_levels")
    for x in a_lv:
        for y in w_lv:
            if not -128 <= x * y <= 127:
                raise ValueError(
                    f"a_levels={a_lv} x w_levels={w_lv}: the product {x} * {y} = {x * y} does "
                    "not fit int8 (every pairwise product must be in [-128, 127])"
                )
    return a_lv, w_lv


def _codes(x, name: str, hint: str) -> np.ndarray:
    xn = _arrays.to_numpy(x, name)
    _arrays.require_int_dtype(xn, name, (np.uint8,))
    _arrays.require_ndim(xn, 2, name, hint)
    xn = np.ascontiguousarray(xn)
    if xn.size and int(xn.max()) > 3:
        raise ValueError(f"{name}: 2-bit codes must be in [0, 3], found {int(xn.max())}")
    return xn


@register_prepack("lut_gemm")
def _prepack_lut(w, w_levels=DEFAULT_W_LEVELS) -> PackedWeight:
    w_lv = _levels(w_levels, "w_levels")
    wn = _codes(w, "w", "[N, K]")
    if wn.shape[1] > _MAX_K:
        raise ValueError(f"w: K = {wn.shape[1]} exceeds the supported maximum {_MAX_K}")
    return PackedWeight(_C.lut_prepack(wn, list(w_lv)), "lut_gemm", {"w_levels": w_lv})


def _lut_gemm(a, w, a_levels=DEFAULT_A_LEVELS, w_levels=DEFAULT_W_LEVELS, kernel="auto"):
    """lut_gemm with an explicit kernel (internal: tests and benchmarks).

    kernel: "auto" (the dispatcher's choice), "scalar", "deepgemm" (16-entry pshufb table, AVX2 /
    AVX-512), "vpermb" (AVX-512 VBMI; codebooks with 3*(max-min product) <= 255) or "pair"
    (16-entry tables indexed by two weights, AVX2 code, also runs on the AVX-512 path; codebooks
    with 2*(max-min product) <= 255).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    a_lv, w_lv = _check_codebooks(a_levels, w_levels)
    was_torch = _arrays.is_torch(a)
    an = _codes(a, "a", "[M, K]")
    pw = resolve_weight(w, "lut_gemm", {"w_levels": w_lv})
    n, k = pw.shape
    if an.shape[1] != k:
        raise ValueError(f"a: expected shape [M, {k}] to match w [{n}, {k}], got {tuple(an.shape)}")
    c = _C.lut_gemm(an, pw.buffer, list(a_lv), list(w_lv), get_num_threads(), kernel)
    return _arrays.like(c, was_torch)


def lut_gemm(a, w, *, a_levels=DEFAULT_A_LEVELS, w_levels=DEFAULT_W_LEVELS):
    """W2A2 GEMM: ``C[m, n] = sum_k a_levels[a[m, k]] * w_levels[w[n, k]]`` exactly in int32.

    a: uint8 codes 0..3 ``[M, K]``; w: uint8 codes 0..3 ``[N, K]`` or a PackedWeight from
    ``prepack(w, "lut_gemm", w_levels=...)`` (packed with the same ``w_levels``). Each codebook is
    4 integers; every product ``a_levels[i] * w_levels[j]`` must fit int8. The defaults are
    ``a_levels=(0, 1, 2, 3)`` and ``w_levels=(-2, -1, 0, 1)`` (two's-complement 2-bit codes;
    ``LUT2Config`` uses its own, symmetric ``w_levels=(-3, -1, 1, 3)``). Returns int32
    ``[M, N]``, numpy or torch like ``a``. The fastest exact kernel for the codebook on this CPU
    is used (see ``lut_kernel``).
    """
    return _lut_gemm(a, w, a_levels, w_levels, "auto")


def lut_kernel(a_levels=DEFAULT_A_LEVELS, w_levels=DEFAULT_W_LEVELS, kernel="auto") -> str:
    """The kernel lut_gemm runs for this codebook on the active path ("" if unavailable)."""
    a_lv, w_lv = _check_codebooks(a_levels, w_levels)
    return _C.lut_kernel_for(list(a_lv), list(w_lv), kernel)
