"""SPARQ: sparsity-aware activation trimming (algorithms.md section 5) and its fused int8 GEMM.

- ``sparq_quantize(a, *, bits=4, options=None, rounding="round", pairs=True)``: uint8 in, uint8 out.
- ``sparq_gemm(a, w, ...)``: exactly ``sparq_quantize(a) @ w.T`` in int32 (trimming fused with the
  int8 micro-kernel, one block of rows at a time).
- ``sparq_gemm(a, w, ..., sparse24=True)``: the same with a 2:4-sparse int8 weight (at most two
  non-zeros per aligned group of 4 along K, per output channel): the activations at each
  channel's non-zero positions form its vSPARQ pair (a single non-zero keeps its activation as
  with a zero partner). Packed as ``prepack(w, "sparq24_gemm", ...)`` (values + 4-bit selectors:
  5 bits per weight); ``prune_24(w)`` is the magnitude 2:4 pruning.
- Both GEMMs also take int16 sign-magnitude rows in [-255, 255] (inputs that are not post-ReLU):
  ``sign(a) * trim(|a|)``, pairs judged on the magnitudes.
- ``sparq_encode`` / ``sparq_decode``: the compact activation format (n-bit windows plus
  placement bits, packed), see ``sparq_encode``; ``sparq_gemm_encoded(payload, meta, w)`` runs the
  GEMM straight from it (rows decoded block by block).
"""
from __future__ import annotations

import numpy as np

from . import _arrays, _C
from ._threads import get_num_threads
from .int8 import check_k, check_weight_int8
from .packed import OP_IDS, PackedWeight, register_prepack, resolve_weight

# Allowed shifts S per (bits, options), algorithms.md section 5.
SHIFTS = {
    (4, 5): (0, 1, 2, 3, 4),
    (4, 3): (0, 2, 4),
    (4, 2): (0, 4),
    (3, 6): (0, 1, 2, 3, 4, 5),
    (2, 7): (0, 1, 2, 3, 4, 5, 6),
}
_FULL = {4: 5, 3: 6, 2: 7}


