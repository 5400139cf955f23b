"""Fused forwards (one native call per layer) against independent references written here.

The weights are built lossless for the module's quantizer (codes times a per-row or per-group
power-of-two scale whose largest code is present, so the clipping searches pick ratio 1 with
zero error): the reference knows the integer codes and scales without calling pyquant. The
activation quantizers are re-implemented below in numpy float32 from their documented
definitions (csrc/quantize/*.h) and must give the same codes; integer products run in float64
(exact); the epilogue is compared in float64 with a bound of a few float32 roundings of the
terms it adds. Every test runs on every ISA path this CPU has (`isa` fixture), and the outputs of
the paths are bit-identical.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pyquant
from pyquant import _C
from pyquant.nn import QuantLinear

from reference_sparq import sparq_ref

EPS = np.finfo(np.float32).eps
SHAPES = [(1, 96, 70), (1, 260, 200), (3, 130, 67), (17, 256, 130), (6, 1000, 70),  # multi-chunk groups, K tail
          (10, 70, 136), (2, 64, 40),  # row tiles of 4 and 2 after a full 6 (AVX-512 MR)
          (7, 70, 1100),  # AVX2 9-bit rows: a 4-row and a 3-row int16 tile, two K blocks
          (9, 33, 27),  # K < 32: a row that is all tail (an RGB stem conv's 3x3x3)
          (40, 1030, 70),  # AMX: 3 row tiles (the last of 8 rows), a K tail inside the last group
          (77, 600, 70),  # AMX: a 64-row call + 13 rows, three K blocks
          (150, 70, 2100),  # rows split in chunks whose 8.4 KB output rows stay in L2 (core/gemm_tasks.h)
          (1, 2144, 70)]  # decode over many groups (67 at g32, 17 at g128: odd counts)


# ---------------------------------------------------------------- lossless weights
def _pow2_scales(rng, shape):
    return (2.0 ** rng.integers(-9, -4, size=shape)).astype(np.float32)


def int8_weight(rng, n, k):
    codes = rng.integers(-127, 128, size=(n, k)).astype(np.int64)
    codes[np.arange(n), rng.integers(0, k, n)] = 127 * rng.choice([-1, 1], n)  # amax = 127 s
    s = _pow2_scales(rng, n)
    return codes, s, (codes * s[:, None]).astype(np.float32)


def lowbit_weight(rng, n, k, bits, gs):
    qmax = (1 << (bits - 1)) - 1
    codes = rng.integers(-qmax, qmax + 1, size=(n, k)).astype(np.int64)  # symmetric: |code| <= qmax
    g = -(-k // gs)
    for j in range(g):  # every group holds +qmax once, so its amax is qmax * s exactly
        lo, hi = j * gs, min(k, (j + 1) * gs)
        codes[np.arange(n), lo + rng.integers(0, hi - lo, n)] = qmax
    s = _pow2_scales(rng, (n, g))
    w = codes * np.repeat(s, gs, axis=1)[:, :k]
    return codes, s, w.astype(np.float32)


def lut_weight(rng, n, k, w_levels):
    codes = rng.integers(0, 4, size=(n, k))
    top = int(np.argmax(np.abs(w_levels)))
    codes[np.arange(n), rng.integers(0, k, n)] = top
    s = _pow2_scales(rng, n)
    return codes, s, (np.asarray(w_levels)[codes] * s[:, None]).astype(np.float32)


def module(w, bias, config):
    n, k = w.shape
    lin = torch.nn.Linear(k, n, bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        if bias is not None:
            lin.bias.copy_(torch.from_numpy(bias))
    return QuantLinear.from_linear(lin, config)


# ---------------------------------------------------------------- activation references (numpy)
f32 = np.float32


def ref_asym_u8(x, act=None, qmax=255):
    """Asymmetric uint8 rows, codes 0..qmax (row_quantize.h)."""
    if act is None:
        lo, hi = np.minimum(x.min(1), f32(0)), np.maximum(x.max(1), f32(0))
    else:
        lo = np.full(x.shape[0], min(act[0], f32(0)), f32)
        hi = np.full(x.shape[0], max(act[1], f32(0)), f32)
    with np.errstate(over="ignore"):
        s = ((hi - lo) / f32(qmax)).astype(f32)
    wide = np.isinf(s) & np.isfinite(lo) & np.isfinite(hi)  # hi - lo overflowed: in double
    s = np.where(wide, (hi.astype(np.float64) - lo) / qmax, s).astype(f32)
    s = np.where(s > 0, s, f32(1)).astype(f32)
    zp = np.clip(np.rint((-lo / s).astype(f32)), 0, qmax).astype(f32) + f32(0)
    inv = (f32(1) / s).astype(f32)
    t = (x * inv[:, None]).astype(f32)
    t = (t + (zp + f32(0.5))[:, None]).astype(f32)
    return np.clip(t, 0, f32(qmax + 0.25)).astype(np.uint8), s, zp


def ref_abs_u8(x, act=None):
    """SPARQ magnitudes (act_quantize.h)."""
    ax = np.abs(x)
    amax = ax.max(1) if act is None else np.full(x.shape[0], max(abs(act[0]), abs(act[1])), f32)
    s = np.where(amax > 0, (amax / f32(255)).astype(f32), f32(1)).astype(f32)
    t = (ax * (f32(1) / s)[:, None]).astype(f32)
    t = np.minimum((t + f32(0.5)).astype(f32), f32(255.25))
    return t.astype(np.uint8), s


def _wide(lo, hi):
    """Finite lo, hi whose difference overflows float32 (row_quantize.h range_overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(lo) and np.isfinite(hi) and np.isinf(f32(hi) - f32(lo)))


