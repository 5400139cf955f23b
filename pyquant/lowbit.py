"""pyquant.lowbit_gemm: signed 4-bit / 2-bit weight codes x 8-bit activations, exact int32.

``lowbit_gemm_grouped`` additionally applies per-group float scales along K (the epilogue of
group-wise weight quantization) inside the kernel loop. See docs/notes/lowbit_gemm.md.
"""
from __future__ import annotations

import numpy as np

from . import _arrays, _C
from ._threads import get_num_threads
from .int8 import check_activations_8bit
from .packed import PackedWeight, register_prepack, resolve_weight

_MAX_K = _C.PACKED_MAX_K  # the packed format's limit (csrc/core/packed_format.h)


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits: expected an int (2 or 4), got {type(bits).__name__}")
    if int(bits) not in (2, 4):
        raise ValueError(f"bits: expected 2 or 4, got {bits}")
    return int(bits)


@register_prepack("lowbit_gemm")
def _prepack_lowbit(w, *, bits) -> PackedWeight:
    bits = _check_bits(bits)
    wn = _arrays.to_numpy(w, "w")
    _arrays.require_int_dtype(wn, "w", (np.int8,))
    _arrays.require_ndim(wn, 2, "w", "[N, K]")
    if wn.shape[1] > _MAX_K:
        raise ValueError(f"w: K = {wn.shape[1]} exceeds the supported maximum {_MAX_K}")
    if wn.shape[0] > _C.PACKED_MAX_N:  # (before the range scan: a huge broadcast view took hours)
        raise ValueError(f"w: N = {wn.shape[0]} exceeds the supported maximum "
                         f"{_C.PACKED_MAX_N}")
    half = 1 << (bits - 1)
    if wn.size:
        lo, hi = int(wn.min()), int(wn.max())
        if lo < -half or hi >= half:
            bad = lo if lo < -half else hi
            raise ValueError(f"w: {bits}-bit codes must be in [{-half}, {half - 1}], found {bad}")
    return PackedWeight(_C.lowbit_prepack(np.ascontiguousarray(wn), bits), "lowbit_gemm",
                        {"bits": bits})


def _prepare(a, w, bits):
    bits = _check_bits(bits)
    an, signed, was_torch = check_activations_8bit(a)
    pw = resolve_weight(w, "lowbit_gemm", {"bits": bits})
    # K is checked against the header by the native call (a decode GEMV is ~0.15 ms, so the
    # Python-side header parse is skipped on purpose)
    return an, signed, was_torch, pw, bits


def lowbit_gemm(a, w, *, bits):
    """``C[m, n] = sum_k a[m, k] * w[n, k]`` exactly in int32 (wraps modulo 2**32 like int8_gemm).

    a: uint8 or int8 ``[M, K]``; w: int8 codes in ``[-2**(bits-1), 2**(bits-1))``, ``[N, K]``, or
    a PackedWeight from ``prepack(w, "lowbit_gemm", bits=bits)`` (stores ``bits`` bits per
    weight); bits: 2 or 4. Returns int32 ``[M, N]``, numpy or torch like ``a``.
    """
    an, signed, was_torch, pw, bits = _prepare(a, w, bits)
    c = _C.lowbit_gemm(an, signed, pw.buffer, bits, get_num_threads())
    return _arrays.like(c, was_torch)


def lowbit_gemm_grouped(a, w, *, bits, group_size, scales):
    """Group-wise scaled low-bit GEMM, float32 ``[M, N]``.

    ``C[m, n] = sum_g scales[n, g] * sum_{k in group g} a[m, k] * w[n, k]``, groups of
    ``group_size`` (a multiple of 4, e.g. 32/64/128) consecutive k; the last group may be short.
    The integer partial sums are exact; the float sum runs over g in order (float32, no FMA), so
    every path gives the same bits. scales: float32 ``[N, ceil(K / group_size)]``.
    """
    an, signed, was_torch, pw, bits = _prepare(a, w, bits)
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
        raise TypeError(f"group_size: expected an int, got {type(group_size).__name__}")
    group_size = int(group_size)
    if group_size <= 0 or group_size % 4 or group_size > _MAX_K:  # (one group covers any K)
        raise ValueError(f"group_size: expected a positive multiple of 4 up to {_MAX_K} (the "
                         f"packed K limit), got {group_size}")
    n, k = pw.shape
    groups = -(-k // group_size)
    sn = _arrays.to_numpy(scales, "scales")
    if sn.dtype != np.float32:
        raise TypeError(f"scales: expected dtype float32, got {sn.dtype}")
    if sn.shape != (n, groups):
        raise ValueError(f"scales: expected shape [{n}, {groups}], got {tuple(sn.shape)}")
    c = _C.lowbit_gemm_grouped(an, signed, pw.buffer, bits, group_size,
                               np.ascontiguousarray(sn), get_num_threads())
    return _arrays.like(c, was_torch)