def check_config(bits, options, rounding, pairs) -> tuple[int, int, bool, bool]:
    """(bits, options, round, pairs) validated; ValueError/TypeError naming the argument."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits: expected an int (4, 3 or 2), got {type(bits).__name__}")
    bits = int(bits)
    if bits not in _FULL:
        raise ValueError(f"bits: expected 4, 3 or 2, got {bits}")
    if options is None:
        options = _FULL[bits]
    if isinstance(options, bool) or not isinstance(options, (int, np.integer)):
        raise TypeError(f"options: expected an int or None, got {type(options).__name__}")
    options = int(options)
    if (bits, options) not in SHIFTS:
        allowed = "5, 3 or 2" if bits == 4 else f"{_FULL[bits]} (or None)"
        raise ValueError(f"options: bits={bits} allows {allowed} placements, got {options}")
    if rounding not in ("round", "trunc"):
        raise ValueError(f"rounding: expected 'round' or 'trunc', got {rounding!r}")
    if not isinstance(pairs, (bool, np.bool_)):
        raise TypeError(f"pairs: expected a bool, got {type(pairs).__name__}")
    return bits, options, rounding == "round", bool(pairs)


def _check_activations(a, name: str = "a", ndim: int | None = None,
                       dtypes: tuple = (np.uint8,)) -> tuple[np.ndarray, bool]:
    was_torch = _arrays.is_torch(a)
    an = _arrays.to_numpy(a, name)
    _arrays.require_int_dtype(an, name, dtypes)
    if ndim is not None:
        _arrays.require_ndim(an, ndim, name, "[M, K]")
    elif an.ndim < 1:
        raise ValueError(f"{name}: expected at least 1 dimension [..., K], got a scalar")
    return np.ascontiguousarray(an), was_torch


def sparq_quantize(a, *, bits=4, options=None, rounding="round", pairs=True):
    """SPARQ-trimmed activations: uint8 ``[..., K]`` in, uint8 of the same shape out.

    ``options``: window placements; None (the default) is the paper's choice for ``bits``: 5 for
    4 bits (which also takes 3 or 2), 6 for 3 bits, 7 for 2 bits. ``rounding`` is ``"round"``
    (half-to-even on the window LSB, saturating on carry-out) or ``"trunc"``. ``pairs=True`` is
    vSPARQ along the last axis (pairs ``(k, k+1)``, k even); ``pairs=False`` is bSPARQ alone.
    """
    cfg = check_config(bits, options, rounding, pairs)
    an, was_torch = _check_activations(a)
    shape = an.shape
    flat = an.reshape(-1, shape[-1]) if shape[-1] > 0 else an.reshape(0, 0)
    out = _C.sparq_quantize(flat, *cfg, get_num_threads())
    return _arrays.like(out.reshape(shape), was_torch)


def _params(bits, options, rounding, pairs) -> dict:
    b, o, r, p = check_config(bits, options, rounding, pairs)
    return {"bits": b, "options": o, "rounding": "round" if r else "trunc", "pairs": p}


def _check_sparse24(sparse24) -> bool:
    if not isinstance(sparse24, (bool, np.bool_)):
        raise TypeError(f"sparse24: expected a bool, got {type(sparse24).__name__}")
    return bool(sparse24)


@register_prepack("sparq24_gemm")
def _prepack_sparq24(w, *, bits=4, options=None, rounding="round", pairs=True) -> PackedWeight:
    """2:4-sparse int8 ``[N, K]``: ValueError naming ``w`` and the first group with more than
    two non-zeros."""
    params = _params(bits, options, rounding, pairs)
    wn = check_weight_int8(w)
    buf = _C.sparq24_prepack(wn, params["bits"], params["options"], params["rounding"] == "round",
                             params["pairs"])
    return PackedWeight(buf, "sparq24_gemm", params)


def prune_24(w):
    """Magnitude 2:4 pruning along the last axis (K): in every aligned group of 4 the two
    largest ``|w|`` are kept (ties: the lower index), the others set to 0; a partial last group
    keeps at most two. numpy or torch, any real dtype, ``[..., K]``; returns the same kind."""
    was_torch = _arrays.is_torch(w)
    wn = _arrays.to_numpy(w, "w")
    if wn.ndim < 1:
        raise ValueError("w: expected at least 1 dimension [..., K], got a scalar")
    if not (np.issubdtype(wn.dtype, np.number) or wn.dtype == np.bool_):
        raise TypeError(f"w: expected a numeric dtype, got {wn.dtype}")
    k = wn.shape[-1]
    if wn.dtype == np.float32 and wn.size:  # (a model's weights: one native pass, the same result)
        out = _C.prune_24_f32(np.ascontiguousarray(wn).reshape(-1, k), get_num_threads())
        return _arrays.like(out.reshape(wn.shape), was_torch)
    kp = -(-k // 4) * 4
    if kp != k:
        wn = np.concatenate([wn, np.zeros(wn.shape[:-1] + (kp - k,), wn.dtype)], axis=-1)
    g = wn.reshape(wn.shape[:-1] + (kp // 4, 4))
    mag = np.abs(g) if wn.dtype.kind == "f" else np.abs(g.astype(np.float64))  # (exact either way)
    m = [mag[..., i] for i in range(4)]
    # rank of each: how many others beat it (larger, or equal at a lower index); NaN never does
    rank = [sum(((m[j] >= m[i]) if j < i else (m[j] > m[i])).astype(np.uint8)
                for j in range(4) if j != i) for i in range(4)]
    keep = np.stack([r < 2 for r in rank], axis=-1)
    out = np.where(keep, g, np.zeros((), wn.dtype)).reshape(wn.shape[:-1] + (kp,))[..., :k]
    return _arrays.like(np.ascontiguousarray(out), was_torch)


@register_prepack("sparq_gemm")
def _prepack_sparq(w, *, bits=4, options=None, rounding="round", pairs=True,
                   sparse24=False) -> PackedWeight:
    if _check_sparse24(sparse24):
        return _prepack_sparq24(w, bits=bits, options=options, rounding=rounding, pairs=pairs)
    params = _params(bits, options, rounding, pairs)
    wn = check_weight_int8(w)
    buf = _C.sparq_prepack(wn, params["bits"], params["options"], params["rounding"] == "round",
                           params["pairs"])
    return PackedWeight(buf, "sparq_gemm", params)


def sparq_gemm(a, w, *, bits=4, options=None, rounding="round", pairs=True, sparse24=False):
    """``sparq_quantize(a, ...) @ w.T`` exactly in int32.

    a: uint8 ``[M, K]``; w: int8 ``[N, K]`` or a PackedWeight from ``prepack(w, "sparq_gemm",
    bits=..., options=..., rounding=..., pairs=...)`` with the same arguments.

    ``sparse24=True``: w is 2:4 sparse (int8 ``[N, K]`` with at most two non-zeros in every
    aligned group of 4 along K, else ValueError; or ``prepack(w, "sparq24_gemm", ...)``). Each
    output channel pairs the activations at its own non-zero positions: in a group with two
    non-zeros at i0 < i1, ``(a[i0], a[i1])`` gets the vSPARQ pair rule; with one non-zero at j,
    ``a[j]`` is trimmed as with a zero partner (2n-bit window); ``pairs=False``: bSPARQ on each
    selected activation. The kernel reads only the selected activations.

    Signed activations (sign-magnitude, our extension for inputs that are not post-ReLU): ``a``
    int16 in ``[-255, 255]`` (else ValueError); each value is ``sign(a) * trim(|a|)`` with pairs
    judged on the magnitudes (a zero partner is ``a == 0``). Computed in one pass where the
    path can (AVX2: magnitudes with sign bytes through its uint8 tile; VNNI: the same with
    ``vpdpbusd``), else as the positive part's product minus the negative part's.
    """
    params = _params(bits, options, rounding, pairs)
    an, was_torch = _check_activations(a, ndim=2, dtypes=(np.uint8, np.int16))
    cfg = (params["bits"], params["options"], params["rounding"] == "round", params["pairs"])
    if _check_sparse24(sparse24):
        pw = resolve_weight(w, "sparq24_gemm", params)
        check_k(an, pw)
        gemm = _C.sparq24_gemm_signed if an.dtype == np.int16 else _C.sparq24_gemm
        return _arrays.like(gemm(an, pw.buffer, *cfg, get_num_threads()), was_torch)
    if isinstance(w, PackedWeight) and w.op == "sparq24_gemm":
        raise ValueError("w: packed for 2:4-sparse weights ('sparq24_gemm'); call "
                         "sparq_gemm(..., sparse24=True)")
    pw = resolve_weight(w, "sparq_gemm", params)
    check_k(an, pw)
    gemm = _C.sparq_gemm_signed if an.dtype == np.int16 else _C.sparq_gemm
    return _arrays.like(gemm(an, pw.buffer, *cfg, get_num_threads()), was_torch)


# ---------------------------------------------------------------------------------------------
# Compact encoding.
#
# bSPARQ (pairs=False): each activation is one code of n + pb bits, pb = ceil(log2 |S|):
#   code = window | placement << n, value = window << S[placement].
# vSPARQ (pairs=True): each pair (k, k+1) is one code of B bits. Both members use the bSPARQ
#   code (slot 0 in the low n+pb bits, slot 1 above). A pair where exactly one member j is
#   nonzero (so it kept a 2n-bit window with placements S2 = {0..8-2n}) is marked by an escape:
#   - if S leaves a placement code unused (5opt, 3opt, bits 3, bits 2): slot j's placement field
#     is all ones and the payload P = window2 | placement2 << 2n fills the remaining bits (low n
#     bits of P in slot j's window field, P >> n in the other slot). B = 2 (n + pb).
#   - 2opt uses both placement codes: one extra flag bit (bit 2(n+pb)); then bit 0 is j and
#     bits 1.. hold P. B = 2 (n + pb) + 1.
#   An odd last element pairs with an implicit zero (ceil(K/2) codes); a pair of zeros is two
#   zero bSPARQ codes.
# Codes are packed LSB-first along each row: a row of K activations takes
# ceil(codes * B / 8) bytes; rows stay independently addressable. Implementation:
# csrc/sparq/sparq_codec.cc; an independent numpy version is the test oracle
# (tests/reference_sparq.py).
# ---------------------------------------------------------------------------------------------


def sparq_encode(a, *, bits=4, options=None, rounding="round", pairs=True):
    """Compact SPARQ activations: ``(payload, meta)``.

    ``payload`` is uint8 ``[..., row_bytes]`` (one independently addressable row per leading
    index); ``meta`` is a dict with the config, the shape, ``code_bits`` and
    ``bytes_per_activation``. ``sparq_decode(payload, meta)`` returns exactly
    ``sparq_quantize(a, ...)``.
    """
    b, o, r, p = check_config(bits, options, rounding, pairs)
    an, was_torch = _check_activations(a)
    shape = an.shape
    k = shape[-1]
    flat = an.reshape(-1, k) if k > 0 else an.reshape(0, 0)
    payload = _C.sparq_encode(flat, b, o, r, p, get_num_threads())
    width = _C.sparq_code_bits(b, o, p)
    meta = {
        "shape": tuple(shape), "bits": b, "options": o, "rounding": rounding, "pairs": p,
        "code_bits": width, "bytes_per_activation": width / (16 if p else 8),
    }
    return _arrays.like(payload.reshape(shape[:-1] + (payload.shape[-1],)), was_torch), meta


def _meta_shape(meta) -> tuple:
    """``meta``'s shape, after checking it is a ``sparq_encode`` meta dict (ValueError naming the
    missing key or the bad shape otherwise; the config fields are checked by the callers)."""
    if not isinstance(meta, dict):
        raise TypeError(f"meta: expected the dict sparq_encode returned, got {type(meta).__name__}")
    for key in ("shape", "bits", "options", "rounding", "pairs"):
        if key not in meta:
            raise ValueError(f"meta: missing key {key!r} (expected the dict sparq_encode returned)")
    shape = meta["shape"]
    if (not isinstance(shape, (tuple, list))
            or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
                       for d in shape)):
        raise ValueError(f"meta: shape must be a tuple of non-negative ints, got {shape!r}")
    if shape and shape[-1] > _C.PACKED_MAX_K:  # (its encoded row size wrapped in size_t)
        raise ValueError(f"meta: shape's K (last dimension) is {shape[-1]}, expected at most "
                         f"{_C.PACKED_MAX_K} (the packed K limit)")
    return tuple(int(d) for d in shape)


def sparq_decode(payload, meta: dict):
    """The uint8 activations a ``sparq_encode`` payload holds (exact)."""
    shape = _meta_shape(meta)
    b, o, _, p = check_config(meta["bits"], meta["options"], meta["rounding"], meta["pairs"])
    was_torch = _arrays.is_torch(payload)
    pn = _arrays.to_numpy(payload, "payload")
    _arrays.require_int_dtype(pn, "payload", (np.uint8,))
    if len(shape) < 1 or pn.shape[:-1] != shape[:-1]:
        raise ValueError(f"payload: shape {tuple(pn.shape)} does not match meta shape {shape}")
    k = shape[-1]
    flat = np.ascontiguousarray(pn).reshape(int(np.prod(shape[:-1], dtype=np.int64)), pn.shape[-1])
    out = _C.sparq_decode(flat, k, b, o, p, get_num_threads())
    return _arrays.like(out.reshape(shape), was_torch)


def sparq_gemm_encoded(payload, meta: dict, w):
    """``sparq_decode(payload, meta) @ w.T`` in int32 without materializing the decoded rows.

    payload/meta: from ``sparq_encode`` of a 2-D ``[M, K]`` activation; w: int8 ``[N, K]`` or a
    PackedWeight from ``prepack(w, "sparq_gemm", ...)`` with the config in ``meta``.
    Equals ``sparq_gemm(a, w, ...)`` for the encoded ``a``.
    """
    shape = _meta_shape(meta)
    params = _params(meta["bits"], meta["options"], meta["rounding"], meta["pairs"])
    if len(shape) != 2:
        raise ValueError(f"meta: expected the encoding of a 2-D [M, K] activation, got shape {shape}")
    was_torch = _arrays.is_torch(payload)
    pn = _arrays.to_numpy(payload, "payload")
    _arrays.require_int_dtype(pn, "payload", (np.uint8,))
    _arrays.require_ndim(pn, 2, "payload", "[M, row_bytes]")
    if pn.shape[0] != shape[0]:
        raise ValueError(f"payload: {pn.shape[0]} rows do not match meta shape {shape}")
    pw = resolve_weight(w, "sparq_gemm", params)
    if pw.shape[1] != shape[1]:
        raise ValueError(f"payload: encodes K = {shape[1]} but w has K = {pw.shape[1]}")
    c = _C.sparq_gemm_encoded(np.ascontiguousarray(pn), shape[1], pw.buffer, params["bits"],
                              params["options"], params["rounding"] == "round", params["pairs"],
                              get_num_threads())
    return _arrays.like(c, was_torch)
