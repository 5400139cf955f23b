"""pyquant.int8_gemm: exact u8/s8 x s8 -> s32 GEMM, the baseline every low-bit kernel is measured against."""
from __future__ import annotations

import numpy as np

from . import _arrays, _C
from ._threads import get_num_threads
from .packed import OP_IDS, PackedWeight, register_prepack, resolve_weight

_MAX_K = _C.PACKED_MAX_K  # the packed format's limit (csrc/core/packed_format.h)


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


# ---- fused front-end helpers (used by pyquant.nn's Int8Config; not part of the public API) ----

def quantize_rows_u8(x):
    """Dynamic per-row asymmetric uint8: ``x ~= scale[:, None] * (q - zero_point[:, None])``.

    x: float32 ``[M, K]``. Returns ``(q uint8 [M, K], scale float32 [M], zero_point float32 [M])``
    of the kind given. Range [min(0, min x), max(0, max x)], zero point rounded half to even,
    codes rounded half up (csrc/quantize/row_quantize.h); identical bits on every path.
    """
    was_torch = _arrays.is_torch(x)
    xn = _arrays.to_numpy(x, "x")
    _arrays.require_int_dtype(xn, "x", (np.float32,))
    _arrays.require_ndim(xn, 2, "x", "[M, K]")
    q, scale, zp = _C.quantize_rows_u8(np.ascontiguousarray(xn), get_num_threads())
    return tuple(_arrays.like(v, was_torch) for v in (q, scale, zp))


def int8_gemm_dequant(a, w, row_scale, row_offset, col_scale, col_offset, bias=None):
    """``int8_gemm`` with a fused float epilogue, float32 ``[M, N]``:

    ``y = (acc * row_scale[m]) * col_scale[n] - row_offset[m] * col_offset[n] (+ bias[n])``.
    The epilogue runs on each output tile while it is in cache (one pass fewer over C than
    converting afterwards) and gives the same bits on every path.
    """
    an, signed, was_torch = check_activations_8bit(a)
    pw = resolve_weight(w, "int8_gemm", {})
    check_k(an, pw)

    def vec(v, name):
        vn = np.ascontiguousarray(_arrays.to_numpy(v, name), dtype=np.float32)
        return vn.reshape(-1)

    y = _C.int8_gemm_dequant(
        an, signed, pw.buffer, vec(row_scale, "row_scale"), vec(row_offset, "row_offset"),
        vec(col_scale, "col_scale"), vec(col_offset, "col_offset"),
        None if bias is None else vec(bias, "bias"), get_num_threads())
    return _arrays.like(y, was_torch)
