"""Canonical sub-byte packing: pyquant.pack / pyquant.unpack (algorithms.md section 1)."""
from __future__ import annotations

import operator

import numpy as np

from . import _arrays, _C
from ._threads import get_num_threads

_INT_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64)


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits: expected an int in {{1, 2, 4}}, got {type(bits).__name__}")
    if bits not in (1, 2, 4):
        raise ValueError(f"bits: expected 1, 2 or 4, got {bits}")
    return int(bits)


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def pack(codes, bits, *, signed=False):
    """Packs integer codes along the last axis, LSB first, into uint8 ``[..., ceil(n*bits/8)]``.

    Unsigned codes must lie in ``[0, 2**bits)``, signed ones in ``[-2**(bits-1), 2**(bits-1))``.
    """
    bits = _check_bits(bits)
    signed = _check_flag(signed, "signed")
    was_torch = _arrays.is_torch(codes)
    a = _arrays.to_numpy(codes, "codes")
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    if a.dtype not in _INT_DTYPES:
        raise TypeError(f"codes: expected an integer dtype, got {a.dtype}")
    if a.ndim == 0:
        raise ValueError("codes: expected at least 1 dimension, got a scalar")
    lo, hi = code_range(bits, signed)
    # contiguous before the range scan: a huge zero-copy view (np.broadcast_to) fails here at
    # once (MemoryError) instead of scanning for hours
    a = np.ascontiguousarray(a)
    _arrays.check_codes(a, "codes", lo, hi)
    lead, n = a.shape[:-1], a.shape[-1]
    flat = np.ascontiguousarray(a.reshape(int(np.prod(lead)), n).astype(np.int8 if signed else np.uint8, copy=False))
    packed = _C.pack(flat.view(np.uint8), bits, get_num_threads())
    return _arrays.like(packed.reshape(*lead, packed.shape[-1]), was_torch)


def unpack(packed, bits, n, *, signed=False):
    """Unpacks ``n`` codes per row; uint8 codes, or int8 (sign-extended) when ``signed``."""
    bits = _check_bits(bits)
    signed = _check_flag(signed, "signed")
    try:
        if isinstance(n, bool):  # (as bits and signed: True is not a count)
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n: expected an int, got {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"n: expected n >= 0, got {n}")
    was_torch = _arrays.is_torch(packed)
    p = _arrays.to_numpy(packed, "packed")
    _arrays.require_int_dtype(p, "packed", (np.uint8,))
    if p.ndim == 0:
        raise ValueError("packed: expected at least 1 dimension, got a scalar")
    need = (n * bits + 7) // 8
    if p.shape[-1] != need:
        raise ValueError(
            f"n: {n} codes of {bits} bits take {need} bytes per row, but packed has "
            f"{p.shape[-1]} (shape {tuple(p.shape)})"
        )
    lead = p.shape[:-1]
    flat = np.ascontiguousarray(p.reshape(int(np.prod(lead)), need))
    out = _C.unpack(flat, bits, n, signed, get_num_threads())
    out = out.reshape(*lead, n)
    if signed:
        out = out.view(np.int8)
    return _arrays.like(out, was_torch)
