"""The integer ops the modules call: pyquant's kernels, or pure-PyTorch references.

Modules only see ``prepack(op, w, **kw) -> uint8 tensor`` and ``gemm(op, a, packed, n, k, **kw)
-> int32 [M, N]``. The kernel path stores the kernel's self-describing packed buffer; the reference
path (``use_reference()``, for tests and for ops not built yet) stores the raw int8 codes and
computes with float64 matmuls, which are exact for these integer ranges.
"""
from __future__ import annotations

import contextlib
import functools

import torch

import pyquant
from pyquant.packed import PackedWeight

_reference = False


@contextlib.contextmanager
def use_reference(enabled: bool = True):
    """Within the block, new modules pack and run with the pure-PyTorch reference ops."""
    global _reference
    old, _reference = _reference, enabled
    try:
        yield
    finally:
        _reference = old


def is_reference() -> bool:
    return _reference


def available(op: str) -> bool:
    if op == "sparq24_gemm":  # sparq_gemm(..., sparse24=True)
        return hasattr(pyquant, "sparq_gemm")
    return hasattr(pyquant, op)


def require(op: str) -> None:
    if not _reference and not available(op):
        raise RuntimeError(
            f"pyquant.{op} is not available in this build; this config needs it "
            "(use pyquant.nn.use_reference() for the slow pure-PyTorch path)"
        )


# ---------------------------------------------------------------- packing
def prepack(op: str, w: torch.Tensor, **kw) -> torch.Tensor:
    """w: int8 codes [N, K] (uint8 codes for lut_gemm) -> 1-D uint8 buffer (kernel or reference)."""
    if _reference:
        return w.contiguous().view(torch.uint8).reshape(-1).clone()
    require(op)
    pw = pyquant.prepack(w.contiguous(), op, **kw)
    return torch.from_numpy(pw.buffer.copy())


def _packed(buf: torch.Tensor, op: str, kw: dict) -> PackedWeight:
    return PackedWeight(buf.numpy(), op, kw)


def packed_shape(buf: torch.Tensor, op: str, **kw) -> tuple[int, int]:
    """(N, K) of a packed kernel buffer, from its validated header."""
    return _packed(buf, op, kw).shape


# ---------------------------------------------------------------- GEMMs (int32 [M, N])
def gemm(op: str, a: torch.Tensor, buf: torch.Tensor, n: int, k: int, reference: bool, **kw):
    """int32 [M, N] (float32 for lowbit_gemm_grouped, whose weight is packed for lowbit_gemm)."""
    if reference:
        return _REF_GEMMS[op](a, buf, n, k, **kw)
    if op == "sparq24_gemm":
        return pyquant.sparq_gemm(a, _packed(buf, op, kw), sparse24=True, **kw)
    fn = getattr(pyquant, op)
    if op == "lowbit_gemm_grouped":
        return fn(a, _packed(buf, "lowbit_gemm", {"bits": kw["bits"]}), **kw)
    return fn(a, _packed(buf, op, kw), **kw)


def sparq_quantize(a: torch.Tensor, reference: bool, **kw) -> torch.Tensor:
    if reference:
        return sparq_quantize_ref(a, **kw)
    return pyquant.sparq_quantize(a, **kw)


def _exact_mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # float64 holds every partial sum exactly while |sum| < 2**53.
    return torch.round(a.to(torch.float64) @ w.to(torch.float64).T).to(torch.int32)


def _ref_int8(a, buf, n, k, **kw):
    return _exact_mm(a, buf.view(torch.int8).reshape(n, k))


def _ref_lowbit(a, buf, n, k, *, bits):
    return _exact_mm(a, buf.view(torch.int8).reshape(n, k))


def _ref_lowbit_grouped(a, buf, n, k, *, bits, group_size, scales):
    w = buf.view(torch.int8).reshape(n, k)
    y = torch.zeros(a.shape[0], n, dtype=torch.float64)
    for g, lo in enumerate(range(0, k, group_size)):
        y += _exact_mm(a[:, lo:lo + group_size], w[:, lo:lo + group_size]) * scales[:, g].double()
    return y.float()


def _ref_lut(a, buf, n, k, *, a_levels, w_levels):
    al = torch.tensor(a_levels, dtype=torch.float64)
    wl = torch.tensor(w_levels, dtype=torch.float64)
    return _exact_mm(al[a.long()], wl[buf.reshape(n, k).long()])


def _ref_sparq(a, buf, n, k, **kw):
    return _exact_mm(sparq_quantize_ref(a, **kw), buf.view(torch.int8).reshape(n, k))


