"""Plain-numpy integer reference for QuantGRU: one sample and one time step at a time, int64
matrix-vector products, Python-integer rounding shifts. Uses QuantGRU's frozen constants (codes,
integer biases, multipliers, lookup tables) and recomputes the recurrence independently."""
from __future__ import annotations

import numpy as np


def _rq(v: int, s: int, lo: int, hi: int) -> int:
    return min(max((v + (1 << (s - 1))) >> s, lo), hi)


def _m(q, key):
    ms, s = q.mult[key]
    return [np.asarray(m).astype(object) for m in ms], s


def gru_reference(q, x: np.ndarray) -> np.ndarray:
    """x float [B, T, I] (batch first); returns state codes [B, T, H] (int64)."""
    H = q.hidden_size
    wi, wh = q.w_ih.astype(np.int64), q.w_hh.astype(np.int64)
    bi, bh = q.b_ih.numpy(), q.b_hh.numpy()
    lut = {g: q.lut[g].numpy() for g in "rzn"}
    B, T, _ = x.shape
    out = np.zeros((B, T, H), np.int64)
    for b in range(B):
        h = np.zeros(H, np.int64)
        for t in range(T):
            xq = np.clip(np.round(x[b, t].astype(np.float64) / q.s_x), -127, 127).astype(np.int64)
            gi = wi @ xq + bi
            gh = wh @ h + bh
            hn = np.zeros(H, np.int64)
            for j in range(H):
                (mi, mh), s = _m(q, "pre_r")
                pr = _rq(int(gi[j]) * int(mi[j]) + int(gh[j]) * int(mh[j]), s, -q.q_pre["r"], q.q_pre["r"])
                (mi, mh), s = _m(q, "pre_z")
                pz = _rq(int(gi[H + j]) * int(mi[j]) + int(gh[H + j]) * int(mh[j]), s,
                         -q.q_pre["z"], q.q_pre["z"])
                r = int(lut["r"][pr + q.q_pre["r"]])
                z = int(lut["z"][pz + q.q_pre["z"]])
                (m,), s = _m(q, "rn")
                rn = _rq(r * int(gh[2 * H + j]) * int(m[j]), s, -q.q_rn, q.q_rn)
                (mi, mr), s = _m(q, "pre_n")
                pn = _rq(int(gi[2 * H + j]) * int(mi[j]) + rn * int(mr[j]), s,
                         -q.q_pre["n"], q.q_pre["n"])
                n = int(lut["n"][pn + q.q_pre["n"]])
                (m,), s = _m(q, "omz")
                omz = _rq((q.L_z - z) * int(m), s, 0, q.L_omz)
                (m,), s = _m(q, "zn")
                zn = _rq(omz * n * int(m), s, -q.q_zn, q.q_zn)
                (m,), s = _m(q, "zh")
                zh = _rq(z * int(h[j]) * int(m), s, -q.q_zh, q.q_zh)
                (m1, m2), s = _m(q, "h")
                hn[j] = _rq(zn * int(m1) + zh * int(m2), s, -q.q_h, q.q_h)
            h = hn
            out[b, t] = h
    return out
