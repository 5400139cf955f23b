"""Plain-numpy SPARQ oracle written from algorithms.md section 5 (vectorized, never optimized).

bSPARQ: p = leading-one index; shift s = min{t in S : t + n - 1 >= p} on the unrounded value;
window w = a >> s; trunc -> w << s; round -> half-to-even on the window LSB, and a carry-out
(w == 2**n) saturates to 2**n - 1 at the same shift. vSPARQ: pairs (k, k+1), k even; a zero
partner (or an odd tail, paired with an implicit zero) gives the other a 2n-bit window with
every placement allowed; otherwise both get bSPARQ.
"""
from __future__ import annotations

import numpy as np

SHIFTS = {
    (4, 5): [4, 3, 2, 1, 0],
    (4, 3): [4, 2, 0],
    (4, 2): [4, 0],
    (3, 6): [5, 4, 3, 2, 1, 0],
    (2, 7): [6, 5, 4, 3, 2, 1, 0],
}
CONFIGS = [(4, 5), (4, 3), (4, 2), (3, 6), (2, 7)]


def window_ref(a: np.ndarray, n: int, shifts, rounding: str) -> np.ndarray:
    """One value at a time (elementwise): an n-bit window at the allowed shifts."""
    a = np.asarray(a).astype(np.int64)
    p = np.zeros_like(a)
    for b in range(8):
        p = np.where((a >> b) != 0, b, p)  # ends at the highest set bit
    s = np.full_like(a, -1)
    for t in sorted(shifts, reverse=True):  # the smallest qualifying t wins
        s = np.where(t + n - 1 >= p, t, s)
    assert (s >= 0).all()
    w = a >> s
    if rounding == "round":
        rem = a & ((1 << s) - 1)
        half = np.where(s > 0, 1 << np.maximum(s - 1, 0), 0)
        up = (s > 0) & ((rem > half) | ((rem == half) & (w % 2 == 1)))
        w = w + up
        w = np.where(w == (1 << n), (1 << n) - 1, w)
    else:
        assert rounding == "trunc"
    return (w << s).astype(np.uint8)


