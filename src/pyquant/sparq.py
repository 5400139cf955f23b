"""SPARQ: sparsity-aware activation trimming (algorithms.md section 5) and its fused int8 GEMM.

- ``sparq_quantize(a, *, bits=4, options=5, rounding="round", pairs=True)``: uint8 in, uint8 out.
- ``sparq_gemm(a, w, ...)``: exactly ``sparq_quantize(a) @ w.T`` in int32 (trimming fused with the
  int8 micro-kernel, one block of rows at a time).
- ``sparq_encode`` / ``sparq_decode``: the compact activation format (n-bit windows plus
  placement bits, packed), see ``sparq_encode``.
"""
from __future__ import annotations

import numpy as np

from . import _arrays, _C
from ._kernels import register_kernels
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

register_kernels("sparq_gemm", {
    "avx512": "256-entry vpermi2b (VBMI) trim LUTs, zero-partner select by mask; 6x64 vpdpbusd tile",
    "avx2": "nibble-vpshufb leading one + 16-entry window tables; 4x8 vpmaddwd tile",
    "neon": "tbl leading one + window tables; 4x16 sdot tile (not run on this build host)",
    "scalar": "arithmetic reference trim; portable panel loops",
})


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


def _check_activations(a, name: str = "a", ndim: int | None = None) -> tuple[np.ndarray, bool]:
    was_torch = _arrays.is_torch(a)
    an = _arrays.to_numpy(a, name)
    _arrays.require_int_dtype(an, name, (np.uint8,))
    if ndim is not None:
        _arrays.require_ndim(an, ndim, name, "[M, K]")
    elif an.ndim < 1:
        raise ValueError(f"{name}: expected at least 1 dimension [..., K], got a scalar")
    return np.ascontiguousarray(an), was_torch


def sparq_quantize(a, *, bits=4, options=5, rounding="round", pairs=True):
    """SPARQ-trimmed activations: uint8 ``[..., K]`` in, uint8 of the same shape out.

    ``bits=4`` takes ``options`` in {5, 3, 2}; ``bits=3`` (6 placements) and ``bits=2``
    (7 placements) take ``options=None`` or the full count. ``rounding`` is ``"round"``
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


@register_prepack("sparq_gemm")
def _prepack_sparq(w, *, bits=4, options=5, rounding="round", pairs=True) -> PackedWeight:
    params = _params(bits, options, rounding, pairs)
    wn = check_weight_int8(w)
    buf = _C.sparq_prepack(wn, params["bits"], params["options"], params["rounding"] == "round",
                           params["pairs"])
    return PackedWeight(buf, "sparq_gemm", params)


def sparq_gemm(a, w, *, bits=4, options=5, rounding="round", pairs=True):
    """``sparq_quantize(a, ...) @ w.T`` exactly in int32.

    a: uint8 ``[M, K]``; w: int8 ``[N, K]`` or a PackedWeight from ``prepack(w, "sparq_gemm",
    bits=..., options=..., rounding=..., pairs=...)`` with the same arguments.
    """
    params = _params(bits, options, rounding, pairs)
    an, was_torch = _check_activations(a, ndim=2)
    pw = resolve_weight(w, "sparq_gemm", params)
    check_k(an, pw)
    c = _C.sparq_gemm(an, pw.buffer, params["bits"], params["options"],
                      params["rounding"] == "round", params["pairs"], get_num_threads())
    return _arrays.like(c, was_torch)


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
# Codes are packed LSB-first along each row: a row of K activations takes
# ceil(codes * B / 8) bytes; rows stay independently addressable.
# ---------------------------------------------------------------------------------------------


def _layout(bits: int, options: int, pairs: bool) -> dict:
    shifts = SHIFTS[(bits, options)]
    pb = (len(shifts) - 1).bit_length()
    slot = bits + pb
    if not pairs:
        return {"shifts": shifts, "pb": pb, "slot": slot, "code_bits": slot, "escape": None}
    wide = tuple(range(9 - 2 * bits))
    pb2 = (len(wide) - 1).bit_length()
    escape = len(shifts) < (1 << pb)
    return {"shifts": shifts, "pb": pb, "slot": slot, "wide": wide, "pb2": pb2, "escape": escape,
            "code_bits": 2 * slot + (0 if escape else 1)}


def _placement(values: np.ndarray, nw: int, shifts: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(window, placement index) representing `values` (already trimmed) at the smallest shift."""
    v = values.astype(np.int64)
    place = np.zeros(v.shape, np.int64)
    # the smallest allowed shift whose nw-bit window holds the value exactly
    found = np.zeros(v.shape, bool)
    for i, s in enumerate(shifts):
        ok = ~found & ((v >> s) < (1 << nw)) & ((v & ((1 << s) - 1)) == 0)
        place[ok] = i
        found |= ok
    assert found.all(), "a trimmed value is not representable (internal error)"
    s_arr = np.asarray(shifts, np.int64)[place]
    return v >> s_arr, place