def _ref_sparq24(a, buf, n, k, *, bits=4, options=5, rounding="round", pairs=True):
    """2:4 SPARQ (each output channel pairs the activations at its own non-zero weights of every
    aligned group of 4; a single non-zero keeps its activation as with a zero partner). Signed
    (int16) activations: sign-magnitude, pairs judged on the magnitudes."""
    narrow, wide = sparq_tables(bits, options, rounding)
    if not pairs:
        wide = narrow
    w = buf.view(torch.int8).reshape(n, k).long()
    kp = -(-k // 4) * 4
    w = torch.nn.functional.pad(w, (0, kp - k)).reshape(n, kp // 4, 4)
    ag = torch.nn.functional.pad(a.long().abs(), (0, kp - k)).reshape(a.shape[0], 1, kp // 4, 4)
    sg = torch.nn.functional.pad(torch.where(a < 0, -1, 1), (0, kp - k), value=1)
    sg = torch.nn.functional.pad(sg.reshape(a.shape[0], 1, kp // 4, 4), (0, 1), value=1)
    nz = w != 0
    if bool((nz.sum(-1) > 2).any()):
        raise ValueError("w: not 2:4 sparse")
    # first / second non-zero position per (n, group) (4: none)
    pos = torch.arange(4).expand_as(w)
    i0 = torch.where(nz, pos, 4).amin(-1)
    i1 = torch.where(nz & (pos > i0[..., None]), pos, 4).amin(-1)
    ag = torch.nn.functional.pad(ag, (0, 1))  # position 4: a zero activation
    pick = lambda t, i: torch.gather(t.expand(-1, n, -1, -1), 3,
                                     i[None, ..., None].expand(a.shape[0], -1, -1, 1))[..., 0]
    x0, x1 = pick(ag, i0), pick(ag, i1)
    s0, s1 = pick(sg, i0), pick(sg, i1)  # the selected activations' signs
    w5 = torch.nn.functional.pad(w, (0, 1))
    w0 = torch.gather(w5, 2, i0[..., None])[..., 0]
    w1 = torch.gather(w5, 2, i1[..., None])[..., 0]
    zp = (x0 == 0) | (x1 == 0)  # a single non-zero weight: x1 is the zero activation
    t0 = (torch.where(zp, wide[x0], narrow[x0]) * s0).double()
    t1 = (torch.where(zp, wide[x1], narrow[x1]) * s1).double()
    acc = (t0 * w0.double()).sum(-1) + (t1 * w1.double()).sum(-1)
    return torch.round(acc).to(torch.int64).to(torch.int32)


_REF_GEMMS = {"int8_gemm": _ref_int8, "sparq24_gemm": _ref_sparq24, "lowbit_gemm": _ref_lowbit, "lowbit_gemm_grouped": _ref_lowbit_grouped,
              "lut_gemm": _ref_lut,
              "sparq_gemm": _ref_sparq}


# ---------------------------------------------------------------- SPARQ reference (algorithms.md 5)
_SHIFTS = {(4, 5): (4, 3, 2, 1, 0), (4, 3): (4, 2, 0), (4, 2): (4, 0),
           (3, 6): (5, 4, 3, 2, 1, 0), (2, 7): (6, 5, 4, 3, 2, 1, 0)}
# When the pair partner is zero: a 2n-bit window, every placement allowed.
_WIDE = {4: (8, (0,)), 3: (6, (2, 1, 0)), 2: (4, (4, 3, 2, 1, 0))}


def _trim(v: int, n: int, shifts, rounding: str) -> int:
    if v == 0:
        return 0
    p = v.bit_length() - 1
    s = min(t for t in shifts if t + n - 1 >= p)
    w = v >> s
    if rounding == "round" and s > 0:
        dropped, half = v & ((1 << s) - 1), 1 << (s - 1)
        if dropped > half or (dropped == half and (w & 1)):
            w += 1
        if w == 1 << n:
            w -= 1
    return w << s


@functools.lru_cache(maxsize=None)
def sparq_tables(bits: int, options: int, rounding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(bSPARQ table, wide-window table), each uint8 [256]: value -> trimmed value."""
    narrow = [_trim(v, bits, _SHIFTS[(bits, options)], rounding) for v in range(256)]
    wn, ws = _WIDE[bits]
    wide = [_trim(v, wn, ws, rounding) for v in range(256)]
    return torch.tensor(narrow, dtype=torch.uint8), torch.tensor(wide, dtype=torch.uint8)


def sparq_quantize_ref(a: torch.Tensor, *, bits=4, options=5, rounding="round", pairs=True):
    """Pure-PyTorch sparq_quantize: uint8 [..., K] -> uint8, pairs (k, k+1) along the last axis."""
    narrow, wide = sparq_tables(bits, options, rounding)
    idx = a.long()
    if not pairs:
        return narrow[idx]
    k = a.shape[-1]
    padded = torch.nn.functional.pad(a, (0, k % 2)) if k % 2 else a
    pr = padded.reshape(*padded.shape[:-1], padded.shape[-1] // 2, 2)  # (-1 fails on 0 rows)
    partner_zero = pr.flip(-1) == 0
    out = torch.where(partner_zero, wide[pr.long()], narrow[pr.long()])
    return out.reshape(*padded.shape)[..., :k]


__all__ = ["use_reference", "is_reference", "available", "prepack", "gemm", "sparq_quantize",
           "sparq_quantize_ref", "sparq_tables"]