def sparq_ref(a: np.ndarray, bits: int = 4, options: int = 5, rounding: str = "round",
              pairs: bool = True) -> np.ndarray:
    a = np.asarray(a, np.uint8)
    shifts = SHIFTS[(bits, options)]
    base = window_ref(a, bits, shifts, rounding)
    if not pairs:
        return base
    k = a.shape[-1]
    padded = np.concatenate([a, np.zeros(a.shape[:-1] + (k % 2,), np.uint8)], axis=-1)
    partner = padded.reshape(a.shape[:-1] + (padded.shape[-1] // 2, 2))[..., ::-1].reshape(padded.shape)[..., :k]
    wide = window_ref(a, 2 * bits, list(range(9 - 2 * bits)), rounding)
    return np.where((partner == 0) | (a == 0), wide, base).astype(np.uint8)


# ---- the compact format, as pyquant/sparq.py describes it (numpy, the codec oracle) ---

def _layout(bits, options, pairs):
    shifts = sorted(SHIFTS[(bits, options)])
    pb = (len(shifts) - 1).bit_length()
    slot = bits + pb
    wide = list(range(9 - 2 * bits))
    escape = len(shifts) < (1 << pb)
    code_bits = (2 * slot + (0 if escape else 1)) if pairs else slot
    return shifts, wide, pb, slot, escape, code_bits


def _placement(values, nw, shifts):
    """window | placement << nw at the smallest allowed shift holding each value exactly."""
    v = np.asarray(values, np.int64)
    code = np.full(v.shape, -1, np.int64)
    for i, s in enumerate(shifts):
        ok = (code < 0) & ((v >> s) < (1 << nw)) & ((v & ((1 << s) - 1)) == 0)
        code = np.where(ok, (v >> s) | (i << nw), code)
    assert (code >= 0).all()
    return code


def _pack(codes, width):
    rows, c = codes.shape
    bits = ((codes[..., None] >> np.arange(width)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(rows, c * width), axis=1, bitorder="little")


def _unpack(payload, c, width):
    bits = np.unpackbits(payload, axis=1, count=c * width, bitorder="little")
    return (bits.reshape(payload.shape[0], c, width).astype(np.int64) << np.arange(width)).sum(2)


def encode_ref(q, bits, options, pairs):
    """Trimmed values q [rows, K] -> payload [rows, bytes]."""
    shifts, wide, pb, slot, escape, width = _layout(bits, options, pairs)
    q = np.asarray(q, np.int64)
    n = bits
    if not pairs:
        return _pack(_placement(q, n, shifts), width)
    if q.shape[1] % 2:
        q = np.concatenate([q, np.zeros((q.shape[0], 1), np.int64)], axis=1)
    x0, x1 = q[:, 0::2], q[:, 1::2]
    both = (x0 != 0) & (x1 != 0)
    codes = (_placement(np.where(both, x0, 0), n, shifts)
             | (_placement(np.where(both, x1, 0), n, shifts) << slot))
    lone = (x0 != 0) ^ (x1 != 0)
    j = (x1 != 0).astype(np.int64)
    p = _placement(np.where(x0 != 0, x0, x1), 2 * n, wide)
    if escape:
        mine = (p & ((1 << n) - 1)) | (((1 << pb) - 1) << n)
        other = p >> n
        esc = np.where(j == 0, mine | (other << slot), other | (mine << slot))
    else:
        esc = (1 << (2 * slot)) | j | (p << 1)
    return _pack(np.where(lone, esc, codes), width)


def decode_ref(payload, k, bits, options, pairs):
    shifts, wide, pb, slot, escape, width = _layout(bits, options, pairs)
    n = bits
    sh, wd = np.array(shifts), np.array(wide)

    def val(code, nw, table):
        return (code & ((1 << nw) - 1)) << table[np.minimum(code >> nw, len(table) - 1)]

    if not pairs:
        return val(_unpack(payload, k, width), n, sh).astype(np.uint8)
    codes = _unpack(payload, (k + 1) // 2, width)
    s0, s1 = codes & ((1 << slot) - 1), (codes >> slot) & ((1 << slot) - 1)
    v0, v1 = val(s0, n, sh), val(s1, n, sh)
    if escape:
        e0 = (s0 >> n) == (1 << pb) - 1
        e1 = ~e0 & ((s1 >> n) == (1 << pb) - 1)
        w0 = val((s0 & ((1 << n) - 1)) | (s1 << n), 2 * n, wd)
        w1 = val((s1 & ((1 << n) - 1)) | (s0 << n), 2 * n, wd)
        v0, v1 = np.where(e0, w0, np.where(e1, 0, v0)), np.where(e1, w1, np.where(e0, 0, v1))
    else:
        flag = ((codes >> (2 * slot)) & 1) == 1
        j = codes & 1
        w = val((codes >> 1) & ((1 << (2 * n + (len(wide) - 1).bit_length())) - 1), 2 * n, wd)
        v0 = np.where(flag, np.where(j == 0, w, 0), v0)
        v1 = np.where(flag, np.where(j == 1, w, 0), v1)
    out = np.stack([v0, v1], axis=2).reshape(payload.shape[0], -1)[:, :k]
    return out.astype(np.uint8)


# ---- SPARQ with 2:4-sparse weights (issue 17), written from the text ----
# K in aligned groups of 4 (the last partial group padded with zero weights and activations).
# Per output channel and group: no non-zero weight -> nothing; one non-zero at j -> a[j] trimmed
# as with a zero partner (2n-bit window, every placement; plain bSPARQ with pairs=False); two
# non-zeros at i0 < i1 -> (a[i0], a[i1]) is a vSPARQ pair (both bSPARQ, or the zero-partner rule
# if either activation is 0; bSPARQ each with pairs=False).

def prune_24_ref(w: np.ndarray) -> np.ndarray:
    """Keeps the two largest |w| of every aligned group of 4 (ties: lower index), loop form."""
    w = np.asarray(w)
    out = np.zeros_like(w)
    flat, res = w.reshape(-1, w.shape[-1]), out.reshape(-1, w.shape[-1])
    for r in range(flat.shape[0]):
        for g0 in range(0, flat.shape[1], 4):
            idx = list(range(g0, min(g0 + 4, flat.shape[1])))
            order = sorted(idx, key=lambda i: (-abs(float(flat[r, i])), i))
            for i in order[:2]:
                res[r, i] = flat[r, i]
    return out


def sparq24_ref(a: np.ndarray, w: np.ndarray, bits: int = 4, options: int = 5,
                rounding: str = "round", pairs: bool = True) -> np.ndarray:
    """int64 [M, N] of the 2:4 SPARQ product; asserts w is 2:4 sparse. Signed (int16) a:
    sign-magnitude, sign(a) * the trimmed |a|, the pair rule on the magnitudes."""
    a = np.asarray(a)
    sign = np.where(a < 0, -1, 1).astype(np.int64)
    a = np.abs(a.astype(np.int64)).astype(np.uint8)
    w = np.asarray(w, np.int8)
    m, k = a.shape
    n = w.shape[0]
    kp = -(-k // 4) * 4
    ap = np.zeros((m, kp), np.uint8)
    ap[:, :k] = a
    sp = np.ones((m, kp), np.int64)
    sp[:, :k] = sign
    wp = np.zeros((n, kp), np.int64)
    wp[:, :k] = w
    g = kp // 4
    base = window_ref(ap, bits, SHIFTS[(bits, options)], rounding).astype(np.int64)
    wide = (window_ref(ap, 2 * bits, list(range(9 - 2 * bits)), rounding).astype(np.int64)
            if pairs else base)
    nz = (wp != 0).reshape(n, g, 4)
    count = nz.sum(-1)
    assert (count <= 2).all(), "w is not 2:4 sparse"
    # first and second non-zero position per (n, group); -1 if absent
    pos = np.arange(4)
    i0 = np.where(count >= 1, np.argmax(nz, -1), -1)
    second = nz & (pos > np.where(i0 >= 0, i0, 9)[..., None])
    i1 = np.where(count == 2, np.argmax(second, -1), -1)
    out = np.zeros((m, n), np.int64)
    col = (np.arange(g) * 4)[None, :]  # [1, g]
    for nn in range(n):
        j0, j1 = i0[nn], i1[nn]                      # [g]
        k0, k1 = col[0] + np.maximum(j0, 0), col[0] + np.maximum(j1, 0)
        x0, x1 = ap[:, k0].astype(np.int64), ap[:, k1].astype(np.int64)   # [m, g]
        w0 = np.where(j0 >= 0, wp[nn, k0], 0)
        w1 = np.where(j1 >= 0, wp[nn, k1], 0)
        single = (j0 >= 0) & (j1 < 0)
        zp = (x0 == 0) | (x1 == 0) | single[None, :]
        t0 = np.where(zp, wide[:, k0], base[:, k0]) * sp[:, k0]
        t1 = np.where(zp, wide[:, k1], base[:, k1]) * sp[:, k1]
        t1 = np.where(single[None, :], 0, t1)
        out[:, nn] = (t0 * w0).sum(1) + (t1 * w1).sum(1)
    return out
