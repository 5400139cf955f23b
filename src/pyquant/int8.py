"""pyquant.int8_gemm: exact u8/s8 x s8 -> s32 GEMM, the baseline every low-bit kernel is measured against."""
from __future__ import annotations

import numpy as np

from . import _arrays, _C
from ._threads import get_num_threads
from .packed import OP_IDS, PackedWeight, register_prepack, resolve_weight

_MAX_K = (1 << 24) - 1


def check_weight_int8(w, name: str = "w") -> np.ndarray:
    wn = _arrays.to_numpy(w, name)
    _arrays.require_int_dtype(wn, name, (np.int8,))
    _arrays.require_ndim(wn, 2, name, "[N, K]")
    if wn.shape[1] > _MAX_K:
        raise ValueError(f"{name}: K = {wn.shape[1]} exceeds the supported maximum {_MAX_K}")
    return np.ascontiguousarray(wn)


def pack_int8_for(op: str, w) -> PackedWeight:
    wn = check_weight_int8(w)
    return PackedWeight(_C.int8_prepack(wn, OP_IDS[op]), op, {})


@register_prepack("int8_gemm")
def _prepack_int8(w) -> PackedWeight:
    return pack_int8_for("int8_gemm", w)


def check_activations_8bit(a, name: str = "a") -> tuple[np.ndarray, bool, bool]:
    """(a as contiguous bytes [M, K], is_signed, was_torch)."""
    was_torch = _arrays.is_torch(a)
    an = _arrays.to_numpy(a, name)
    _arrays.require_int_dtype(an, name, (np.uint8, np.int8))
    _arrays.require_ndim(an, 2, name, "[M, K]")
    signed = an.dtype == np.int8
    return np.ascontiguousarray(an).view(np.uint8), signed, was_torch


def check_k(a: np.ndarray, pw: PackedWeight) -> None:
    n, k = pw.shape
    if a.shape[1] != k:
        raise ValueError(f"a: expected shape [M, {k}] to match w [{n}, {k}], got {tuple(a.shape)}")


def int8_gemm(a, w):
    """``C[m, n] = sum_k a[m, k] * w[n, k]`` exactly in int32.

    a: uint8 or int8 ``[M, K]``; w: int8 ``[N, K]`` or a PackedWeight from
    ``prepack(w, "int8_gemm")``. Returns int32 ``[M, N]``, numpy or torch like ``a``.
    """
    an, signed, was_torch = check_activations_8bit(a)
    pw = resolve_weight(w, "int8_gemm", {})
    check_k(an, pw)
    c = _C.int8_gemm(an, signed, pw.buffer, OP_IDS["int8_gemm"], get_num_threads())
    return _arrays.like(c, was_torch)
