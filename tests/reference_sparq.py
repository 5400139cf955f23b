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