def _lut_minmax(lo, hi, srt):
    if _wide(lo, hi):  # s and off in double
        ds = (float(hi) - float(lo)) / (srt[3] - srt[0])
        return f32(ds), f32(float(lo) - ds * srt[0])
    s = f32((f32(hi) - f32(lo)) / f32(srt[3] - srt[0]))
    s = s if s > 0 else f32(1)
    return s, f32(f32(lo) - f32(s * f32(srt[0])))


def _lut_range(row):
    """NaN values skipped; an all-NaN row gives NaN."""
    if np.isnan(row).all():
        return f32(np.nan), f32(np.nan)
    return np.nanmin(row), np.nanmax(row)


def _lut_mse(row, srt, bins=512):
    """The histogram clipping estimator, one row, plain loops in float64."""
    lo, hi = _lut_range(row)
    if not hi > lo or _wide(lo, hi):
        return _lut_minmax(lo, hi, srt)
    inv_bw = f32(f32(bins) / f32(hi - lo))
    t = (((row - lo).astype(f32)) * inv_bw).astype(f32)
    b = np.where(t > 0, np.minimum(t, bins - 1), 0).astype(np.int64)  # NaN -> bin 0
    counts = np.bincount(b, minlength=bins).astype(np.float64)
    width = (float(hi) - float(lo)) / bins
    centres = float(lo) + (np.arange(bins) + 0.5) * width
    occ = counts > 0
    c, wgt = centres[occ], counts[occ]
    mu = float(np.sum(wgt * c)) / row.size
    mids = [(srt[i] + srt[i + 1]) / 2 for i in range(3)]
    best = None
    for i in range(12):
        r = float(f32(1.0 - 0.85 * i / 11.0))
        clo, chi = mu + r * (float(lo) - mu), mu + r * (float(hi) - mu)
        sa = (chi - clo) / (srt[3] - srt[0])
        off = clo - sa * srt[0]
        v = (c - off) * (1.0 / sa)
        pos = sum((v > m).astype(int) for m in mids)
        err = float(np.sum(wgt * (c - (off + sa * np.asarray(srt, float)[pos])) ** 2))
        if best is None or err < best[0]:
            best = (err, sa, off)
    s = f32(best[1])
    return (s if s > 0 else f32(1)), f32(best[2])


def ref_lut_codes(x, levels, mode, act=None):
    srt = sorted(levels)
    order = np.array([list(levels).index(v) for v in srt])
    mids = [f32((srt[i] + srt[i + 1]) / 2) for i in range(3)]
    codes = np.empty(x.shape, np.uint8)
    s_all, off_all = np.empty(x.shape[0], f32), np.empty(x.shape[0], f32)
    for r, row in enumerate(x):
        if act is not None:
            s, off = _lut_minmax(act[0], act[1], srt)
        elif mode == "minmax":
            s, off = _lut_minmax(*_lut_range(row), srt)
        else:
            s, off = _lut_mse(row, srt)
        with np.errstate(over="ignore"):  # (x - off of a range wider than FLT_MAX: +-inf)
            v = ((row - off).astype(f32) * (f32(1) / s)).astype(f32)
        pos = (v > mids[0]).astype(int) + (v > mids[1]) + (v > mids[2])
        codes[r] = order[pos]
        s_all[r], off_all[r] = s, off
    return codes, s_all, off_all


def _check(y, ref, mag, rounds=6):
    """|y - ref| within `rounds` float32 roundings of the magnitude of the summed terms."""
    y = y.numpy().astype(np.float64)
    err = np.abs(y - ref)
    bound = rounds * EPS * mag + 1e-30
    assert np.all(err <= bound), f"max excess {np.max(err - bound)} (max err {err.max()})"


def _x(rng, m, k, signed=True, skew=0.0):
    x = rng.standard_normal((m, k)).astype(f32) + f32(skew)
    return x if signed else np.maximum(x, 0)


def _act(x):
    lo, hi = x.min(), x.max()
    return (f32(lo * 0.8), f32(hi * 0.9))  # clipped at both ends: exercises saturation