def _pack_codes(codes: np.ndarray, width: int) -> np.ndarray:
    """[rows, c] integer codes of `width` bits -> [rows, ceil(c*width/8)] uint8, LSB first."""
    rows, c = codes.shape
    bits = ((codes[..., None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(rows, c * width), axis=1, bitorder="little")


def _unpack_codes(payload: np.ndarray, c: int, width: int) -> np.ndarray:
    rows = payload.shape[0]
    bits = np.unpackbits(payload, axis=1, count=c * width, bitorder="little")
    bits = bits.reshape(rows, c, width).astype(np.int64)
    return (bits << np.arange(width, dtype=np.int64)).sum(axis=2)


def sparq_encode(a, *, bits=4, options=5, rounding="round", pairs=True):
    """Compact SPARQ activations: ``(payload, meta)``.

    ``payload`` is uint8 ``[..., row_bytes]`` (one independently addressable row per leading
    index); ``meta`` is a dict with the config, the shape, ``code_bits`` and ``bytes_per_activation``.
    ``sparq_decode(payload, meta)`` returns exactly ``sparq_quantize(a, ...)``.
    """
    b, o, r, p = check_config(bits, options, rounding, pairs)
    an, _ = _check_activations(a)
    shape = an.shape
    k = shape[-1]
    q = np.asarray(sparq_quantize(an, bits=b, options=o, rounding=rounding, pairs=p))
    q = q.reshape(-1, k).astype(np.int64)
    lay = _layout(b, o, p)
    n, pb, slot = b, lay["pb"], lay["slot"]
    if not p:
        w, pl = _placement(q, n, lay["shifts"])
        codes = w | (pl << n)
    else:
        if k % 2:
            q = np.concatenate([q, np.zeros((q.shape[0], 1), np.int64)], axis=1)
        x0, x1 = q[:, 0::2], q[:, 1::2]
        w0, p0 = _placement(np.where((x0 != 0) & (x1 != 0), x0, 0), n, lay["shifts"])
        w1, p1 = _placement(np.where((x0 != 0) & (x1 != 0), x1, 0), n, lay["shifts"])
        codes = w0 | (p0 << n) | ((w1 | (p1 << n)) << slot)
        lone = (x0 != 0) ^ (x1 != 0)  # exactly one member nonzero: the 2n-bit window case
        j = (x1 != 0).astype(np.int64)
        w2, p2 = _placement(np.where(x0 != 0, x0, x1), 2 * n, lay["wide"])
        payload2 = w2 | (p2 << (2 * n))
        if lay["escape"]:
            esc = (1 << pb) - 1
            low, rest = payload2 & ((1 << n) - 1), payload2 >> n
            slot_j = low | (esc << n)
            esc_codes = np.where(j == 0, slot_j | (rest << slot), rest | (slot_j << slot))
        else:
            esc_codes = (1 << (2 * slot)) | j | (payload2 << 1)
        codes = np.where(lone, esc_codes, codes)
    width = lay["code_bits"]
    packed = _pack_codes(codes, width)
    meta = {
        "shape": tuple(shape), "bits": b, "options": o, "rounding": rounding, "pairs": p,
        "code_bits": width,
        "bytes_per_activation": width / (16 if p else 8),
    }
    return packed.reshape(shape[:-1] + (packed.shape[-1],)), meta


def sparq_decode(payload, meta: dict) -> np.ndarray:
    """The uint8 activations a ``sparq_encode`` payload holds (exact)."""
    b, o, _, p = check_config(meta["bits"], meta["options"], meta["rounding"], meta["pairs"])
    shape = tuple(meta["shape"])
    k = shape[-1]
    pay = np.ascontiguousarray(np.asarray(payload, np.uint8)).reshape(-1, np.asarray(payload).shape[-1])
    lay = _layout(b, o, p)
    n, pb, slot = b, lay["pb"], lay["slot"]
    shifts = np.asarray(lay["shifts"], np.int64)
    nmask, pmask = (1 << n) - 1, (1 << pb) - 1

    def slot_value(c):
        pl = np.minimum((c >> n) & pmask, len(shifts) - 1)  # escape codes are overwritten below
        return (c & nmask) << shifts[pl]

    if not p:
        codes = _unpack_codes(pay, k, lay["code_bits"])
        out = slot_value(codes)
    else:
        npairs = (k + 1) // 2
        codes = _unpack_codes(pay, npairs, lay["code_bits"])
        s0, s1 = codes & ((1 << slot) - 1), (codes >> slot) & ((1 << slot) - 1)
        v0, v1 = slot_value(s0), slot_value(s1)
        wide = np.asarray(lay["wide"], np.int64)

        def wide_value(pl2):
            return (pl2 & ((1 << (2 * n)) - 1)) << wide[np.minimum(pl2 >> (2 * n), len(wide) - 1)]

        if lay["escape"]:
            esc = pmask
            e0 = ((s0 >> n) & pmask) == esc
            e1 = ~e0 & (((s1 >> n) & pmask) == esc)
            p_j0 = (s0 & nmask) | (s1 << n)
            p_j1 = (s1 & nmask) | (s0 << n)
            v0 = np.where(e0, wide_value(p_j0), np.where(e1, 0, v0))
            v1 = np.where(e1, wide_value(p_j1), np.where(e0, 0, v1))
        else:
            flag = (codes >> (2 * slot)) & 1 == 1
            j = codes & 1
            val = wide_value((codes >> 1) & ((1 << (2 * slot)) - 1))
            v0 = np.where(flag, np.where(j == 0, val, 0), v0)
            v1 = np.where(flag, np.where(j == 1, val, 0), v1)
        out = np.stack([v0, v1], axis=2).reshape(pay.shape[0], 2 * npairs)[:, :k]
    return out.astype(np.uint8).reshape(shape)
