"""Packed weights of every op, the native and Python calls that consume them, and header edits.

Shared by tests/test_untrusted.py (every header field edited, one by one) and
tests/test_fuzz_packed.py (seeded random edits). Shapes leave padding in both N and K.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import pyquant
from pyquant import _C
from pyquant.packed import _HEADER, OP_IDS, PackedWeight

M, N, K = 5, 70, 37
A_LEVELS, W_LEVELS = (0, 1, 2, 3), (-3, -1, 1, 3)
SPARQ = dict(bits=4, options=5, rounding="round", pairs=True)
SPARQ_ARGS = (4, 5, True, True)  # the native form of SPARQ
GROUP = 32


@dataclass
class OpCase:
    """A weight packed for `op` and every call that consumes it (label -> fn(buffer))."""
    name: str
    op: str
    params: dict
    buffer: np.ndarray
    calls: dict = field(default_factory=dict)
    k_align: int = 4


def _cases() -> list[OpCase]:
    rng = np.random.default_rng(1234)
    a8 = rng.integers(0, 256, (M, K)).astype(np.uint8)
    a2 = rng.integers(0, 4, (M, K)).astype(np.uint8)
    w8 = rng.integers(-128, 128, (N, K)).astype(np.int8)
    ones_n = np.ones(N, np.float32)
    ones_m = np.ones(M, np.float32)
    # the fused nn forwards (csrc/bindings/bind_forward.cc) take float x and the side tensors
    x = rng.standard_normal((M, K)).astype(np.float32)
    dyn = np.full(2, np.nan, np.float32)
    fwd = hasattr(_C, "forward_int8")
    cases = []

    pw = pyquant.prepack(w8, "int8_gemm")
    cases.append(OpCase("int8_gemm", "int8_gemm", {}, pw.buffer, {
        "_C.int8_gemm": lambda b: _C.int8_gemm(a8, False, b, 1, 1),
        "_C.int8_gemm_dequant": lambda b: _C.int8_gemm_dequant(
            a8, False, b, ones_m, ones_m * 0, ones_n, ones_n * 0, ones_n, 1),
        "pyquant.int8_gemm": lambda b: pyquant.int8_gemm(a8, PackedWeight(b, "int8_gemm")),
        **({"_C.forward_int8": lambda b: _C.forward_int8(x, b, ones_n, ones_n, None, dyn)}
           if fwd else {}),
    }))

    wl = rng.integers(0, 4, (N, K)).astype(np.uint8)
    pw = pyquant.prepack(wl, "lut_gemm", w_levels=W_LEVELS)
    cases.append(OpCase("lut_gemm", "lut_gemm", dict(pw.params), pw.buffer, {
        "_C.lut_gemm": lambda b: _C.lut_gemm(a2, b, list(A_LEVELS), list(W_LEVELS), 1, "auto"),
        "pyquant.lut_gemm": lambda b: pyquant.lut_gemm(
            a2, PackedWeight(b, "lut_gemm", {"w_levels": W_LEVELS}), a_levels=A_LEVELS,
            w_levels=W_LEVELS),
        **({"_C.forward_lut": lambda b: _C.forward_lut(
            x, b, list(A_LEVELS), list(W_LEVELS), False, ones_n, ones_n, None, dyn)}
           if fwd else {}),
    }, k_align=12))

    for bits in (4, 2):
        half = 1 << (bits - 1)
        wb = rng.integers(-half, half, (N, K)).astype(np.int8)
        pw = pyquant.prepack(wb, "lowbit_gemm", bits=bits)
        # bfloat16 values (what lowbit_panel_scales takes): float32 with the low 16 bits zero
        scales = (rng.random((N, -(-K // GROUP))).astype(np.float32).view(np.uint32)
                  & 0xFFFF0000).view(np.float32)
        cases.append(OpCase(f"lowbit_gemm{bits}", "lowbit_gemm", {"bits": bits}, pw.buffer, {
            "_C.lowbit_gemm": lambda b, bits=bits: _C.lowbit_gemm(a8, False, b, bits, 1),
            "_C.lowbit_gemm_grouped": lambda b, bits=bits, s=scales: _C.lowbit_gemm_grouped(
                a8, False, b, bits, GROUP, s, 1),
            "pyquant.lowbit_gemm": lambda b, bits=bits: pyquant.lowbit_gemm(
                a8, PackedWeight(b, "lowbit_gemm", {"bits": bits}), bits=bits),
            **({"_C.forward_lowbit": lambda b, bits=bits, s=scales: _C.forward_lowbit(
                x, b, bits, GROUP, _C.lowbit_panel_scales(s), ones_n, None, dyn)}
               if fwd else {}),
        }))

    pw = pyquant.prepack(w8, "sparq_gemm", **SPARQ)
    payload, meta = pyquant.sparq_encode(a8, **SPARQ)
    cases.append(OpCase("sparq_gemm", "sparq_gemm", dict(pw.params), pw.buffer, {
        "_C.sparq_gemm": lambda b: _C.sparq_gemm(a8, b, *SPARQ_ARGS, 1),
        "_C.sparq_gemm_encoded": lambda b: _C.sparq_gemm_encoded(payload, K, b, *SPARQ_ARGS, 1),
        "pyquant.sparq_gemm": lambda b: pyquant.sparq_gemm(
            a8, PackedWeight(b, "sparq_gemm", dict(SPARQ)), **SPARQ),
        **({"_C.forward_sparq": lambda b: _C.forward_sparq(
            np.abs(x), b, *SPARQ_ARGS, False, ones_n, None, dyn)} if fwd else {}),
    }))
    w24 = pyquant.prune_24(w8)
    pw = pyquant.prepack(w24, "sparq24_gemm", **SPARQ)
    cases.append(OpCase("sparq24_gemm", "sparq24_gemm", dict(pw.params), pw.buffer, {
        "_C.sparq24_gemm": lambda b: _C.sparq24_gemm(a8, b, *SPARQ_ARGS, 1),
        "_C.sparq24_gemm_signed": lambda b: _C.sparq24_gemm_signed(
            a8.astype(np.int16) - 128, b, *SPARQ_ARGS, 1),
        "pyquant.sparq_gemm(sparse24)": lambda b: pyquant.sparq_gemm(
            a8, PackedWeight(b, "sparq24_gemm", dict(SPARQ)), sparse24=True, **SPARQ),
        **({"_C.forward_sparq24": lambda b: _C.forward_sparq24(
            x, b, *SPARQ_ARGS, True, ones_n, None, dyn)} if hasattr(_C, "forward_sparq24")
           else {}),
    }))
    return cases


CASES = _cases()
CASE_IDS = [c.name for c in CASES]

FIELDS = [name for name in _HEADER.names]


def header(buf: np.ndarray) -> np.void:
    return buf[:64].view(_HEADER)[0]


def with_field(buf: np.ndarray, name: str, value) -> np.ndarray:
    """A copy of `buf` with header field `name` set to `value` (wrapped to the field's width)."""
    out = buf.copy()
    h = out[:64].view(_HEADER)
    dt = _HEADER.fields[name][0]
    if name == "magic":
        h[name] = value
    elif dt.shape:  # w_levels
        h[name] = np.asarray(value, np.int64).astype(np.int8)
    else:
        bits = dt.itemsize * 8
        h[name] = np.asarray(int(value) % (1 << bits), dtype=np.uint64).astype(dt)
    return out


def sparq_flags(bits, options, rounding, pairs) -> int:
    """A SPARQ config's header flags, read from a packed weight (not re-derived here)."""
    w = np.zeros((1, 1), np.int8)
    return int(header(pyquant.prepack(w, "sparq_gemm", bits=bits, options=options,
                                      rounding=rounding, pairs=pairs).buffer)["flags"])


def structural_edits(case: OpCase) -> list[tuple[str, np.ndarray]]:
    """(label, buffer) edits that leave a header no packer writes, or a buffer of the wrong size:
    each must fail _C.validate_packed and every call."""
    buf = case.buffer
    h = header(buf)
    n, k, size = int(h["n"]), int(h["k"]), buf.size
    other_ops = [v for name, v in OP_IDS.items() if name != case.op]
    edits = [
        ("magic=PQWX", with_field(buf, "magic", b"PQWX")),
        ("magic=0", with_field(buf, "magic", b"\0\0\0\0")),
        *[(f"version={v}", with_field(buf, "version", v)) for v in (0, 2, 0xFFFF)],
        *[(f"op={v}", with_field(buf, "op", v))
          for v in (0, max(OP_IDS.values()) + 1, 0xFFFF, *other_ops)],
        *[(f"n={v}", with_field(buf, "n", v)) for v in (n + 64, 0, 2**31 - 1, 2**31, 2**32 - 1)],
        *[(f"k={v}", with_field(buf, "k", v))
          for v in (k + case.k_align, 0, 2**24 - 1, 2**24, 2**31 - 1, 2**32 - 1)],
        *[(f"n_padded={v}", with_field(buf, "n_padded", v))
          for v in (int(h["n_padded"]) + 64, n, 0, 2**32 - 1)],
        *[(f"k_padded={v}", with_field(buf, "k_padded", v))
          for v in (int(h["k_padded"]) + case.k_align, k, 0, 2**32 - 1)],
        *[(f"bits={v}", with_field(buf, "bits", v))
          for v in (0, 1, 3, 8, 16, 0xFFFF) if v != int(h["bits"])],
        *[(f"nr={v}", with_field(buf, "nr", v))
          for v in (0, 32, 64, 128, 0xFFFF) if v != int(h["nr"])],
        *[(f"kr={v}", with_field(buf, "kr", v)) for v in (0, 1, 8, 0xFFFF)],
        ("reserved=1", with_field(buf, "reserved", 1)),
        ("reserved=-1", with_field(buf, "reserved", -1)),
        *[(f"data_offset={v}", with_field(buf, "data_offset", v))
          for v in (0, 63, 128, size, 2**63, 2**64 - 1)],
        *[(f"aux_offset={v}", with_field(buf, "aux_offset", v))
          for v in {0, 64, int(h["aux_offset"]) + 64, size, 2**64 - 1} - {int(h["aux_offset"])}],
        *[(f"total_bytes={v}", with_field(buf, "total_bytes", v))
          for v in (size - 1, size + 64, 0, 2**64 - 1)],
        ("truncated-1", buf[:-1].copy()),
        ("truncated-64", buf[:-64].copy()),
        ("truncated-to-header", buf[:64].copy()),
        ("truncated-to-63", buf[:63].copy()),
        ("empty", buf[:0].copy()),
        ("extended+1", np.concatenate([buf, np.zeros(1, np.uint8)])),
        ("extended+64", np.concatenate([buf, np.zeros(64, np.uint8)])),
    ]
    if case.op == "lowbit_gemm":  # the other bit width: a different size
        edits.append((f"bits={6 - int(h['bits'])}", with_field(buf, "bits", 6 - int(h["bits"]))))
    if case.op == "lut_gemm":
        edits.append(("flags=1", with_field(buf, "flags", 1)))
    else:  # only lut_gemm has a codebook
        edits.append(("w_levels=(1,0,0,0)", with_field(buf, "w_levels", (1, 0, 0, 0))))
    if case.op in ("sparq_gemm", "sparq24_gemm"):
        edits += [(f"flags={v}", with_field(buf, "flags", v))
                  for v in (0, 1, int(h["flags"]) ^ 0x8000, 0xFFFF)]
    else:
        edits += [(f"flags={v}", with_field(buf, "flags", v)) for v in (2, 0xFFFF)]
    return edits


def consistent_edits(case: OpCase) -> list[tuple[str, np.ndarray]]:
    """Edits that leave a header some packer writes (so _C.validate_packed alone accepts it) but
    that disagree with the call's arguments: K within the padding, another codebook, another
    SPARQ config. Every call must refuse them."""
    buf = case.buffer
    h = header(buf)
    edits = [("k+1 (within padding)", with_field(buf, "k", int(h["k"]) + 1))]
    if case.op == "lut_gemm":
        edits.append(("w_levels=(-2,-1,0,1)", with_field(buf, "w_levels", (-2, -1, 0, 1))))
    if case.op in ("sparq_gemm", "sparq24_gemm"):
        for cfg in ((4, 3, "round", True), (4, 5, "trunc", True), (4, 5, "round", False),
                    (2, 7, "round", True)):
            edits.append((f"flags=sparq{cfg}", with_field(buf, "flags", sparq_flags(*cfg))))
    return edits