def _run(mod, x, act):
    if act is not None:
        mod.act_range.copy_(torch.tensor(act))
    with torch.no_grad():
        return mod(torch.from_numpy(x))


# ---------------------------------------------------------------- the configs
@pytest.mark.parametrize("act_bits", [8, 7])
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_int8(isa, rng, shape, static, act_bits):
    m, k, n = shape
    codes, sw, w = int8_weight(rng, n, k)
    bias = rng.standard_normal(n).astype(f32)
    x = _x(rng, m, k, skew=0.7)
    act = _act(x) if static else None
    y = _run(module(w, bias, pyquant.Int8Config(act_bits=act_bits)), x, act)
    q, sa, zp = ref_asym_u8(x, act, (1 << act_bits) - 1)
    acc = q.astype(np.float64) @ codes.T.astype(np.float64)
    wsum = codes.sum(1).astype(np.float64)
    a = sa[:, None].astype(np.float64) * sw.astype(np.float64)
    ref = a * acc - a * zp[:, None] * wsum + bias
    _check(y, ref, np.abs(a * acc) + np.abs(a * zp[:, None] * wsum) + np.abs(bias))


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("bits,gs", [(4, 32), (4, 64), (4, 128), (2, 32), (2, 64), (2, 128)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_weight_only(isa, rng, shape, bits, gs, static):
    m, k, n = shape
    codes, sw, w = lowbit_weight(rng, n, k, bits, gs)
    bias = rng.standard_normal(n).astype(f32)
    x = _x(rng, m, k)
    act = _act(x) if static else None
    y = _run(module(w, bias, pyquant.WeightOnlyConfig(bits, gs)), x, act)
    q, sa, zp = ref_asym_u8(x, act)
    g = sw.shape[1]
    terms = np.zeros((m, n))
    ref = np.zeros((m, n))
    for j in range(g):
        lo, hi = j * gs, min(k, (j + 1) * gs)
        acc = q[:, lo:hi].astype(np.float64) @ codes[:, lo:hi].T.astype(np.float64)
        part = sw[:, j].astype(np.float64) * (acc - zp[:, None] * codes[:, lo:hi].sum(1))
        ref += part
        terms += np.abs(sw[:, j] * acc) + np.abs(sw[:, j] * zp[:, None] * codes[:, lo:hi].sum(1))
    ref = sa[:, None] * ref + bias
    _check(y, ref, sa[:, None] * terms + np.abs(bias), rounds=g + 6)


LUT_CONFIGS = [
    pyquant.LUT2Config(a_scale="minmax"),
    pyquant.LUT2Config(a_scale="mse"),
    pyquant.LUT2Config(w_levels=(-2, -1, 0, 1), a_levels=(3, 0, 2, 1), a_scale="mse"),
]


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("config", LUT_CONFIGS, ids=["minmax", "mse", "mse-levels"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_lut2(isa, rng, shape, config, static):
    m, k, n = shape
    wcodes, sw, w = lut_weight(rng, n, k, config.w_levels)
    bias = rng.standard_normal(n).astype(f32)
    x = _x(rng, m, k, skew=0.3)
    act = _act(x) if static else None
    mod = module(w, bias, config)
    y = _run(mod, x, act)
    codes, sa, off = ref_lut_codes(x, config.a_levels, config.a_scale, act)
    # the native quantizer alone gives the same codes and parameters
    act_t = np.array(act if act else (np.nan, np.nan), f32)
    c2, s2, o2 = _C.lut_act_quantize(x, list(config.a_levels), config.a_scale == "mse", act_t)
    assert np.array_equal(c2, codes) and np.array_equal(s2, sa) and np.array_equal(o2, off)
    al, wl = np.asarray(config.a_levels, np.float64), np.asarray(config.w_levels, np.float64)
    acc = al[codes] @ wl[wcodes].T
    lsum = wl[wcodes].sum(1)
    ref = sw * (sa[:, None] * acc + off[:, None] * lsum) + bias
    _check(y, ref, np.abs(sw * sa[:, None] * acc) + np.abs(sw * off[:, None] * lsum) + np.abs(bias))


@pytest.mark.parametrize("mode", ["minmax", "mse"])
def test_lut2_nan_first_value_skipped(isa, rng, mode):
    # NaN values are skipped by the row range wherever they are: a NaN first value (which once
    # started the range and made the whole row NaN) quantizes like the row's minimum (bin 0,
    # code of the lowest level), every other value as without it
    x = _x(rng, 4, 100, skew=0.3)
    x[1, 0], x[2, 0], x[2, 1] = np.nan, np.nan, np.nan
    x[3] = np.nan  # all NaN: the range is NaN
    nan = np.array((np.nan, np.nan), f32)
    codes, s, off = _C.lut_act_quantize(x, [0, 1, 2, 3], mode == "mse", nan)
    same = x.copy()
    same[1, 0] = np.nanmin(x[1])
    same[2, :2] = np.nanmin(x[2])
    c2, s2, o2 = _C.lut_act_quantize(same[:3], [0, 1, 2, 3], mode == "mse", nan)
    assert np.array_equal(codes[:3], c2) and np.array_equal(s[:3], s2)
    assert np.array_equal(off[:3], o2)
    rc, rs, ro = ref_lut_codes(x, (0, 1, 2, 3), mode)
    assert np.array_equal(codes, rc) and np.array_equal(s, rs)
    assert np.array_equal(off, ro, equal_nan=True) and np.isnan(off[3])


def test_range_wider_than_float32(isa, rng):
    # finite rows whose range overflows float32 (hi - lo > FLT_MAX): the int8/WeightOnly and LUT2
    # quantizers take the width in double, so the scale is finite (it was inf: 1/s = 0 made every
    # output of the row NaN), on every path and in the PyTorch mirror; other rows keep their bits
    from pyquant.nn import schemes

    x = _x(rng, 5, 70)
    x[1, :2] = (3e38, -3e38)
    x[2] = np.tile(f32([3.4e38, -3.4e38]), 35)
    x[3, 5], x[3, 9] = -1.8e38, 1.7e38
    nan = np.array((np.nan, np.nan), f32)
    for qmax in (255, 127):
        q, s, zp = ref_asym_u8(x, None, qmax)
        assert np.isfinite(s).all() and s[1] == f32(2 * float(f32(3e38)) / qmax)
        tq, ts, tzp = schemes.asym_u8(torch.from_numpy(x), qmax=qmax)
        assert np.array_equal(tq.numpy(), q) and np.array_equal(ts.view(-1).numpy(), s)
        assert np.array_equal(tzp.view(-1).numpy(), zp)
    q, s, zp = _C.quantize_rows_u8(x, 1)
    rq, rs, rzp = ref_asym_u8(x)
    assert np.array_equal(q, rq) and np.array_equal(s, rs) and np.array_equal(zp, rzp)
    for levels in ((0, 1, 2, 3), (-2, -1, 0, 1)):
        for mode in ("minmax", "mse"):
            for act in (None, (f32(-3e38), f32(3e38))):
                act_t = nan if act is None else np.array(act, f32)
                codes, s, off = _C.lut_act_quantize(x, list(levels), mode == "mse", act_t)
                rc, rs, ro = ref_lut_codes(x, levels, mode, act)
                assert np.isfinite(s).all() and np.isfinite(off).all(), (levels, mode, act)
                assert np.array_equal(codes, rc) and np.array_equal(s, rs), (levels, mode, act)
                assert np.array_equal(off, ro), (levels, mode, act)
                tc, ts, to = schemes.lut_act(torch.from_numpy(x), levels, mode,
                                             None if act is None else torch.from_numpy(act_t))
                ts, to = (np.broadcast_to(t.view(-1).numpy(), s.shape) for t in (ts, to))
                assert np.array_equal(tc.numpy(), codes) and np.array_equal(ts, s)
                assert np.array_equal(to, off)


@pytest.mark.parametrize("offset,std", [(1e6, 0.1), (1e5, 0.01), (1e3, 1e-4), (100, 1e-5), (-7.0, 3.0)])
def test_lut2_mse_near_constant_rows(isa, offset, std):
    # rows whose spread is a few float32 ulps of their mean: the estimator's errors no longer
    # cancel (they once came from sums of n c and n c^2 on the absolute bin centres and chose a
    # candidate with a larger error on 4-12 of 30 such rows); it picks what the direct sum does
    gen = np.random.default_rng(0)
    x = (offset + gen.standard_normal((30, 2000)) * std).astype(f32)
    nan = np.array((np.nan, np.nan), f32)
    _, s, off = _C.lut_act_quantize(x, [0, 1, 2, 3], True, nan)
    _, rs, ro = ref_lut_codes(x, (0, 1, 2, 3), "mse")
    assert np.array_equal(s, rs) and np.array_equal(off, ro)


@pytest.mark.parametrize("k", [511, 512, 1000, 6151])
def test_lut2_mse_long_rows_with_repeated_values(isa, k):
    # a conv's im2col rows: long runs of exact zeros (the padding) beside spread values; the
    # tier kernels count rows from 512 values in four sets of counters (the same counts)
    gen = np.random.default_rng(k)
    x = gen.standard_normal((6, k)).astype(f32)
    x[:, : k // 2] = 0.0
    x[1, 7::3] = 0.25  # another repeated value, spread out
    x[2] = 1.5  # a constant row
    nan = np.array((np.nan, np.nan), f32)
    codes, s, off = _C.lut_act_quantize(x, [0, 1, 2, 3], True, nan)
    rc, rs, ro = ref_lut_codes(x, (0, 1, 2, 3), "mse")
    assert np.array_equal(codes, rc) and np.array_equal(s, rs) and np.array_equal(off, ro)


SPARQ_CONFIGS = [
    pyquant.SparqConfig(),
    pyquant.SparqConfig(options=2, rounding="trunc", pairs=False),
    pyquant.SparqConfig(bits=3, options=6),
    pyquant.SparqConfig(bits=2, options=7, rounding="trunc"),
]


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "relu"])
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("config", SPARQ_CONFIGS, ids=["5opt", "2opt-trunc-nopairs", "3b", "2b"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sparq(isa, rng, shape, config, static, signed):
    m, k, n = shape
    codes, sw, w = int8_weight(rng, n, k)
    bias = rng.standard_normal(n).astype(f32)
    x = _x(rng, m, k, signed=signed)
    act = _act(x) if static else None
    y = _run(module(w, bias, config), x, act)
    q, sa = ref_abs_u8(x, act)
    act_t = np.array(act if act else (np.nan, np.nan), f32)
    q2, s2 = _C.abs_quantize(x, act_t)
    assert np.array_equal(q2, q) and np.array_equal(s2, sa)
    t = sparq_ref(q, config.bits, config.options, config.rounding, config.pairs).astype(np.float64)
    v = np.where(x < 0, -t, t)  # sign-magnitude: magnitudes trimmed once, pairs on magnitudes
    acc = v @ codes.T.astype(np.float64)
    a = sa[:, None].astype(np.float64) * sw
    ref = a * acc + bias
    _check(y, ref, np.abs(a * acc) + np.abs(bias), rounds=4)


def test_sparq_negative_error(rng):
    codes, sw, w = int8_weight(rng, 8, 16)
    mod = module(w, None, pyquant.SparqConfig(negative="error"))
    with torch.no_grad():
        mod(torch.rand(2, 16))  # non-negative: fine
        with pytest.raises(ValueError, match="negative"):
            mod(torch.randn(2, 16))


# ---------------------------------------------------------------- same bits everywhere
ALL = [pyquant.Int8Config(act_bits=8), pyquant.Int8Config(act_bits=7), pyquant.WeightOnlyConfig(4, 32), pyquant.WeightOnlyConfig(2, 128),
       pyquant.LUT2Config(), pyquant.SparqConfig()]


NONFINITE_ROWS = {"nan": {5: np.nan}, "nan0": {0: np.nan}, "inf": {5: np.inf}, "-inf": {3: -np.inf},
                  "huge": {3: -3e38, 5: 3e38}}  # huge: hi - lo overflows float32


@pytest.mark.parametrize("config", ALL + [pyquant.LUT2Config(a_scale="minmax"),
                                          pyquant.SparqConfig(sparse24=True)],
                         ids=lambda c: repr(c)[:40])
def test_nonfinite_row_leaves_the_other_rows_alone(rng, config):
    # NaN, inf or a range that overflows float32 in one input row: no crash on any path (LUT2's
    # mse histogram once indexed its bins with int(NaN)), and the dynamic per-row quantization
    # keeps every other row's output exactly as without that row
    w = rng.standard_normal((64, 96)).astype(f32) * f32(0.05)
    if getattr(config, "sparse24", False):
        w = pyquant.prune_24(w)
    mod = module(w, rng.standard_normal(64).astype(f32), config)
    x = np.abs(rng.standard_normal((3, 96))).astype(f32)
    outs = {}
    previous = _C.active_isa()
    try:
        for isa in pyquant.cpu_info()["available"]:
            _C.set_isa(isa)
            clean = _run(mod, x, None)
            for label, edits in NONFINITE_ROWS.items():
                bad = x.copy()
                for col, v in edits.items():
                    bad[1, col] = v
                y = _run(mod, bad, None)
                assert y.shape == clean.shape, (isa, label)
                assert torch.equal(y[[0, 2]], clean[[0, 2]]), (isa, label)
                first = outs.setdefault(label, y)  # the bad row too: the same on every path
                torch.testing.assert_close(y, first, rtol=0, atol=0, equal_nan=True)
    finally:
        _C.set_isa(previous)


def _assert_paths_and_threads_agree(mod, xs):
    """mod(x) for each x on every ISA path this CPU has, at 1 and 2 threads: the same bits."""
    outs = []
    previous = _C.active_isa()
    try:
        for isa in pyquant.cpu_info()["available"]:
            _C.set_isa(isa)
            for threads in (1, 2):
                pyquant.set_num_threads(threads)
                outs.append((isa, threads, [_run(mod, x, None) for x in xs]))
    finally:
        _C.set_isa(previous)
        pyquant.set_num_threads(None)
    for isa, threads, ys in outs:
        for i, y in enumerate(ys):
            assert torch.equal(y, outs[0][2][i]), (isa, threads, xs[i].shape)


@pytest.mark.parametrize("config", ALL, ids=lambda c: type(c).__name__)
def test_paths_and_threads_bit_identical(rng, config):
    w = rng.standard_normal((200, 264)).astype(f32) * f32(0.05)
    bias = rng.standard_normal(200).astype(f32)
    xs = [np.random.default_rng(m).standard_normal((m, 264)).astype(f32) for m in (1, 9)]
    _assert_paths_and_threads_agree(module(w, bias, config), xs)


@pytest.mark.parametrize("config", [pyquant.WeightOnlyConfig(4, 32), pyquant.WeightOnlyConfig(2, 32),
                                    pyquant.WeightOnlyConfig(4, 64), pyquant.WeightOnlyConfig(2, 128)],
                         ids=repr)
def test_decode_row_over_many_groups_bit_identical(rng, config):
    # every path's decode GEMV folds the groups in order: 67 groups at g32, 34 at g64 (groups of
    # several uint16 chunks on AVX2), 17 at g128
    # (positive rows and weights, group magnitudes spread over ~600x: the float sum of the
    # groups rounds, so a fold out of order shows)
    w = ((np.abs(rng.standard_normal((70, 2144))) + 0.5) * 1.1 ** (np.arange(2144) // 32)).astype(f32)
    bias = rng.standard_normal(70).astype(f32)
    xs = [np.random.default_rng(7).random((1, 2144)).astype(f32)]
    _assert_paths_and_threads_agree(module(w, bias, config), xs)


@pytest.mark.parametrize("bits,gs", [(4, 32), (4, 64), (4, 128), (2, 32), (2, 128)])
@pytest.mark.parametrize("m", [1, 2, 3, 8])
def test_weight_only_accumulator_bounds(bits, gs, m):
    """Every activation at 255 and whole columns at the top code: the AVX2 kernels' 16-bit lanes
    (a chunk of 8 k-groups for W4, 32 for W2, in the decode GEMV and the 2- and 3-row tiles) at
    their bound. Columns of +qmax, -qmax and alternating codes (group scales 1) give k qmax,
    -k qmax and 0. K = 4132: a short last group of 9 k-groups at g64 (two W4 chunks)."""
    k, n, qmax = 4132, 66, (1 << (bits - 1)) - 1
    w = np.full((n, k), qmax, f32)
    w[1::3] = -qmax
    w[2::3, 1::2] = -qmax
    x = np.ones((m, k), f32)  # dynamic rows: zero point 0, every code 255
    mod = module(w, None, pyquant.WeightOnlyConfig(bits, gs))
    _assert_paths_and_threads_agree(mod, [x])
    expected = np.tile(np.array([k * qmax, -k * qmax, 0], np.float64), n // 3)
    np.testing.assert_allclose(_run(mod, x, None).numpy(), np.tile(expected, (m, 1)), rtol=1e-6)


@pytest.mark.parametrize("config", [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 64)],
                         ids=lambda c: type(c).__name__)
def test_row_chunks_for_a_spilled_output_bit_identical(rng, config):
    """1-4 MiB of weights and a 4.4 MB output: rows split in chunks run one after another
    (core/gemm_tasks.h); every path and thread count gives the same bits."""
    w = rng.standard_normal((2100, 1030)).astype(f32) * f32(0.05)
    mod = module(w, rng.standard_normal(2100).astype(f32), config)
    _assert_paths_and_threads_agree(mod, [rng.standard_normal((520, 1030)).astype(f32)])


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_sparq_row_preparation_edge_values(rng, static):
    """The vectorized row preparation (|x| quantizer, trim, sign split) against the scalar one on
    the values where they could part: -0.0, rounding ties, the 255.25 cap, all-zero rows and
    tails of every length below 32."""
    w = rng.standard_normal((70, 131)).astype(f32) * f32(0.05)
    mod = module(w, None, pyquant.SparqConfig())
    x = rng.standard_normal((8, 131)).astype(f32)
    x[0] = -0.0
    x[1, ::3] = -0.0
    x[2] = (np.arange(131) % 256 + 0.5).astype(f32) * f32(2.0 / 255.0)  # ties of |x| / s + 0.5
    x[3, :] = 0.0
    x[4, 5] = 1e30  # one huge value: every other code rounds to 0
    x[5] = np.abs(x[5])
    act = np.array([-3.0, 2.0], dtype=f32) if static else None
    outs = {}
    previous = _C.active_isa()
    try:
        for isa in pyquant.cpu_info()["available"]:
            _C.set_isa(isa)
            outs[isa] = [_run(mod, x, act)]
            for kk in (*range(1, 8), *range(29, 70)):  # tails: a fresh module per K
                m2 = module(w[:, :kk].copy(), None, pyquant.SparqConfig())
                outs[isa].append(_run(m2, np.ascontiguousarray(x[:, :kk]), act))
    finally:
        _C.set_isa(previous)
    first = next(iter(outs.values()))
    for isa, ys in outs.items():
        for a, b in zip(ys, first):
            assert torch.equal(a, b), isa


@pytest.mark.parametrize("config", ALL, ids=lambda c: type(c).__name__)
def test_reference_backend_matches_kernels(rng, config):
    """use_reference() modules (pure PyTorch) quantize activations exactly like the native code."""
    w = rng.standard_normal((70, 130)).astype(f32) * f32(0.05)
    x = torch.from_numpy(rng.standard_normal((5, 130)).astype(f32))
    lin = torch.nn.Linear(130, 70)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        kern = QuantLinear.from_linear(lin, config)
        with pyquant.nn.use_reference():
            ref = QuantLinear.from_linear(lin, config)
        yk, yr = kern(x), ref(x)
    scale = yr.abs().max().item()
    assert torch.allclose(yk, yr, rtol=0, atol=1e-4 * scale)


# ---------------------------------------------------------------- conversion-time constants, export
def test_constants_are_buffers_not_state(rng):
    mod = module(rng.standard_normal((70, 130)).astype(f32), None, pyquant.WeightOnlyConfig(4, 32))
    bufs = dict(mod.named_buffers())
    assert "panel_scales" in bufs
    assert set(mod.state_dict()) == {"packed", "w_scale", "w_off", "act_range"}
    # group scales are bfloat16 (0.5 bit per weight at g32); the panel copy holds the same bits
    # (int16) in the kernels' unpack order (csrc/lowbit_gemm/panel_scales.h)
    assert mod.w_scale.dtype == torch.bfloat16 and bufs["panel_scales"].numel() == 128 * 5
    assert mod.panel_scales.dtype == torch.int16
    c = np.arange(64)
    slot = ((c // 32) * 4 + (c % 16) // 4) * 8 + (c % 32) // 16 * 4 + c % 4
    assert sorted(slot) == list(range(64))
    panel0 = mod.panel_scales.view(2, 5, 64)[0][:, torch.from_numpy(slot)]  # [group, column]
    assert torch.equal(panel0.T.contiguous().view(torch.bfloat16), mod.w_scale[:64])
    assert torch.all(mod.panel_scales.view(2, 5, 64)[1][:, torch.from_numpy(slot[6:])] == 0)
    # a scale that is not a bfloat16 value is refused, not rounded; float panels are not taken
    with pytest.raises(ValueError, match="bfloat16"):
        _C.lowbit_panel_scales(np.full((3, 2), 1.0 + 2.0 ** -20, np.float32))
    with pytest.raises(TypeError):
        _C.forward_lowbit(np.zeros((1, 130), f32), mod.packed.numpy(), 4, 32,
                          mod.panel_scales.float().numpy(), mod.w_off.numpy(), None,
                          mod.act_range.numpy())
    # recomputed by load_state_dict from the persistent buffers
    other = module(rng.standard_normal((70, 130)).astype(f32), None, pyquant.WeightOnlyConfig(4, 32))
    other.load_state_dict(mod.state_dict())
    assert torch.equal(other.panel_scales, mod.panel_scales)
    x = torch.randn(3, 130)
    with torch.no_grad():
        assert torch.equal(other(x), mod(x))


def test_weight_only_bytes_held_and_read():
    """W4 g32 on a 256 x 1024 weight: the forward streams 4 bits of codes + 0.5 bit of bfloat16
    panel scales per weight; the module holds that plus the bf16 state-dict scales (0.5 bit)."""
    n, k = 256, 1024
    mod = QuantLinear.from_linear(torch.nn.Linear(k, n, bias=False), pyquant.WeightOnlyConfig(4, 32))
    held = sum(t.numel() * t.element_size() for t in mod.buffers())
    read = mod.bytes_read_per_call()
    assert read == mod.packed.numel() + 2 * n * k // 32 + 4 * n + 8
    assert 4.5 <= 8 * read / (n * k) < 4.55 and 8 * held / (n * k) < 5.1


@pytest.mark.parametrize("config", ALL, ids=lambda c: type(c).__name__)
def test_bound_call_follows_the_buffers(rng, config, tmp_path):
    """The native call is bound to the buffers once; copies, reloads, replaced buffers and
    calibration after a first forward must each compute with their own current buffers."""
    import copy
    lin = torch.nn.Linear(130, 70)
    x = torch.from_numpy(rng.standard_normal((5, 130)).astype(f32))
    with torch.no_grad():
        a = QuantLinear.from_linear(lin, config)
        lin.weight.mul_(3.0)
        b = QuantLinear.from_linear(lin, config)
        ya, yb = a(x), b(x)
        assert not torch.equal(ya, yb)
        torch.save(a, tmp_path / "m.pt")  # a whole module pickles (the bound call is not state)
        c = copy.deepcopy(a)  # a copy computes with its own buffers, not a's
        a.load_state_dict(b.state_dict())  # in place: a's arrays now hold b's weight
        assert torch.equal(c(x), ya) and torch.equal(a(x), yb)
        assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=False)(x), ya)
        for name in c.state_dict():  # buffer objects replaced behind the module's back
            if name != "act_range":
                setattr(c, name, getattr(b, name).clone())
        assert torch.equal(c(x), yb)
        pyquant.calibrate(b, [x])  # act_range updated in place after the first forward
        assert not torch.isnan(b.act_range).any()
        ys = b(x)
        assert not torch.equal(ys, yb)  # static ranges differ from the rows' own
        e = QuantLinear.from_linear(lin, config)
        e.load_state_dict(b.state_dict())
        assert torch.equal(e(x), ys)


@pytest.mark.parametrize("config", [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32)],
                         ids=lambda c: type(c).__name__)
def test_large_buffers_rehomed_after_reload(rng, config, tmp_path):
    """Buffers of at least 64 KiB, made at conversion or arrived from a pickle or
    load_state_dict(assign=True), are copied once into huge-page arena memory
    (modules._rehome_large_buffers): same values, same outputs, persistence kept, and no second
    copy on the next refresh."""
    import io
    import sys
    from pyquant.nn.modules import _want_hugepages
    lin = torch.nn.Linear(2048, 4096)  # int8 8 MiB, W4 4 MiB of codes
    x = torch.from_numpy(rng.standard_normal((1, 2048)).astype(f32))
    with torch.no_grad():
        a = QuantLinear.from_linear(lin, config)
        assert all(_C.hugepage_owns(t.data_ptr()) for t in a._buffers.values() if _want_hugepages(t))
        # (the derived buffers, remade by every refresh, are left out below)
        big = [n for n in a.state_dict() if _want_hugepages(a._buffers[n])]
        assert "packed" in big or not sys.platform.startswith("linux")
        ptrs = {n: a._buffers[n].data_ptr() for n in big}
        a._refresh_derived()  # already arena memory: nothing copied
        assert {n: a._buffers[n].data_ptr() for n in big} == ptrs
        f = io.BytesIO()
        torch.save(a, f)
        f.seek(0)
        b = torch.load(f, weights_only=False)
        assert torch.equal(b(x), a(x))
        sd = a.state_dict()
        c = QuantLinear.from_linear(torch.nn.Linear(2048, 4096), config)
        given = {k: v.clone() for k, v in sd.items()}
        c.load_state_dict(given, assign=True)
        assert torch.equal(c(x), a(x))
        for n in big:  # the assigned (torch-allocated) tensors were copied, not kept
            assert c._buffers[n].data_ptr() != given[n].data_ptr(), n
        assert sorted(c.state_dict()) == sorted(sd)
        for k, v in c.state_dict().items():
            torch.testing.assert_close(v, sd[k], rtol=0, atol=0, equal_nan=True)
        kept = {n: c._buffers[n].data_ptr() for n in big}
        c._refresh_derived()
        assert {n: c._buffers[n].data_ptr() for n in big} == kept


@pytest.mark.parametrize("config", ALL, ids=lambda c: type(c).__name__)
def test_export_is_self_contained(rng, config):
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 32))
    pyquant.quantize_(model, config)
    x = torch.randn(4, 64)
    with torch.no_grad():
        want = model(x)
        ep = torch.export.export(model, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("pyquant." in t for t in targets) == 2 and not any("reference" in t for t in targets)
    del model  # nothing registered by the modules is needed to run the exported program
    with torch.no_grad():
        assert torch.equal(ep.module()(x), want)


def test_small_work_runs_on_fewer_threads(monkeypatch):
    """A native call wakes at most one thread per ~512 KiB of weights or ~2 Mi multiply-adds
    (modules.call_threads): a small layer at one row runs on one thread, a large one (or many
    rows) on all; same bits either way."""
    from pyquant.nn import modules

    seen = []
    small = QuantLinear.from_linear(torch.nn.Linear(256, 1024), pyquant.Int8Config())
    large = QuantLinear.from_linear(torch.nn.Linear(1024, 4096), pyquant.Int8Config())
    for layer in (small, large):
        run = layer._native_run()
        layer._run = lambda x, threads, *a, run=run: seen.append(threads) or run(x, threads, *a)
        layer._bound = ()  # (keeps _native_run from rebinding over the spy)
    pyquant.set_num_threads(2)
    try:
        with torch.no_grad():
            y1 = small(torch.ones(1, 256))
            large(torch.ones(1, 1024))
            small(torch.ones(64, 256))
    finally:
        pyquant.set_num_threads(None)
    assert seen == [1, 2, 2]
    assert modules.call_threads(0, 0) == 1 and modules.call_threads(1 << 30, 0) >= 1
    pyquant.set_num_threads(1)
    try:
        with torch.no_grad():
            assert torch.equal(small(torch.ones(1, 256)), y1)
    finally:
        pyquant.set_num_threads(None)
