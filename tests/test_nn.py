"""PyTorch front end: QuantLinear / QuantConv2d / quantize_ against an independent reference.

The reference (first section) is written from the documented semantics (docs/notes/nn.md
"Numerics", algorithms.md section 5) in float64 / int64 and calls nothing from pyquant.nn, so a
quantizer bug in the modules cannot cancel out. Every config runs twice: through pyquant's
kernels ("kernel", skipped while the op is not in this build) and through pyquant.nn's
pure-PyTorch reference ops ("reference").

Exactness: inputs come from a lattice (``_lattice``) on which every scale is exact in float32
(``j * 2**-e``) and every value to be rounded lies at least 1/16 step from a rounding boundary, so
any correct float32 implementation must produce the reference's integer codes. The module's
float output is then compared in units of one integer step of its accumulator
(``sa * sw``): less than a quarter step off means the integer accumulator is identical.
"""
from __future__ import annotations

import copy
import functools
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyquant
from pyquant.nn import _backend
from pyquant.nn.schemes import scheme_for
from reference_gptq import lane_sum

CONFIGS = [
    pytest.param(pyquant.Int8Config(), 30.0, id="int8"),
    pytest.param(pyquant.Int8Config(act_bits=8), 30.0, id="int8-a8"),
    pytest.param(pyquant.Int8Config(act_bits=7), 30.0, id="int8-a7"),
    pytest.param(pyquant.WeightOnlyConfig(bits=4, group_size=64), 18.0, id="w4g64"),
    pytest.param(pyquant.WeightOnlyConfig(bits=4, group_size=32), 18.0, id="w4g32"),
    pytest.param(pyquant.WeightOnlyConfig(bits=2, group_size=128), 4.0, id="w2g128"),
    pytest.param(pyquant.LUT2Config(), 3.0, id="lut2-mse"),
    pytest.param(pyquant.LUT2Config(w_levels=(-2, -1, 0, 1), a_scale="minmax"), 1.0, id="lut2-minmax"),
    pytest.param(pyquant.SparqConfig(), 20.0, id="sparq-5opt"),
    pytest.param(pyquant.SparqConfig(options=2, rounding="trunc", pairs=False), 12.0, id="sparq-2opt"),
]
ONE_PER_FAMILY = [pyquant.Int8Config(), pyquant.WeightOnlyConfig(bits=4, group_size=32),
                  pyquant.LUT2Config(a_scale="minmax"), pyquant.SparqConfig()]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Tiny tensors: torch's thread pool only adds spin-wait overhead (badly so on a loaded machine).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(params=["kernel", "reference"])
def backend(request):
    return request.param


def _ctx(config, backend):
    """Context in which modules are built for `backend`; skips kernel runs of missing ops."""
    if backend == "kernel":
        missing = [op for op in scheme_for(config).ops if not _backend.available(op)]
        if missing:
            pytest.skip(f"pyquant.{missing[0]} is not in this build yet (lands with its issue)")
    return _backend.use_reference(backend == "reference")


def _sqnr(y, ref):
    return (10 * torch.log10(ref.double().pow(2).mean() / (y.double() - ref.double()).pow(2).mean())).item()


# ============================================================================= independent reference
def _f32(t):
    """Rounded to float32 (the precision the modules store scales in), kept as float64."""
    return t.float().double()


def _bf16(t):
    """Rounded to bfloat16 (nearest even; WeightOnly's group scales), kept as float64."""
    return t.float().to(torch.bfloat16).double()


def _nearest(v, levels):
    """Index into `levels` (any order) of the level nearest to each element of v."""
    lv = torch.as_tensor(levels, dtype=torch.float64)
    return (v[..., None] - lv).abs().argmin(-1)


def _best_scale(cand, err):
    """Per row, the candidate scale with the least squared error (the first one on ties)."""
    return cand.gather(1, err.argmin(1, keepdim=True)).squeeze(1)


def ref_weight_int8(w):
    """Symmetric per output channel: s = amax / 127, codes = round(w / s) in [-127, 127]."""
    w = w.double()
    s = _f32(w.abs().amax(1).clamp(min=1e-12) / 127)
    return torch.round(w / s[:, None]).clamp(-127, 127).long(), s


def ref_weight_lowbit(w, bits, gs):
    """Per group of `gs` along K: codes round(w / s) in [-2^(b-1), 2^(b-1) - 1], s = amax * r / qmax
    rounded to bfloat16, with r the best (least squared error) of 11 ratios from 1 down to 0.5
    (4-bit) or 0.3 (2-bit)."""
    w = w.double()
    n, k = w.shape
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    ratios = torch.linspace(1.0, 0.5 if bits == 4 else 0.3, 11, dtype=torch.float64)
    codes, scales = [], []
    for lo in range(0, k, gs):
        wg = w[:, lo:lo + gs]
        cand = _bf16(wg.abs().amax(1, keepdim=True).clamp(min=1e-12) * ratios / qmax)  # [N, 11]
        q = torch.round(wg[:, None, :] / cand[:, :, None]).clamp(qmin, qmax)
        s = _f32(_best_scale(cand, ((q * cand[:, :, None] - wg[:, None, :]) ** 2).sum(2)))
        codes.append(torch.round(wg / s[:, None]).clamp(qmin, qmax).long())
        scales.append(s)
    return torch.cat(codes, 1), torch.stack(scales, 1)


def ref_weight_lut(w, levels):
    """Per row: codes = nearest level of w / s, s = amax * r / max|level| with r the best of 17
    ratios from 1 down to 0.2."""
    w = w.double()
    lv = torch.tensor(levels, dtype=torch.float64)
    cand = w.abs().amax(1, keepdim=True).clamp(min=1e-12) * torch.linspace(
        1.0, 0.2, 17, dtype=torch.float64) / lv.abs().max()  # [N, 17]
    idx = _nearest(w[:, None, :] / cand[:, :, None], levels)
    s = _f32(_best_scale(cand, ((lv[idx] * cand[:, :, None] - w[:, None, :]) ** 2).sum(2)))
    return _nearest(w / s[:, None], levels), s


def _static_range(act_range):
    return act_range[0].double().view(1, 1), act_range[1].double().view(1, 1)


def _qmax(config):
    """Top uint8 activation code: Int8Config's act_bits (7 or 8), 255 for WeightOnly."""
    return (1 << config.act_bits) - 1 if isinstance(config, pyquant.Int8Config) else 255


def ref_act_u8(x, act_range=None, qmax=255):
    """Asymmetric uint8 per row (per tensor when static): [lo, hi] widened to include 0,
    sa = (hi - lo) / qmax, zp = round(-lo / sa), q = clamp(floor(x / sa + zp + 1/2), 0, qmax)."""
    x = x.double()
    lo, hi = (x.amin(1, keepdim=True), x.amax(1, keepdim=True)) if act_range is None \
        else _static_range(act_range)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    sa = _f32((hi - lo) / qmax)
    sa = torch.where(sa > 0, sa, torch.ones_like(sa))
    zp = torch.round(-lo / sa).clamp(0, qmax)
    return torch.floor(x / sa + zp + 0.5).clamp(0, qmax).long(), sa, zp.long()


# SPARQ, algorithms.md section 5: allowed shifts per (bits, options); the wide window (partner zero)
_SPARQ_SHIFTS = {(4, 5): (4, 3, 2, 1, 0), (4, 3): (4, 2, 0), (4, 2): (4, 0),
                 (3, 6): (5, 4, 3, 2, 1, 0), (2, 7): (6, 5, 4, 3, 2, 1, 0)}
_SPARQ_WIDE = {4: (8, (0,)), 3: (6, (2, 1, 0)), 2: (4, (4, 3, 2, 1, 0))}


def ref_sparq_value(v: int, n: int, shifts, rounding: str) -> int:
    """bSPARQ on one uint8 value: smallest allowed shift whose n-bit window holds the leading one;
    round mode rounds the dropped bits half-to-even, saturating at the window's top."""
    if v == 0:
        return 0
    s = min(t for t in shifts if t + n - 1 >= v.bit_length() - 1)
    w, dropped = divmod(v, 1 << s)
    if rounding == "round" and s > 0:
        half = 1 << (s - 1)
        if dropped > half or (dropped == half and w % 2 == 1):
            w = min(w + 1, (1 << n) - 1)
    return w << s


@functools.lru_cache(maxsize=None)
def _sparq_luts(bits, options, rounding):
    narrow = [ref_sparq_value(v, bits, _SPARQ_SHIFTS[(bits, options)], rounding) for v in range(256)]
    wn, ws = _SPARQ_WIDE[bits]
    wide = [ref_sparq_value(v, wn, ws, rounding) for v in range(256)]
    return torch.tensor(narrow), torch.tensor(wide)


def ref_sparq(q, bits=4, options=5, rounding="round", pairs=True):
    """SPARQ-trimmed values of uint8 magnitudes q [M, K]; vSPARQ pairs (k, k+1), k even; an odd
    last element pairs with an implicit zero."""
    narrow, wide = _sparq_luts(bits, options, rounding)
    q = q.long()
    if not pairs:
        return narrow[q]
    m, k = q.shape
    padded = F.pad(q, (0, k % 2))
    partner = padded.view(m, -1, 2).flip(-1).reshape(m, -1)[:, :k]
    return torch.where(partner == 0, wide[q], narrow[q])


def ref_act_sparq(x, config, act_range=None):
    """Magnitudes |x| ~= sa * q (sa = max|x| / 255 per row, or max(|lo|, |hi|) / 255 static),
    SPARQ-trimmed (pairs judged on magnitudes), sign put back: signed trimmed codes and sa."""
    x = x.double()
    if act_range is None:
        amax = x.abs().amax(1, keepdim=True)
    else:
        lo, hi = _static_range(act_range)
        amax = torch.maximum(lo.abs(), hi.abs())
    sa = torch.where(amax > 0, _f32(amax / 255), torch.ones_like(amax))
    q = torch.round(x.abs() / sa).clamp(0, 255)
    t = ref_sparq(q, **config.op_kwargs())
    return torch.where(x < 0, -t, t), sa


def ref_act_lut(x, levels, mode, act_range=None):
    """x ~= off + sa * levels[code] per row: [lo, hi] = the row's range (no widening to 0; or the
    static range), sa = (hi - lo) / (lmax - lmin), off = lo - sa * lmin, code = nearest level.
    "mse": the best of 12 ranges shrunk about the row mean by r = 1 .. 0.15, scored on a histogram
    (see below). Returns codes, sa, off, and per row the sorted candidate errors."""
    x = x.double()
    lv = torch.tensor(levels, dtype=torch.float64)
    lmin, lmax = lv.min(), lv.max()

    def quant(lo, hi):
        sa = _f32((hi - lo) / (lmax - lmin))
        sa = torch.where(sa > 0, sa, torch.ones_like(sa))
        off = _f32(lo - sa * lmin)
        codes = _nearest((x - off) / sa, levels)
        return codes, sa, off, ((off + sa * lv[codes] - x) ** 2).sum(1, keepdim=True)

    if act_range is not None:
        return quant(*_static_range(act_range))[:3] + (None,)
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    if mode == "minmax":
        return quant(lo, hi)[:3] + (None,)
    # "mse": 12 ranges shrunk about the row mean by r = 1 .. 0.15, scored on a 512-bin histogram
    # of the row (the bounded-cost estimator of csrc/quantize/act_quantize.h): bin b =
    # trunc((x - lo) * (512 / (hi - lo))) in float32, each value represented by its bin centre,
    # least squared error wins (the first on ties); sa, off rounded to float32.
    bins = 512
    x32 = x.float()
    lo32, hi32 = x32.amin(1, keepdim=True), x32.amax(1, keepdim=True)
    flat = ~(hi32 > lo32)
    width = torch.where(flat, torch.ones_like(hi32), hi32 - lo32)
    b = ((x32 - lo32) * (torch.tensor(float(bins)) / width)).to(torch.int64).clamp(max=bins - 1)
    centre = lo.double() + (b.double() + 0.5) * ((hi - lo) / bins)  # per element: its bin centre
    mu = centre.mean(1, keepdim=True)
    errs, params = [], []
    for i in range(12):
        r = float(torch.tensor(1.0 - 0.85 * i / 11.0, dtype=torch.float32))
        clo, chi = mu + r * (lo - mu), mu + r * (hi - mu)
        sa = (chi - clo) / (lmax - lmin)
        off = clo - sa * lmin
        rec = off + sa * lv[_nearest((centre - off) / sa, levels)]
        errs.append(((centre - rec) ** 2).sum(1, keepdim=True))
        params.append((sa, off))
    errs = torch.cat(errs, 1)  # [M, 12]
    best = errs.argmin(1)
    rows = torch.arange(x.shape[0])
    sa = _f32(torch.stack([p[0] for p in params])[best, rows])
    off = _f32(torch.stack([p[1] for p in params])[best, rows])
    sa = torch.where(sa > 0, sa, torch.ones_like(sa))
    mm = quant(lo, hi)
    sa = torch.where(flat, mm[1], sa)
    off = torch.where(flat, mm[2], off)
    codes = _nearest((x - off) / sa, levels)
    return codes, sa, off, errs.sort(1).values


def ref_linear(config, w, bias, x, act_range=None):
    """(y float64 [M, N], unit [M, N]): the reference output and the float value of one integer
    step of the accumulator (for WeightOnly the smallest group's)."""
    b = 0.0 if bias is None else bias.detach().double()
    w = w.detach()
    if isinstance(config, (pyquant.Int8Config, pyquant.WeightOnlyConfig)):
        q, sa, zp = ref_act_u8(x, act_range, _qmax(config))
        a = q - zp  # the zero point removed exactly
        if isinstance(config, pyquant.Int8Config):
            codes, sw = ref_weight_int8(w)
            return sa * sw * (a @ codes.T) + b, sa * sw
        gs = config.group_size
        codes, sw = ref_weight_lowbit(w, config.bits, gs)
        y = sum((a[:, lo:lo + gs] @ codes[:, lo:lo + gs].T) * sw[:, g]
                for g, lo in enumerate(range(0, w.shape[1], gs)))
        return sa * y + b, sa * sw.amin(1)
    if isinstance(config, pyquant.LUT2Config):
        wc, sw = ref_weight_lut(w, config.w_levels)
        ac, sa, off, _ = ref_act_lut(x, config.a_levels, config.a_scale, act_range)
        wl = torch.tensor(config.w_levels)[wc]
        acc = torch.tensor(config.a_levels)[ac] @ wl.T  # sum_k a_levels[a] * w_levels[w], int64
        return sw * (sa * acc + off * wl.sum(1)) + b, sa * sw
    if isinstance(config, pyquant.SparqConfig):
        codes, sw = ref_weight_int8(w)
        t, sa = ref_act_sparq(x, config, act_range)
        return sa * sw * (t @ codes.T) + b, sa * sw
    raise TypeError(type(config).__name__)


def _assert_exact(y, ref):
    """Same integer accumulator as the reference (< 1/4 step off), and float-close."""
    y64, unit = ref
    steps = ((y.double() - y64) / unit).abs().max().item()
    assert steps < 0.25, f"output is {steps:.3f} integer steps off the reference: codes/accumulator differ"
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5 * y64.abs().max().item() + 1e-7)


# ----------------------------------------------------------------------------- lattice inputs
def _scales(gen, rows):
    """Scales j * 2^-e (exact in float32 and after any exact division by 255 or a level span)."""
    j = torch.tensor([1, 3, 5, 7])[torch.randint(0, 4, (rows, 1), generator=gen)]
    return j * 2.0 ** -torch.randint(4, 8, (rows, 1), generator=gen).double()


def _frac(gen, shape, gap=1):
    """Offsets from a code in sixteenths, |d| <= 7/16 of `gap`: never within 1/16 of a boundary."""
    return torch.randint(-7, 8, shape, generator=gen).double() / 16 * gap


def _pin(gen, m, k):
    """Two distinct random columns per row (where each row's min and max go)."""
    perm = torch.stack([torch.randperm(k, generator=gen)[:2] for _ in range(m)])
    return perm[:, :1], perm[:, 1:]


def _lattice(config, m, k, seed, static=False):
    """(x float32 [M, K], calibration batches or None) on which quantization is unambiguous.

    Dynamic: every row holds its own range's end points exactly. Static: one range for the
    tensor (set by calibrating on two batches whose min and max are its end points), and some
    values of x fall outside it (clipped)."""
    gen = torch.Generator().manual_seed(seed)
    rows = 1 if static else m
    sa = _scales(gen, rows)
    if isinstance(config, (pyquant.Int8Config, pyquant.WeightOnlyConfig)):
        qmax = _qmax(config)
        span = (-20, qmax + 21) if static else (1, qmax)  # interior codes (static: partly outside)
        # range [-(zp + f) sa, (qmax - zp - f) sa]: -lo / sa = zp + f is rounded (|f| <= 7/16)
        zp = torch.randint(0, qmax + 1, (rows, 1), generator=gen).double()
        f = _frac(gen, (rows, 1))
        f = torch.where(zp == 0, f.abs(), torch.where(zp == qmax, -f.abs(), f))
        c = torch.randint(*span, (m, k), generator=gen).double()
        x, ends = sa * (c - zp + _frac(gen, (m, k))), (-(zp + f) * sa, (qmax - zp - f) * sa)
        if not static:  # each row holds its range's end points (codes 0 and qmax)
            lo_at, hi_at = _pin(gen, m, k)
            x = x.scatter(1, lo_at, ends[0]).scatter(1, hi_at, ends[1])
    elif isinstance(config, pyquant.SparqConfig):
        c = torch.randint(*((-20, 276) if static else (0, 256)), (m, k), generator=gen).double().clamp(min=0)
        d = _frac(gen, (m, k))
        d = torch.where(c == 0, d.abs(), torch.where(c >= 255, -d.abs(), d))  # |x| <= 255 sa
        if not static:
            _, hi_at = _pin(gen, m, k)
            c, d = c.scatter(1, hi_at, 255.0), d.scatter(1, hi_at, 0.0)
        sign = 1 - 2 * torch.randint(0, 2, (m, k), generator=gen).double()
        x, ends = sign * sa * (c + d), (-100 * sa, 255 * sa)
    elif isinstance(config, pyquant.LUT2Config):
        lv = torch.tensor(sorted(config.a_levels)).double()
        gap = float((lv[1:] - lv[:-1]).min())
        # static: 0 is exactly a level (im2col zero padding is unambiguous too)
        o = -lv[torch.randint(0, 4, (1, 1), generator=gen)] if static else \
            torch.randint(-40, 41, (rows, 1), generator=gen).double()
        idx = torch.randint(-1 if static else 0, 5 if static else 4, (m, k), generator=gen)
        lvl = torch.where(idx < 0, lv[0] - 2 * gap, torch.where(idx > 3, lv[3] + 2 * gap, lv[idx.clamp(0, 3)]))
        d = torch.zeros(m, k) if config.a_scale == "mse" and not static else _frac(gen, (m, k), gap)
        d = torch.where(lvl <= lv[0], d.abs(), torch.where(lvl >= lv[3], -d.abs(), d))
        if not static:
            lo_at, hi_at = _pin(gen, m, k)
            lvl, d = lvl.scatter(1, lo_at, float(lv[0])).scatter(1, hi_at, float(lv[3])), \
                d.scatter(1, lo_at, 0.0).scatter(1, hi_at, 0.0)
        x, ends = sa * (o + lvl + d), (sa * (o + lv[0]), sa * (o + lv[3]))
    else:
        raise TypeError(type(config).__name__)
    assert torch.equal(x.float().double(), x)  # exact in float32
    if not static:
        return x.float(), None
    batch = torch.zeros(2, k)
    batch[0, 0], batch[1, 1] = float(ends[0]), float(ends[1])
    return x.float(), [batch, batch.flip(0)]


def _lattice_weights(module, config, seed):
    """For int8-weight configs (Int8, SPARQ): weights s * (code + d), |d| <= 7/16, with one
    element per output channel at exactly +-127 s, so s = amax / 127 is exact and every code
    unambiguous (random weights put about one w / s within float32 error of a .5 per 65k
    elements). MSE-searched weights (WeightOnly, LUT2) stay as initialised."""
    if not isinstance(config, (pyquant.Int8Config, pyquant.SparqConfig)):
        return module
    gen = torch.Generator().manual_seed(seed)
    w = module.weight
    n, k = w.shape[0], w[0].numel()
    s = _scales(gen, n) * 2.0 ** -4
    c = torch.randint(-126, 127, (n, k), generator=gen).double()
    wl = s * (c + _frac(gen, (n, k)))
    at = torch.randint(0, k, (n, 1), generator=gen)
    wl = wl.scatter(1, at, 127 * s * (1 - 2 * torch.randint(0, 2, (n, 1), generator=gen).double()))
    with torch.no_grad():
        w.copy_(wl.view(w.shape))
    return module


def _calibrated(q, batches):
    """Static range from calibration batches (None = dynamic); checks calibrate's rule."""
    if batches is None:
        return None
    pyquant.calibrate(q, batches)
    return q.act_range.clone()


# ============================================================================= the reference itself
@pytest.mark.parametrize("value,expected", [
    (27, (26, 28, 24, 28, 16, 32)), (92, (88, 96, 80, 96, 80, 96)), (85, (80, 88, 80, 80, 80, 80)),
    (124, (120, 120, 112, 128, 112, 128)), (17, (16,) * 6), (255, (240,) * 6), (3, (3,) * 6)])
def test_sparq_reference_worked_examples(value, expected):
    """algorithms.md section 5 worked examples (5opt/3opt/2opt x trunc/round)."""
    got = tuple(ref_sparq_value(value, 4, _SPARQ_SHIFTS[(4, options)], rounding)
                for options in (5, 3, 2) for rounding in ("trunc", "round"))
    assert got == expected


def test_sparq_reference_pairs():
    a = torch.tensor([[27, 0, 27, 5, 200]])
    # 27 keeps 8 bits (partner zero); 27/5 both trimmed; 200 pairs with an implicit zero
    assert ref_sparq(a, bits=4, options=5, rounding="trunc").tolist() == [[27, 0, 26, 5, 200]]


@pytest.mark.skipif(not hasattr(pyquant, "sparq_quantize"), reason="pyquant.sparq_quantize not in this build yet")
@pytest.mark.parametrize("bits,options", [(4, 5), (4, 3), (4, 2), (3, 6), (2, 7)])
@pytest.mark.parametrize("rounding", ["round", "trunc"])
@pytest.mark.parametrize("pairs", [True, False])
def test_sparq_reference_matches_kernel(bits, options, rounding, pairs):
    a = torch.randint(0, 256, (7, 33), dtype=torch.uint8)
    a[a < 60] = 0
    kw = dict(bits=bits, options=options, rounding=rounding, pairs=pairs)
    assert torch.equal(pyquant.sparq_quantize(a, **kw).long(), ref_sparq(a, **kw))


def test_lattice_is_what_it_claims():
    """The lattice's codes sit >= 1/16 step inside their rounding cells (checked on the reference's
    own pre-rounding values), and its static batches calibrate to the intended range."""
    x, _ = _lattice(pyquant.Int8Config(act_bits=8), 6, 50, 0)
    lo, hi = x.double().amin(1, keepdim=True), x.double().amax(1, keepdim=True)
    sa = (hi - lo) / 255
    assert ((-lo / sa - torch.round(-lo / sa)).abs() <= 7 / 16).all()
    assert ((-lo / sa - torch.round(-lo / sa)) != 0).any()  # the zero point's rounding is exercised
    t = x.double() / sa + torch.round(-lo / sa)
    assert ((t - torch.round(t)).abs() <= 7 / 16 + 1e-9).all()
    x, batches = _lattice(pyquant.SparqConfig(), 6, 50, 1, static=True)
    assert batches[0].max() == 255 * batches[0].min() / -100


# ============================================================================= QuantLinear
@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
@pytest.mark.parametrize("m,k,n", [(1, 7, 5), (3, 65, 33), (17, 130, 67), (40, 256, 96)])
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_linear_matches_reference(config, min_sqnr, backend, m, k, n, static):
    """Integer-exact against the independent reference, dynamic and calibrated (static) ranges."""
    torch.manual_seed(m * 1000 + k + n)
    lin = _lattice_weights(nn.Linear(k, n, bias=(m != 3)), config, seed=m + k + n)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    x, batches = _lattice(config, m, k, seed=m + k + n, static=static)
    act_range = _calibrated(q, batches)
    with torch.no_grad():
        _assert_exact(q(x), ref_linear(config, lin.weight, lin.bias, x, act_range))
        if isinstance(config, pyquant.SparqConfig):  # non-negative input: the one-GEMM path
            _assert_exact(q(x.abs()), ref_linear(config, lin.weight, lin.bias, x.abs(), act_range))
        if k >= 64 and not static:  # and the quantization itself is sane on ordinary data
            xr = torch.randn(m, k) + 0.3 * torch.rand(1, k)
            assert _sqnr(q(xr), lin(xr)) > min_sqnr


def _unambiguous_lut_mse_rows(m, k, levels, seed0):
    """Random (non-lattice) rows on which LUT2's mse search is unambiguous: the best candidate
    beats the runner-up by 1e-4 (relative) and no value is within 1e-3 step of a level midpoint."""
    lv = torch.tensor(levels, dtype=torch.float64)
    for seed in range(seed0, seed0 + 200):
        gen = torch.Generator().manual_seed(seed)
        x = (torch.randn(m, k, generator=gen) + 0.5 * torch.rand(m, 1, generator=gen)).float()
        codes, sa, off, errs = ref_act_lut(x, levels, "mse")
        if ((errs[:, 1] - errs[:, 0]) <= 1e-4 * errs[:, 0]).any():
            continue
        v = (x.double() - off) / sa
        mids = (lv.sort().values[1:] + lv.sort().values[:-1]) / 2
        if ((v[..., None] - mids).abs() < 1e-3).any():
            continue
        return x
    raise AssertionError("no unambiguous draw")


def test_lut2_mse_search_matches_reference(backend):
    """LUT2's per-row mse clipping search on ordinary (non-lattice) rows."""
    config = pyquant.LUT2Config()
    torch.manual_seed(4)
    lin = nn.Linear(32, 9)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    x = _unambiguous_lut_mse_rows(5, 32, config.a_levels, 0)
    with torch.no_grad():
        _assert_exact(q(x), ref_linear(config, lin.weight, lin.bias, x))


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
def test_batch_dims_and_dtype(config, min_sqnr, backend):
    torch.manual_seed(1)
    lin = nn.Linear(48, 19)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    x = torch.randn(2, 3, 5, 48)
    with torch.inference_mode():
        y = q(x)
        assert y.shape == (2, 3, 5, 19) and y.dtype == torch.float32
        torch.testing.assert_close(y.reshape(-1, 19), q(x.reshape(-1, 48)), rtol=0, atol=0)
        assert q(x[0, 0, 0]).shape == (19,)  # no batch dim at all


def test_sparq_negative_modes():
    lin = nn.Linear(16, 4)
    with _backend.use_reference():
        q = pyquant.nn.QuantLinear.from_linear(lin, pyquant.SparqConfig(negative="error"))
    with torch.no_grad():
        q(torch.rand(3, 16))  # non-negative: fine
        with pytest.raises(ValueError, match="negative"):
            q(torch.randn(3, 16))


# ----------------------------------------------------------------------------- conv
def _im2col(conv, x):
    """Independent im2col: one strided slice per tap, K ordered (ky, kx, c); [B*Ho*Wo, K]."""
    if isinstance(conv.padding, str):
        kh, kw = conv.kernel_size
        (dh, dw) = conv.dilation
        if conv.padding == "valid":
            xp = x
        else:  # "same": total d*(k-1) per dim, the extra on the right/bottom (PyTorch's rule)
            th, tw = dh * (kh - 1), dw * (kw - 1)
            xp = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    else:
        ph, pw = conv.padding
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        xp = F.pad(x, (pw, pw, ph, ph), mode=mode)
    kh, kw = conv.kernel_size
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[:, :, ky * dh: ky * dh + sh * (ho - 1) + 1: sh, kx * dw: kx * dw + sw * (wo - 1) + 1: sw]
            for ky in range(kh) for kx in range(kw)]
    return torch.stack(taps, -1).permute(0, 2, 3, 4, 1).reshape(-1, kh * kw * x.shape[1]), (ho, wo)


def _conv_w2d(conv):
    return conv.weight.detach().permute(0, 2, 3, 1).reshape(conv.out_channels, -1)


def _nchw(y2d, b, ho, wo):
    return y2d.reshape(b, ho, wo, -1).permute(0, 3, 1, 2)


CONV_CASES = [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=5, out_channels=7, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
    dict(in_channels=6, out_channels=5, kernel_size=4, padding="same"),
    dict(in_channels=6, out_channels=5, kernel_size=1, padding="valid"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_matches_reference(config, min_sqnr, backend, case):
    """Calibrated (static) conv on a lattice image: integer-exact against independent im2col +
    the reference (zero padding is a lattice value too)."""
    torch.manual_seed(case)
    conv = _lattice_weights(nn.Conv2d(**CONV_CASES[case]), config, seed=case)
    with _ctx(config, backend):
        q = pyquant.nn.QuantConv2d.from_conv(conv, config)
    c = conv.in_channels
    x, batches = _lattice(config, 2 * 9, 8 * c, seed=case, static=True)
    x = x.reshape(2, 9, 8, c).permute(0, 3, 1, 2).contiguous()  # [2, C, 9, 8] of lattice values
    k = q.in_features_k
    img = torch.zeros(1, c, 9, 8)  # the calibration range's end points at two central pixels
    img[0, 0, 4, 4], img[0, 0, 4, 3] = batches[0].min(), batches[0].max()
    act_range = _calibrated(q, [img, img])
    torch.testing.assert_close(act_range, torch.stack([batches[0].min(), batches[0].max()]), rtol=0, atol=0)
    with torch.no_grad():
        y = q(x)
        assert y.shape == conv(x).shape and y.is_contiguous()
        cols, (ho, wo) = _im2col(conv, x)
        assert cols.shape[1] == k
        y64, unit = ref_linear(config, _conv_w2d(conv), conv.bias, cols, act_range)
        _assert_exact(y, (_nchw(y64, 2, ho, wo), _nchw(unit.expand_as(y64), 2, ho, wo)))
        assert q(x[0]).shape == y.shape[1:]  # unbatched input


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_dynamic_is_linear_on_im2col(config, min_sqnr, backend, case):
    """Dynamic per-row ranges on ordinary data: the conv equals a QuantLinear (itself checked
    against the reference above) applied to the independent im2col rows."""
    torch.manual_seed(case)
    conv = nn.Conv2d(**CONV_CASES[case])
    with _ctx(config, backend):
        q = pyquant.nn.QuantConv2d.from_conv(conv, config)
        lin = nn.Linear(q.in_features_k, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(_conv_w2d(conv))
            if conv.bias is not None:
                lin.bias.copy_(conv.bias)
        ql = pyquant.nn.QuantLinear.from_linear(lin, config)
    x = torch.relu(torch.randn(2, conv.in_channels, 9, 8))
    with torch.no_grad():
        y = q(x)
        cols, (ho, wo) = _im2col(conv, x)
        y_lin = _nchw(ql(cols), 2, ho, wo)
        torch.testing.assert_close(y, y_lin, rtol=1e-6, atol=1e-6 * y_lin.abs().max().item())


def test_conv_sparq_pairs_are_adjacent_channels():
    conv = nn.Conv2d(4, 3, 2, bias=False)
    with _backend.use_reference():
        q = pyquant.nn.QuantConv2d.from_conv(conv, pyquant.SparqConfig())
    x = torch.arange(16, dtype=torch.float32).reshape(1, 4, 2, 2)
    cols = F.unfold(x, 2).view(1, 4, 4, -1).permute(0, 3, 2, 1).reshape(-1, 16)
    # row 0, K = (tap0: c0 c1 c2 c3, tap1: ...): adjacent entries are neighbouring channels
    assert cols[0, :4].tolist() == x[0, :, 0, 0].tolist()
    assert q.in_features_k == 16


def test_conv_errors():
    with pytest.raises(ValueError, match="groups"):
        pyquant.nn.QuantConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), pyquant.Int8Config())
    with pytest.raises(TypeError, match="nn.Conv2d"):
        pyquant.nn.QuantConv2d.from_conv(nn.Linear(3, 3), pyquant.Int8Config())
    q = pyquant.nn.QuantConv2d.from_conv(nn.Conv2d(3, 4, 3), pyquant.Int8Config())
    with pytest.raises(ValueError, match="x: expected"):
        q(torch.randn(1, 5, 8, 8))


# ----------------------------------------------------------------------------- module behaviour
def _net():
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 32), nn.GELU(), nn.Linear(32, 10))


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
def test_save_load_bit_identical(config, min_sqnr, backend, tmp_path):
    with _ctx(config, backend):
        model = pyquant.quantize_(_net(), config, filter_fn=pyquant.nn.every_layer_filter)
        fresh = _net()
        for p in fresh.parameters():
            p.data.normal_()
        fresh = pyquant.quantize_(fresh, config, filter_fn=pyquant.nn.every_layer_filter)
    x = torch.randn(3, 3, 6, 6)
    pyquant.calibrate(model[:1], [x, x * 0.5])  # one static module among dynamic ones
    with torch.no_grad():
        y = model(x)
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(fresh(x), y)
        path = tmp_path / "m.pt"
        torch.save(model, path)
        assert torch.equal(torch.load(path, weights_only=False)(x), y)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        buf.seek(0)
        fresh.load_state_dict(torch.load(buf))
        assert torch.equal(fresh(x), y)
    assert str(config) in repr(model) and "static_act_range" in repr(model[0])


def test_state_dict_has_uint8_packed_buffers():
    q = pyquant.nn.QuantLinear.from_linear(nn.Linear(40, 8), pyquant.Int8Config())
    sd = q.state_dict()
    assert sd["packed"].dtype == torch.uint8 and sd["packed"].dim() == 1
    assert set(sd) == {"packed", "w_scale", "w_sum", "bias", "act_range"}
    assert not list(q.parameters())


def _mixed_net():
    """Float layers with parameters (requires_grad, as built) before and between quantized ones."""
    torch.manual_seed(6)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.Flatten(),
                         nn.LayerNorm(8 * 4 * 4), nn.Linear(8 * 4 * 4, 16), nn.GELU(), nn.Linear(16, 5))


@pytest.mark.parametrize("config", ONE_PER_FAMILY, ids=["int8", "w4g32", "lut2", "sparq"])
def test_plain_call_on_a_fresh_model(config, backend):
    """quantize_ then model(x) outside no_grad works (QuantConv2d and QuantLinear after float
    layers whose parameters require grad); a backward through a quantized layer is a clear error."""
    with _ctx(config, backend):
        model = pyquant.quantize_(_mixed_net(), config, filter_fn=lambda m, fqn: fqn in ("2", "7"))
    assert isinstance(model[2], pyquant.nn.QuantConv2d) and isinstance(model[7], pyquant.nn.QuantLinear)
    assert all(p.requires_grad for p in model.parameters())
    x = torch.randn(2, 3, 6, 6)
    y = model(x)
    with torch.no_grad():
        expected = model(x)
    assert torch.equal(y.detach(), expected)
    assert y.requires_grad  # connected to the float layers' parameters, through the quantized ones
    with pytest.raises(RuntimeError, match="QuantLinear '7' is inference-only"):
        y.sum().backward()
    # the first layer quantized: nothing before it requires grad, so neither does the output
    with _ctx(config, backend):
        head = pyquant.quantize_(nn.Sequential(nn.Linear(6, 4)), config)
    assert not head(torch.randn(3, 6)).requires_grad


def test_backward_through_quantized_conv_is_a_clear_error():
    model = pyquant.quantize_(_mixed_net(), pyquant.Int8Config(), filter_fn=lambda m, fqn: fqn == "2")
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    y = model(x)
    with pytest.raises(RuntimeError, match="QuantConv2d '2' is inference-only"):
        y.sum().backward()
    with torch.inference_mode():
        assert not model(x).requires_grad


def test_threads_do_not_change_results():
    q = pyquant.nn.QuantLinear.from_linear(nn.Linear(200, 130), pyquant.Int8Config())
    x = torch.randn(70, 200)
    with torch.no_grad():
        pyquant.set_num_threads(1)
        y1 = q(x)
        pyquant.set_num_threads(2)
        y2 = q(x)
        pyquant.set_num_threads(None)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
def test_calibration_static_range(config, min_sqnr, backend):
    """calibrate() sets act_range = mean of batch min / max (the static path itself is checked in
    test_linear_matches_reference); reset_calibration goes back to the dynamic reference."""
    torch.manual_seed(11)
    lin = _lattice_weights(nn.Linear(32, 8), config, seed=11)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    batches = [torch.randn(4, 32) * s for s in (1.0, 2.0)]
    pyquant.calibrate(q, batches)
    lo = torch.stack([b.min() for b in batches]).mean()
    hi = torch.stack([b.max() for b in batches]).mean()
    torch.testing.assert_close(q.act_range, torch.stack([lo, hi]))
    pyquant.nn.reset_calibration(q)
    assert torch.isnan(q.act_range).all()
    x, _ = _lattice(config, 5, 32, seed=11)
    with torch.no_grad():
        _assert_exact(q(x), ref_linear(config, lin.weight, lin.bias, x))


# ----------------------------------------------------------------------------- compile / export
@pytest.mark.parametrize("config", [pyquant.Int8Config(), pyquant.SparqConfig()], ids=["int8", "sparq"])
def test_compile_matches_eager(config, backend):
    with _ctx(config, backend):
        model = pyquant.quantize_(_net(), config)
    x = torch.randn(2, 3, 6, 6)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))


def test_compile_plain_call_after_float_layers():
    """fullgraph compile of a plain (grad-enabled) call whose quantized layer follows a float
    layer with parameters: compiles, matches eager; only a backward is the clear error."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 8))
    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=lambda m, fqn: fqn == "2")
    x = torch.randn(5, 16)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    assert torch.equal(y.detach(), model(x).detach())
    with pytest.raises(RuntimeError, match="QuantLinear '2' is inference-only"):
        y.sum().backward()


def test_export_sees_opaque_op():
    model = pyquant.quantize_(_net(), pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    ep = torch.export.export(model, (torch.randn(2, 3, 6, 6),))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("pyquant.int8_linear" in t for t in targets) == 3  # one fused op per layer
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(ep.module()(x), model(x))


# ----------------------------------------------------------------------------- quantize_
def test_quantize_default_filter_and_return():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Conv2d(512, 48, 1), nn.Conv2d(2, 2, 1),
                                                         nn.Conv2d(2, 2, 1, groups=2)),
                          nn.LayerNorm(4))
    with pytest.warns(UserWarning, match="left float 2 nn.Conv2d/nn.Conv1d .*1.1, 1.2"):
        out = pyquant.quantize_(model, pyquant.Int8Config())
    assert out is model
    assert isinstance(model[0], pyquant.nn.QuantLinear)
    assert isinstance(model[1][0], pyquant.nn.QuantConv2d)  # (48 x 512: the smallest converted)
    assert type(model[1][1]) is nn.Conv2d and type(model[1][2]) is nn.Conv2d  # too few products
    assert type(model[2]) is nn.LayerNorm
    assert pyquant.nn.default_filter(nn.Conv2d(64, 47, 1), "") is False  # (narrow N)
    assert pyquant.nn.default_filter(nn.Conv2d(511, 48, 1), "") is False  # (48 x 511 < 24576)
    assert pyquant.nn.default_filter(nn.Conv1d(8, 48, 64), "") is True   # (48 x 512)
    assert pyquant.nn.every_layer_filter(nn.Conv2d(2, 2, 1, groups=2), "") is True
    with pytest.warns(UserWarning, match="few products"):  # (the small convs are still float)
        pyquant.quantize_(model, pyquant.SparqConfig())  # already quantized: not re-wrapped
    assert model[0].config == pyquant.Int8Config()


def test_lut2_mse_on_convs_warns_about_its_cost():
    """LUT2's default 'mse' scale search runs per output pixel: on convs it can cost more than the
    conv, which quantize_ says once (not for minmax, nor for Linear layers alone)."""
    def model():
        return nn.Sequential(nn.Conv2d(64, 64, 3), nn.Conv2d(64, 64, 3), nn.Flatten(),
                             nn.Linear(64, 8))
    with pytest.warns(UserWarning, match=r"every output pixel of its 2 conv\(s\) \(0, 1\).*minmax"):
        pyquant.quantize_(model(), pyquant.LUT2Config())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyquant.quantize_(model(), pyquant.LUT2Config(a_scale="minmax"))
        pyquant.quantize_(nn.Sequential(nn.Linear(64, 8)), pyquant.LUT2Config())


def test_quantize_filter_fn_gets_fqn():
    model = nn.Sequential()
    model.add_module("enc", nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    model.add_module("head", nn.Linear(4, 2))
    seen = []

    def keep_head(module, fqn):
        seen.append(fqn)
        return isinstance(module, nn.Linear) and fqn != "head"

    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=keep_head)
    assert seen == ["", "enc", "enc.0", "enc.1", "head"]
    assert isinstance(model.enc[0], pyquant.nn.QuantLinear) and type(model.head) is nn.Linear


def test_quantize_root_module_and_errors():
    q = pyquant.quantize_(nn.Linear(4, 3), pyquant.Int8Config())
    assert isinstance(q, pyquant.nn.QuantLinear)
    with pytest.raises(TypeError, match="config"):
        pyquant.quantize_(nn.Linear(4, 3), object())
    with pytest.raises(TypeError, match="nn.Linear"):
        pyquant.nn.QuantLinear.from_linear(nn.Conv2d(1, 1, 1), pyquant.Int8Config())
    with pytest.raises(ValueError, match="last dim"):
        with torch.no_grad():
            q(torch.randn(2, 5))


def test_config_validation():
    with pytest.raises(ValueError, match="bits"):
        pyquant.WeightOnlyConfig(bits=3)
    with pytest.raises(ValueError, match="group_size"):
        pyquant.WeightOnlyConfig(group_size=48)
    with pytest.raises(ValueError, match="int8"):
        pyquant.LUT2Config(w_levels=(-20, -1, 1, 20), a_levels=(0, 1, 2, 12))
    with pytest.raises(ValueError, match="options"):
        pyquant.SparqConfig(bits=4, options=4)
    assert pyquant.SparqConfig(bits=3, options=None).options == 6
    # options defaults to the paper's choice per width (a fixed default of 5 refused bits=3 / 2)
    assert [pyquant.SparqConfig(bits=b).options for b in (4, 3, 2)] == [5, 6, 7]
    # negative inputs: sign-magnitude by default, dense and 2:4 alike; 'error' refuses them
    assert pyquant.SparqConfig(sparse24=True).negative == "sign_magnitude"
    assert pyquant.SparqConfig().negative == "sign_magnitude"
    assert pyquant.SparqConfig(sparse24=True, negative="error").negative == "error"
    with pytest.raises(ValueError, match="negative: expected"):
        pyquant.SparqConfig(sparse24=True, negative="clip")
    with pytest.raises(Exception):
        pyquant.Int8Config().x = 1  # frozen
    hash(pyquant.LUT2Config())
    for bad in (6, 9, True, "8", None):
        with pytest.raises(ValueError, match="act_bits"):
            pyquant.Int8Config(act_bits=bad)
    # whole floats and bools are not widths (4.0 reached the packer's shape arithmetic as a float)
    for kw in ({"bits": 4.0}, {"group_size": 32.0}, {"bits": True}):
        with pytest.raises(ValueError, match="bits|group_size"):
            pyquant.WeightOnlyConfig(**kw)
    with pytest.raises(ValueError, match="a_levels"):
        pyquant.LUT2Config(a_levels=(0, 1.5, 2, 3))  # was silently (0, 1, 2, 3)
    with pytest.raises(ValueError, match="bits"):
        pyquant.SparqConfig(bits=4.0)
    # numpy integers are integers, stored as plain ints (the repr is parsed by the reference op)
    c = pyquant.WeightOnlyConfig(np.int64(2), np.int64(128))
    assert repr(c) == "WeightOnlyConfig(bits=2, group_size=128)" and type(c.bits) is int
    assert pyquant.LUT2Config(a_levels=np.arange(4)).a_levels == (0, 1, 2, 3)


def test_int8_act_bits_auto_follows_the_active_kernel():
    """'auto' resolves when the config is made: 7 bits where the int8 kernel needs them for full
    speed (the AVX2 vpmaddubsw tile), 8 elsewhere; the resolved width is in the repr, so the
    reference path (which parses the repr) and a rebuilt config use the same bits."""
    from pyquant import _C
    from pyquant._kernels import active_kernels
    from pyquant.nn.ops import parse_config

    kernel = active_kernels()["int8_gemm"]["name"]
    expected = 7 if kernel.startswith("avx2") else 8
    assert pyquant.Int8Config().act_bits == _C.int8_full_speed_act_bits() == expected
    for bits in (7, 8):
        c = pyquant.Int8Config(act_bits=bits)
        assert repr(c) == f"Int8Config(act_bits={bits})" and parse_config(repr(c)) == c
        assert c.act_bits_asked == bits and pickle_roundtrip(c).act_bits_asked == bits


def test_int8_act_bits_auto_resolved_where_the_model_loads(tmp_path):
    """A model quantized with act_bits='auto' on a VNNI CPU (8 bits) and loaded on an AVX2-only
    one (pickled whole, or from save_quantized's file) runs the 7 bits that CPU needs for full
    speed, as if quantized there; an explicit width stays. (Loaded here under PYQUANT_ISA=avx2.)"""
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    pyquant.quantize_(model, pyquant.Int8Config())
    assert model[0].config.act_bits_asked == "auto"
    assert pickle_roundtrip(model)[0].config.act_bits_asked == "auto"
    torch.save(model, tmp_path / "whole.pt")
    pyquant.save_quantized(model, tmp_path / "m.safetensors")
    eight = nn.Sequential(nn.Linear(16, 8))
    pyquant.quantize_(eight, pyquant.Int8Config(act_bits=8))
    torch.save(eight, tmp_path / "eight.pt")
    code = (
        "import sys, torch, pyquant; from torch import nn; d = sys.argv[1]\n"
        "m = torch.load(d + '/whole.pt', weights_only=False)\n"
        "f = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))\n"
        "pyquant.nn.load_quantized_(f, d + '/m.safetensors')\n"
        "e = torch.load(d + '/eight.pt', weights_only=False)\n"
        "print(m[0].config.act_bits, m[2].scheme.config.act_bits, f[0].config.act_bits, "
        "e[0].config.act_bits, pyquant._C.int8_full_speed_act_bits())\n")
    env = {**os.environ, "PYQUANT_ISA": "avx2"}
    if "avx2" not in pyquant._C.available_isas():
        env.pop("PYQUANT_ISA")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    here = str(out[4])
    assert out == [here, here, here, "8", here]


@pytest.mark.parametrize("op,config", [("lowbit_gemm", pyquant.WeightOnlyConfig()),
                                       ("lut_gemm", pyquant.LUT2Config()),
                                       ("sparq_gemm", pyquant.SparqConfig())])
def test_missing_kernel_is_a_clear_error(op, config):
    if hasattr(pyquant, op):
        pytest.skip(f"pyquant.{op} is built")
    with pytest.raises(RuntimeError, match=op):
        pyquant.nn.QuantLinear.from_linear(nn.Linear(64, 8), config)


# ----------------------------------------------------------------------------- a CNN end to end
def test_digits_cnn_end_to_end():
    """A small CNN trained on sklearn digits keeps its accuracy through QuantConv2d/QuantLinear."""
    pytest.importorskip("sklearn")
    from pyquant.studies.digits_cnn import accuracy, quantized, train_cnn

    model, (xtr, _), (xte, yte) = train_cnn(epochs=6)
    base = accuracy(model, xte, yte)
    assert base > 0.9
    q, _ = quantized(model, pyquant.Int8Config())
    assert sum(isinstance(m, pyquant.nn.QuantConv2d) for m in q.modules()) == 3
    assert accuracy(q, xte, yte) >= base - 0.02
    q, _ = quantized(model, pyquant.SparqConfig(), skip_first_last=True, calib=[xtr[:256]])
    assert isinstance(q[0], nn.Conv2d) and not isinstance(q[0], pyquant.nn.QuantConv2d)
    assert accuracy(q, xte, yte) >= base - 0.03


def test_gptq_beats_round_to_nearest():
    """GPTQ on correlated inputs: lower output error than RTN, same module/format."""
    torch.manual_seed(7)
    lin = nn.Linear(128, 48)
    mix = torch.randn(128, 128) / 128 ** 0.5 + torch.eye(128)
    xs = [torch.randn(64, 128) @ mix for _ in range(4)]
    config = pyquant.WeightOnlyConfig(bits=4, group_size=32)
    with _backend.use_reference():
        rtn = pyquant.quantize_(nn.Sequential(lin), config)
        gq = pyquant.nn.gptq_(nn.Sequential(lin), config, xs)
    assert isinstance(gq[0], pyquant.nn.QuantLinear) and gq[0].packed.shape == rtn[0].packed.shape
    x = torch.randn(256, 128) @ mix
    with torch.no_grad():
        assert _sqnr(gq(x), lin(x)) > _sqnr(rtn(x), lin(x)) + 0.5
    with pytest.raises(TypeError, match="WeightOnlyConfig"):
        pyquant.nn.gptq_(nn.Sequential(lin), pyquant.Int8Config(), xs)


def test_sparsegpt_24_keeps_two_of_four_and_is_magnitude_pruning_for_diagonal_h():
    """sparsegpt_24: at most two non-zeros per aligned group of 4 along K (a partial last group
    too); with H a multiple of the identity (nothing to compensate through, every input alike) it
    is magnitude pruning, values included (the weights have no ties)."""
    from pyquant.nn.gptq import sparsegpt_24

    torch.manual_seed(3)
    for k in (4, 7, 130, 257):
        w = torch.randn(24, k)
        x = torch.randn(200, k) + 0.5 * torch.randn(200, 1)  # correlated columns
        p = sparsegpt_24(w, x.double().T @ x.double(), block=8 if k == 130 else 128)
        groups = torch.nn.functional.pad(p, (0, -k % 4)).reshape(24, -1, 4)
        assert int((groups != 0).sum(-1).max()) <= 2 and p.dtype == torch.float32
        assert torch.equal(pyquant.prune_24(p), p)  # quantize_'s magnitude step keeps it as it is
        assert torch.equal(sparsegpt_24(w, 2.5 * torch.eye(k, dtype=torch.float64)), pyquant.prune_24(w))


def test_gptq_with_sparse24_beats_magnitude_pruning():
    """gptq_(model, SparqConfig(sparse24=True), batches): SparseGPT's pruning, lower output error
    than quantize_'s magnitude pruning on correlated inputs, same module and format; a dense
    SparqConfig has no data-aware step (TypeError), nor a Hessian for it."""
    torch.manual_seed(7)
    lin = nn.Linear(128, 48)
    mix = torch.randn(128, 128) / 128 ** 0.5 + torch.eye(128)
    xs = [torch.randn(64, 128) @ mix for _ in range(4)]
    config = pyquant.SparqConfig(sparse24=True)
    with torch.no_grad():
        mag = pyquant.quantize_(nn.Sequential(copy.deepcopy(lin)), config)
        sg = pyquant.nn.gptq_(nn.Sequential(copy.deepcopy(lin)), config, xs)
        assert isinstance(sg[0], pyquant.nn.QuantLinear) and sg[0].packed.shape == mag[0].packed.shape
        x = torch.randn(256, 128) @ mix
        assert _sqnr(sg(x), lin(x)) > _sqnr(mag(x), lin(x)) + 1.0
    with pytest.raises(TypeError, match="sparse24"):
        pyquant.nn.gptq_(nn.Sequential(lin), pyquant.SparqConfig(), xs)
    with pytest.raises(TypeError, match="hessian"):
        pyquant.nn.QuantLinear.from_linear(lin, pyquant.SparqConfig(), hessian=torch.eye(128))


@pytest.mark.parametrize("config", [pyquant.WeightOnlyConfig(bits=2, group_size=32),
                                    pyquant.SparqConfig(sparse24=True)], ids=["gptq", "sparsegpt"])
def test_gptq_quantizes_convs_too(config):
    """gptq_ on a CNN: the convs become QuantConv2d with GPTQ rounding (SparseGPT pruning for
    2:4) over their im2col rows, better than round-to-nearest (magnitude pruning) on correlated
    inputs, like quantize_ would convert them."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, stride=2))
    smooth = lambda n: torch.nn.functional.avg_pool2d(torch.randn(n, 8, 12, 12), 3, 1, 1) * 3
    xs, x = [smooth(16) for _ in range(4)], smooth(16)
    with torch.no_grad():
        rtn = pyquant.quantize_(copy.deepcopy(net), config, filter_fn=pyquant.nn.every_layer_filter)
        gq = pyquant.nn.gptq_(copy.deepcopy(net), config, xs, filter_fn=pyquant.nn.every_layer_filter)
        assert all(isinstance(gq[i], pyquant.nn.QuantConv2d) for i in (0, 2))
        assert _sqnr(gq(x), net(x)) > _sqnr(rtn(x), net(x)) + 0.5


def test_inference_mode_then_normal_mode():
    """Modules converted / run under inference_mode keep working outside it (and vice versa),
    each output against the independent reference."""
    config = pyquant.Int8Config()
    lin = _lattice_weights(nn.Linear(24, 6), config, seed=3)
    x, batches = _lattice(config, 5, 24, seed=3)
    expected = ref_linear(config, lin.weight, lin.bias, x)
    with torch.inference_mode():
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
        _assert_exact(q(x), expected)
    with torch.no_grad():
        _assert_exact(q(x), expected)
    _assert_exact(q(x), expected)  # plain call
    _, batches = _lattice(config, 5, 24, seed=3, static=True)
    act_range = _calibrated(q, batches)  # calibrate (normal mode) a module built in inference mode
    q.load_state_dict(q.state_dict())
    with torch.inference_mode():
        _assert_exact(q(x), ref_linear(config, lin.weight, lin.bias, x, act_range))
        pyquant.nn.reset_calibration(q)
        _assert_exact(q(x), expected)


def test_weightonly_per_group_fallback(monkeypatch):
    """Without lowbit_gemm_grouped: one lowbit_gemm per K group, same results (within float)."""
    if not _backend.available("lowbit_gemm"):
        pytest.skip("pyquant.lowbit_gemm is not in this build yet")
    torch.manual_seed(9)
    lin = nn.Linear(200, 33)  # K not a multiple of the group size: a short last group
    config = pyquant.WeightOnlyConfig(bits=4, group_size=64)
    grouped = pyquant.nn.QuantLinear.from_linear(lin, config)
    monkeypatch.setattr(_backend, "available", lambda op: op != "lowbit_gemm_grouped")
    sliced = pyquant.nn.QuantLinear.from_linear(lin, config)
    assert "packed_offsets" in dict(sliced.named_buffers()) and sliced.packed_offsets.numel() == 5
    x = torch.randn(7, 200)
    with torch.no_grad():
        torch.testing.assert_close(sliced(x), grouped(x), rtol=1e-5, atol=1e-5)
    x, _ = _lattice(config, 7, 200, seed=9)
    with torch.no_grad():
        _assert_exact(sliced(x), ref_linear(config, lin.weight, lin.bias, x))


# ----------------------------------------------------------------------------- QuantGRU lives in nn
def test_nn_does_not_import_search():
    code = "import sys, pyquant.nn; print(sorted(m for m in sys.modules if m.startswith('pyquant.search')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert pyquant.nn.QuantGRU.__module__ == "pyquant.nn.gru"


def test_the_lazy_front_end_names_are_listed():
    """quantize_ and the configs load pyquant.nn on first use, and dir() lists them."""
    for name in pyquant.__all__:
        assert name in dir(pyquant) and getattr(pyquant, name) is not None


def test_gru_config():
    from pyquant.nn import GRUConfig
    from pyquant.nn.gru import GRU_OPS

    c = GRUConfig.uniform(4)
    assert c.widths() == {op: 4 for op in GRU_OPS} and GRUConfig() == GRUConfig.uniform(8)
    assert GRUConfig.from_widths(4) == c and GRUConfig.from_widths(c) is c
    assert GRUConfig.from_widths({**c.widths(), "add_h": 7}).add_h == 7
    with pytest.raises(ValueError, match="w_hr"):
        GRUConfig(w_hr=3)  # matmul widths are the kernels' 2, 4, 8
    with pytest.raises(ValueError, match="add_z"):
        GRUConfig(add_z=9)
    with pytest.raises(ValueError, match="missing"):
        GRUConfig.from_widths({"w_ir": 8})
    with pytest.raises(ValueError, match="unknown"):
        GRUConfig.from_widths({**c.widths(), "w_xx": 4})
    with pytest.raises(ValueError, match="uniform width must be 2, 4 or 8"):
        GRUConfig.uniform(6)
    with pytest.raises(TypeError, match="QuantGRU.from_gru"):
        pyquant.quantize_(nn.Sequential(nn.GRU(4, 4)), GRUConfig())
    with pytest.raises(Exception):
        c.add_h = 5  # frozen
    hash(c)


def test_quantgru_takes_its_config():
    """A GRUConfig and the same widths as a dict give the same module; plain calls work."""
    from pyquant.nn import GRUConfig

    torch.manual_seed(0)
    gru = nn.GRU(5, 7, batch_first=True)
    x = torch.randn(3, 4, 5)
    config = GRUConfig.from_widths({**GRUConfig.uniform(4).widths(), "add_r": 6, "w_hz": 2})
    a = pyquant.nn.QuantGRU.from_gru(gru, config, calib=x)
    b = pyquant.nn.QuantGRU.from_gru(gru, config.widths(), calib=x)
    assert a.config == config and a.widths == config.widths()
    out, h_n = a(x)  # plain call, gru's parameters require grad
    assert not out.requires_grad and torch.equal(out, b(x)[0]) and h_n.shape == (1, 3, 7)


@pytest.mark.parametrize("config", ONE_PER_FAMILY, ids=lambda c: type(c).__name__)
def test_module_dtype_casts_keep_the_quantized_buffers(config):
    """model.half() / .to(bfloat16) / .double() after quantize_: the quantized modules keep their
    float32 buffers (a float16 column sum overflows; the state dict keeps loading) and run
    inputs of the new dtype, returning that dtype."""
    torch.manual_seed(4)
    lin = pyquant.quantize_(nn.Sequential(nn.Linear(40, 30)), config)
    conv = pyquant.quantize_(nn.Sequential(nn.Conv2d(2, 4, 3)), config, filter_fn=pyquant.nn.every_layer_filter)
    x, xc = torch.randn(5, 40).abs(), torch.randn(2, 2, 6, 7).abs()
    with torch.no_grad():
        y, yc = lin(x), conv(xc)
    before = {k: (v.dtype, v.clone()) for k, v in lin.state_dict().items()}
    for cast, dtype in ((nn.Module.half, torch.float16), (nn.Module.bfloat16, torch.bfloat16),
                        (nn.Module.double, torch.float64), (nn.Module.float, torch.float32)):
        cast(lin), cast(conv)
        for k, (dt, v) in before.items():
            now = lin.state_dict()[k]
            assert now.dtype == dt and torch.equal(now.nan_to_num(), v.nan_to_num()), k
        with torch.no_grad():
            out, outc = lin(x.to(dtype)), conv(xc.to(dtype))
        assert out.dtype == dtype and outc.dtype == dtype
        if dtype in (torch.float32, torch.float64):  # inputs exact in the dtype: same codes
            assert torch.equal(out.float(), y) and torch.equal(outc.float(), yc)


def test_integer_inputs_are_a_type_error():
    q = pyquant.quantize_(nn.Sequential(nn.Linear(4, 3)), pyquant.Int8Config())
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        q(torch.tensor([[1, -2, 3, 4]]))


@pytest.mark.parametrize("config", ONE_PER_FAMILY, ids=lambda c: type(c).__name__)
def test_conv_empty_batch(config):
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    q = pyquant.nn.QuantConv2d.from_conv(conv, config)
    x = torch.zeros(0, 3, 9, 8)
    with torch.no_grad():
        assert q(x).shape == conv(x).shape == (0, 5, 5, 4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_calibrate_refuses_nonfinite_batches(bad):
    model = pyquant.quantize_(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)),
                              pyquant.Int8Config())
    ok = torch.randn(8, 6)
    x = ok.clone()
    x[2, 1] = bad
    with pytest.raises(ValueError, match="calibrate: module '0' saw non-finite inputs"):
        pyquant.calibrate(model, [ok, x])
    assert all(torch.isnan(m.act_range).all() for m in model if hasattr(m, "act_range"))
    assert model[0]._observer is None  # (left the calibration mode)
    pyquant.calibrate(model, [ok])
    assert not torch.isnan(model[0].act_range).any()


def test_calibrate_refuses_no_batch_and_a_float_model():
    model = pyquant.quantize_(nn.Sequential(nn.Linear(6, 4)), pyquant.SparqConfig())
    for empty in ([], iter([]), (x for x in ())):
        with pytest.raises(ValueError, match="batches: got no batch"):
            pyquant.calibrate(model, empty)
    assert model[0]._observer is None and torch.isnan(model[0].act_range).all()
    with pytest.raises(ValueError, match="no quantized layer to calibrate"):
        pyquant.calibrate(nn.Sequential(nn.Linear(6, 4)), [torch.randn(2, 6)])
    tables = pyquant.quantize_(nn.Sequential(nn.Embedding(10, 8)), pyquant.Int8Config(),
                               filter_fn=pyquant.nn.embedding_filter)
    pyquant.calibrate(tables, [torch.arange(4)])  # (converted, nothing with a range: no error)


def test_calibrate_again_does_not_depend_on_the_ranges_set_before():
    """Recording runs every layer with dynamic ranges: a second calibration on the same batches
    gives the same ranges, and a stale narrow range upstream does not clip what a later layer
    records (it did: a new user's review, 41st session); a failed calibration restores them."""
    torch.manual_seed(0)
    model = pyquant.quantize_(nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)),
                              pyquant.Int8Config(act_bits=8))
    data = [torch.randn(8, 64) * 3 for _ in range(2)]
    pyquant.calibrate(model, data)
    first = [m.act_range.clone() for m in model]
    pyquant.calibrate(model, data)
    assert all(torch.equal(m.act_range, r) for m, r in zip(model, first))
    model[0].act_range.copy_(torch.tensor([-0.5, 0.5]))
    pyquant.calibrate(model, data)
    assert all(torch.equal(m.act_range, r) for m, r in zip(model, first))
    stale = torch.tensor([-0.5, 0.5])
    model[0].act_range.copy_(stale)
    with pytest.raises(ValueError, match="non-finite"):
        pyquant.calibrate(model, [data[0], torch.full((8, 64), float("nan"))])
    assert torch.equal(model[0].act_range, stale) and torch.equal(model[1].act_range, first[1])


def test_quantize_twice_with_another_config_warns():
    """The second quantize_ finds no float layer: a user comparing configs on one model object
    would silently time the first config again."""
    model = pyquant.quantize_(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)),
                              pyquant.Int8Config())
    with pytest.warns(UserWarning, match=r"converted no layer.*quantized already \(with "
                                         r"Int8Config\(act_bits=[78]\)\)"):
        pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyquant.quantize_(model, pyquant.Int8Config())  # (the same config: nothing to say)
    assert isinstance(model[0].config, pyquant.Int8Config)


def test_calibrate_refuses_a_range_wider_than_float32():
    # finite inputs near +-FLT_MAX: the mean range's width hi - lo overflows float32 (it was set,
    # and every output was NaN); refused, every range left as it was
    model = pyquant.quantize_(nn.Sequential(nn.Linear(6, 4)), pyquant.Int8Config())
    x = torch.randn(8, 6)
    x[0, :2] = torch.tensor([3e38, -3e38])
    with pytest.raises(ValueError, match=r"calibrate: module '0' saw the range .* wider than float32"):
        pyquant.calibrate(model, [x])
    assert all(torch.isnan(m.act_range).all() for m in model if hasattr(m, "act_range"))
    x[0, :2] = torch.tensor([1.7e38, -1.7e38])  # within float32: calibrated
    pyquant.calibrate(model, [x])
    assert torch.isfinite(model[0].act_range).all()


def _lowbit_weight_whole(w, bits, gs):  # the clipping search as whole-tensor PyTorch passes
    from pyquant.nn.schemes import best_clip, bf16_round
    n, k = w.shape
    g = -(-k // gs)
    wp = torch.nn.functional.pad(w, (0, g * gs - k)).view(n, g, gs)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    amax = wp.abs().amax(2, keepdim=True).clamp(min=1e-12)

    def candidate(r):
        s = bf16_round(amax * r / max(qmax, 1))
        return s, lane_sum(torch.round(wp * (1.0 / s)).clamp_(qmin, qmax) * s - wp)

    best_s = best_clip(torch.linspace(1.0, 0.5 if bits == 4 else 0.3, 11).tolist(), candidate)
    codes = torch.round(wp * (1.0 / best_s)).clamp_(qmin, qmax).to(torch.int8).view(n, g * gs)[:, :k]
    return codes.contiguous(), best_s.view(n, g).float()


def _lut_weight_whole(w, levels):
    from pyquant.nn.schemes import best_clip, nearest_level
    lv = torch.tensor(levels, dtype=w.dtype)
    amax = w.abs().amax(1, keepdim=True).clamp(min=1e-12)

    def candidate(r):
        s = amax * r / lv.abs().max()
        return s, lane_sum(lv[nearest_level(w * (1.0 / s), levels).long()] * s - w)

    best_s = best_clip(torch.linspace(1.0, 0.2, 17).tolist(), candidate)
    return nearest_level(w * (1.0 / best_s), levels).to(torch.uint8), best_s.view(-1).float()


@pytest.mark.parametrize("shape", [(300, 1000), (7, 70), (1, 4096), (2000, 200), (3, 5)])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_clipping_searches_equal_the_pytorch_ones(shape, threads, monkeypatch):
    """The weight quantizers' clipping searches run natively (csrc/quantize/weight_search.h): the
    same codes and scales, bit for bit, as whole-tensor PyTorch passes of the same arithmetic
    (float32, the error sums in the kernel's lane order), on any thread count; partial last
    groups, an outlier row, a zero row, a tiny row, exact ties between candidates."""
    from pyquant.nn.schemes import lowbit_weight, lut_weight
    torch.manual_seed(shape[0])
    w = torch.randn(shape) * torch.rand(shape[0], 1) * 0.1
    w[0, :3] = torch.tensor([1.5, -2.0, 0.0])[: shape[1]]  # an outlier row
    if shape[0] > 2:
        w[1] = 0.0
        w[2] *= 1e-30
    if shape[0] > 3:
        w[3] = torch.round(w[3] * 1e4)  # integers: many exact ties between candidates
    if threads == 2:  # the WeightOnly search in row chunks (about 7 rows each)
        monkeypatch.setattr("pyquant.nn.schemes.SEARCH_CHUNK_GROUPS", 7 * -(-shape[1] // 32))
    before = pyquant._threads._pinned
    pyquant.set_num_threads(threads)
    try:
        for bits, gs in ((4, 32), (2, 64), (4, 128), (2, 32)):
            for got, want in zip(lowbit_weight(w, bits, gs), _lowbit_weight_whole(w, bits, gs)):
                assert got.dtype == want.dtype and torch.equal(got, want), (bits, gs)
        for levels in ((-3, -1, 1, 3), (1, -2, 0, -1), (-8, -1, 2, 15)):
            for got, want in zip(lut_weight(w, levels), _lut_weight_whole(w, levels)):
                assert got.dtype == want.dtype and torch.equal(got, want), levels
    finally:
        pyquant.set_num_threads(before)


@pytest.mark.parametrize("shape", [(300, 1000), (5, 3), (1, 4097)])
def test_native_int8_weights_equal_the_pytorch_formula(shape):
    """Int8Config / SparqConfig weights in one native pass: the bits of w.abs().amax(1)
    .clamp(min=1e-12) / 127 and round(w / s).clamp(-127, 127), with exact .5 ties, a zero row
    and a tiny row."""
    from pyquant.nn.schemes import int8_weight
    torch.manual_seed(shape[1])
    w = torch.randn(shape) * 0.05
    w[0, : min(3, shape[1])] = torch.tensor([127.0, -63.5, 0.5])[: shape[1]]  # ties at scale 1
    if shape[0] > 2:
        w[1] = 0.0
        w[2] *= 1e-35
    sw = w.abs().amax(1).clamp(min=1e-12) / 127.0
    want = torch.round(w / sw[:, None]).clamp_(-127, 127).to(torch.int8)
    got_q, got_s = int8_weight(w)
    assert torch.equal(got_s, sw) and torch.equal(got_q, want)


def test_native_weight_quantizers_give_the_same_bits_on_every_path(isa):
    """The searches are built with 16-byte (scalar tier, NEON) and 32-byte vectors (the AVX2 and
    AVX-512 tiers): every path gives the bits of the PyTorch references above."""
    from pyquant.nn.schemes import int8_weight, lowbit_weight, lut_weight
    torch.manual_seed(7)
    w = torch.randn(37, 301) * 0.05
    w[0, :5] = torch.tensor([1.5, -2.0, 0.0, 0.25, -0.25])
    w[1] = torch.round(w[1] * 1e3)
    for bits, gs in ((4, 32), (2, 64)):
        for got, want in zip(lowbit_weight(w, bits, gs), _lowbit_weight_whole(w, bits, gs)):
            assert torch.equal(got, want), (isa, bits, gs)
    for got, want in zip(lut_weight(w, (1, -2, 0, -1)), _lut_weight_whole(w, (1, -2, 0, -1))):
        assert torch.equal(got, want), isa
    sw = w.abs().amax(1).clamp(min=1e-12) / 127.0
    q, s = int8_weight(w)
    assert torch.equal(s, sw) and torch.equal(q, torch.round(w / sw[:, None]).clamp_(-127, 127).to(torch.int8))


@pytest.mark.parametrize("shape,gs", [((300, 1000), 32), ((5, 3), 64), ((2, 4097), 128), ((7, 64), 64)])
def test_native_group_statistics(shape, gs):
    """The conversion's per-group statistics (max |w|, code sums, level counts): as PyTorch's."""
    from pyquant import _C
    torch.manual_seed(shape[1])
    n, k = shape
    g = -(-k // gs)
    w = torch.randn(shape)
    want = torch.nn.functional.pad(w.abs(), (0, g * gs - k)).view(n, g, gs).amax(2)
    assert torch.equal(torch.from_numpy(_C.group_absmax(w.numpy(), gs, 2)), want)
    codes = torch.randint(-128, 128, shape, dtype=torch.int8)
    want = torch.nn.functional.pad(codes.int(), (0, g * gs - k)).view(n, g, gs).sum(2, dtype=torch.int32)
    assert torch.equal(torch.from_numpy(_C.group_sums(codes.numpy(), gs, 2)), want)
    u = torch.randint(0, 5, shape, dtype=torch.uint8)  # (4: not a level, not counted)
    want = torch.stack([(u == i).sum(1, dtype=torch.int32) for i in range(4)], 1)
    assert torch.equal(torch.from_numpy(_C.level_counts(u.numpy(), 2)), want)


def test_weight_quantizers_take_weights_that_require_grad_and_name_bad_ones():
    """fake_quant_weight on a live parameter (no .detach() needed); a float64 weight too large
    for float32, or one whose group scale overflows bfloat16, is a ValueError, as is a root
    module's bad weight (named "(root)")."""
    lin = nn.Linear(64, 8)
    for config in (pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32), pyquant.LUT2Config()):
        assert torch.isfinite(scheme_for(config).fake_quant_weight(lin.weight)).all()
    big = nn.Sequential(nn.Linear(64, 64).double())
    with torch.no_grad():
        big[0].weight[0, 0] = 1e39  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="layer '0': weight: expected finite"):
        pyquant.quantize_(big, pyquant.Int8Config())
    huge = nn.Sequential(nn.Linear(64, 64))
    with torch.no_grad():
        huge[0].weight[0, 0] = 3.4e38
    with pytest.raises(ValueError, match="layer '0': weight: .* overflows the bfloat16 group scales"):
        pyquant.quantize_(huge, pyquant.WeightOnlyConfig(2, 32))
    root = nn.Linear(16, 4)
    with torch.no_grad():
        root.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^layer '\(root\)': weight: expected finite"):
        pyquant.quantize_(root, pyquant.Int8Config())


def test_native_weight_searches_check_their_arguments():
    from pyquant import _C
    w = np.zeros((4, 64), np.float32)
    with pytest.raises(ValueError, match="at least one column"):
        _C.quantize_rows_int8(np.zeros((5, 0), np.float32))
    with pytest.raises(ValueError, match="at least one column"):
        _C.clip_search_levels(np.zeros((5, 0), np.float32), np.ones((17, 5, 0), np.float32), [-3, -1, 1, 3])
    with pytest.raises(ValueError, match="group_size"):
        _C.group_absmax(w, 2**63)
    with pytest.raises(ValueError, match="scales: expected float32"):
        _C.clip_search_uniform(w, np.ones((11, 4, 3), np.float32), 32, -8, 7)
    with pytest.raises(ValueError, match="positive finite"):
        _C.clip_search_uniform(w, np.zeros((11, 4, 2), np.float32), 32, -8, 7)
    with pytest.raises(ValueError, match="levels: expected 4 distinct"):
        _C.clip_search_levels(w, np.ones((17, 4, 1), np.float32), [1, 1, 2, 3])
    with pytest.raises(ValueError, match="w: expected a 2-D"):
        _C.quantize_rows_int8(np.zeros(5, np.float32))


@pytest.mark.parametrize("config", [pyquant.WeightOnlyConfig(4, 32), pyquant.LUT2Config(),
                                    pyquant.Int8Config(), pyquant.SparqConfig(sparse24=True)])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_a_clear_error(config, bad):
    """A NaN or infinite weight would pick scales and codes silently (every output NaN or 0):
    quantize_ stops at that layer and names it (the layers before it stay quantized; fixing the
    weight and calling quantize_ again converts the rest)."""
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    with torch.no_grad():
        model[2].weight[1, 3] = bad
    with pytest.raises(ValueError, match=r"^layer '2': weight: expected finite values"):
        pyquant.quantize_(model, config)
    assert isinstance(model[0], pyquant.nn.QuantLinear) and isinstance(model[2], nn.Linear)
    with torch.no_grad():
        model[2].weight[1, 3] = 0.5
    pyquant.quantize_(model, config)
    assert isinstance(model[2], pyquant.nn.QuantLinear)
    assert torch.isfinite(model(torch.randn(3, 16))).all()


def test_quantgru_dtypes_and_missing_calibration():
    from pyquant.nn import GRUConfig
    torch.manual_seed(1)
    gru = nn.GRU(5, 7, batch_first=True)
    x = torch.randn(2, 3, 5)
    with pytest.warns(UserWarning, match="without calib="):
        pyquant.nn.QuantGRU.from_gru(gru, GRUConfig.uniform(8))
    q = pyquant.nn.QuantGRU.from_gru(gru, GRUConfig.uniform(8), calib=x)
    out, h = q(x)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        o, hn = q(x.to(dtype))
        assert o.dtype == hn.dtype == dtype
        assert torch.equal(o, q(x.to(dtype).float())[0].to(dtype))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        q(x.to(torch.int64))


class Conv1D(nn.Module):  # transformers.pytorch_utils.Conv1D's layout and forward (GPT-2)
    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


@pytest.mark.parametrize("real", [False, True], ids=["local", "transformers"])
def test_quantize_converts_gpt2_conv1d(real):
    torch.manual_seed(2)
    cls = pytest.importorskip("transformers.pytorch_utils").Conv1D if real else Conv1D
    net = nn.Sequential(cls(24, 16), nn.ReLU(), cls(8, 24))
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        y = net(x)
        q = pyquant.quantize_(copy.deepcopy(net), pyquant.Int8Config())
        assert all(isinstance(m, pyquant.nn.QuantLinear) for m in (q[0], q[2]))
        assert (q[0].in_features, q[0].out_features) == (16, 24)
        assert _sqnr(q(x), y) > 30.0


@pytest.mark.parametrize("config", ONE_PER_FAMILY, ids=lambda c: type(c).__name__)
def test_share_memory_rebinds(config):
    """share_memory() (and torch.multiprocessing) move buffers' storage in place: the bound
    native call must follow (it read freed memory)."""
    torch.manual_seed(3)
    q = pyquant.quantize_(nn.Sequential(nn.Linear(300, 1100)), config)  # buffers over 1 MiB
    x = torch.randn(4, 300).abs()
    with torch.no_grad():
        y = q(x)
        q.share_memory()
        assert all(b.is_shared() for b in q.buffers())
        assert torch.equal(q(x), y)
        from torch import multiprocessing  # noqa: F401  (registers the shared-memory reductions)
        from multiprocessing.reduction import ForkingPickler  # what mp.Queue.put uses

        q2 = pyquant.quantize_(nn.Sequential(nn.Linear(300, 1100)), config)
        y2 = q2(x)
        ForkingPickler.dumps(q2)
        assert torch.equal(q2(x), y2)


def test_gptq_takes_grouped_convs_and_conv1d():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.ReLU(), nn.Flatten(),
                        Conv1D(16, 8 * 5 * 5), nn.ReLU(), nn.Linear(16, 4))
    xs = [torch.randn(8, 4, 5, 5) for _ in range(3)]
    config = pyquant.WeightOnlyConfig(bits=4, group_size=32)
    with torch.no_grad():
        gq = pyquant.nn.gptq_(copy.deepcopy(net), config, xs, filter_fn=lambda m, fqn: fqn != "5")
        # a filter_fn that asks for it converts even a depthwise conv (per-group Hessians)
        assert isinstance(gq[0], pyquant.nn.QuantGroupedConv2d) and isinstance(gq[5], nn.Linear)
        assert isinstance(gq[3], pyquant.nn.QuantLinear)
        rtn = pyquant.quantize_(copy.deepcopy(net), config, filter_fn=lambda m, fqn: fqn in ("0", "3"))
        x = torch.randn(64, 4, 5, 5)
        assert _sqnr(gq(x), net(x)) > _sqnr(rtn(x), net(x))


def test_assign_load_of_inference_tensors_then_calibrate():
    model = pyquant.quantize_(nn.Sequential(nn.Linear(6, 5)), pyquant.Int8Config())
    with torch.inference_mode():
        sd = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = pyquant.quantize_(nn.Sequential(nn.Linear(6, 5)), pyquant.Int8Config())
    fresh.load_state_dict(sd, assign=True)
    assert not any(b.is_inference() for b in fresh.buffers())
    pyquant.calibrate(fresh, [torch.randn(3, 6)])
    assert not torch.isnan(fresh[0].act_range).any()


def test_calibrate_skips_empty_batches_and_conv_int_input():
    q = pyquant.quantize_(nn.Sequential(nn.Conv2d(3, 4, 3)), pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    pyquant.calibrate(q, [torch.randn(0, 3, 5, 5)])
    assert torch.isnan(q[0].act_range).all()  # saw nothing: stays dynamic
    pyquant.calibrate(q, [torch.randn(0, 3, 5, 5), torch.randn(2, 3, 5, 5)])
    assert not torch.isnan(q[0].act_range).any()
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        q(torch.ones(1, 3, 5, 5, dtype=torch.int64))


def test_quantgru_share_memory_and_module_casts():
    from pyquant.nn import GRUConfig
    torch.manual_seed(2)
    gru = nn.GRU(6, 8, batch_first=True)
    x = torch.randn(3, 5, 6)
    for backend in ("kernels", "python", "torch"):
        q = pyquant.nn.QuantGRU.from_gru(gru, GRUConfig.uniform(8), calib=x)
        q.backend = backend
        with torch.no_grad():
            y = q(x)[0]
            q.share_memory()  # moves the buffers' storage: numpy views and plan rebuilt
            assert torch.equal(q(x)[0], y), backend
            dtypes = {k: v.dtype for k, v in q.state_dict().items()}
            q.half()
            assert {k: v.dtype for k, v in q.state_dict().items()} == dtypes
            assert torch.equal(q(x)[0], y), backend


def test_quantize_module_under_two_names():
    """A module reachable under two names (an attribute alias, or also held in a ModuleList)
    becomes one quantized module under both: sharing kept, converted once."""
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = self.a
            self.blocks = nn.ModuleList([self.a, nn.Linear(16, 16)])

        def forward(self, x):
            return self.blocks[1](self.b(self.a(x)))

    torch.manual_seed(0)
    model = Twice()
    x = torch.randn(3, 16)
    with torch.no_grad():
        ref = model(x)
        pyquant.quantize_(model, pyquant.Int8Config())
        y = model(x)
    assert isinstance(model.a, pyquant.nn.QuantLinear)
    assert model.b is model.a and model.blocks[0] is model.a
    assert len(pyquant.nn.api._quantized_layers(model)) == 2
    assert F.cosine_similarity(y.flatten(), ref.flatten(), dim=0) > 0.99


def test_a_module_under_two_names_converts_if_either_is_selected():
    """filter_fn selects a shared module under one of its names: it converts, and both names
    hold the quantized module (whatever the names' registration order)."""
    shared = nn.Linear(16, 16)
    model = nn.Module()
    model.encoder = nn.Sequential(shared)
    model.decoder = nn.Sequential(shared, nn.Linear(16, 16))
    pyquant.quantize_(model, pyquant.Int8Config(),
                      filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn.startswith("decoder"))
    assert isinstance(model.decoder[0], pyquant.nn.QuantLinear)
    assert model.encoder[0] is model.decoder[0]
    assert isinstance(model.decoder[1], pyquant.nn.QuantLinear)


def test_quantize_that_converts_nothing_says_so():
    """A model with no layer quantize_ converts (a model quantized by torch.ao, a scripted one,
    a stack of activations) warns; a filter passed as a class is a clear TypeError."""
    with pytest.warns(UserWarning, match="converted no layer: Sequential has no float layer"):
        pyquant.quantize_(nn.Sequential(nn.ReLU(), nn.Tanh()), pyquant.Int8Config())
    tq = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(8, 8)), {nn.Linear},
                                                dtype=torch.qint8)
    with pytest.warns(UserWarning, match="converted no layer: .*torch.ao.quantization"):
        pyquant.quantize_(tq, pyquant.Int8Config())
    with warnings.catch_warnings(record=True) as seen:  # (layers the default filter leaves float
        warnings.simplefilter("always")                 # have their own warning only)
        pyquant.quantize_(nn.Sequential(nn.Conv2d(8, 8, 3, groups=8)), pyquant.Int8Config())
    assert any("left float" in str(w.message) for w in seen)
    assert not any("converted no layer" in str(w.message) for w in seen)
    for call in (pyquant.quantize_, functools.partial(pyquant.nn.gptq_, batches=[torch.ones(8)])):
        with pytest.raises(TypeError, match=r"filter_fn: expected a function .* got the class "
                                            r"Linear; e.g. filter_fn=lambda m, fqn: isinstance"):
            call(nn.Sequential(nn.Linear(8, 8)), pyquant.WeightOnlyConfig(),
                 filter_fn=nn.Linear)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # (the fp32 reference)
def test_quantize_leaves_layers_whose_parent_reads_the_weight_or_own_forward():
    """MultiheadAttention reads out_proj.weight directly (torch's NonDynamicallyQuantizableLinear):
    converting it alone broke every nn.TransformerEncoderLayer (the attention module converts as
    a whole: test_attention.py). Subclasses with a forward of their own (a weight-standardized
    conv) stay float, with a warning; plain subclasses convert."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 5, 32)
    no_attention = lambda m, fqn: pyquant.nn.default_filter(m, fqn) and not isinstance(  # noqa: E731
        m, nn.MultiheadAttention)
    with torch.no_grad():
        ref = enc(x)
        pyquant.quantize_(enc, pyquant.Int8Config(), filter_fn=no_attention)
        y = enc(x)
    assert type(enc.self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert isinstance(enc.linear1, pyquant.nn.QuantLinear)
    assert torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0) > 0.99
    with torch.no_grad():
        pyquant.quantize_(enc, pyquant.Int8Config())
        y = enc(x)
    assert isinstance(enc.self_attn, pyquant.nn.QuantMultiheadAttention)
    assert torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0) > 0.99
    stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2).eval()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True  # padding: the stack's nested-tensor fast path would take it
    with torch.no_grad():
        ref = stack(x, src_key_padding_mask=mask)
        pyquant.quantize_(stack, pyquant.Int8Config())
        y = stack(x, src_key_padding_mask=mask)
    assert torch.nn.functional.cosine_similarity(y[0].flatten(), ref[0].flatten(), dim=0) > 0.99

    class StdConv(nn.Conv2d):
        def forward(self, x):
            w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True))
            return self._conv_forward(x, w, self.bias)

    class PlainLinear(nn.Linear):
        pass

    model = nn.Sequential(StdConv(3, 4, 3), nn.Flatten(), PlainLinear(4, 2))
    # (the warning gives a filter that converts them: every_layer_filter does not)
    with pytest.warns(UserWarning, match=r"left float 1 .*0.*filter_fn=lambda m, fqn: isinstance"):
        pyquant.quantize_(model, pyquant.Int8Config())
    assert type(model[0]) is StdConv and isinstance(model[2], pyquant.nn.QuantLinear)
    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=lambda m, fqn: fqn == "0")
    assert isinstance(model[0], pyquant.nn.QuantConv2d)  # asked for explicitly


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_quantize_user_mistakes_get_clear_errors():
    """Mistakes a new user makes: a config class instead of an instance, a layer without weights,
    grouped convs left float silently, a 0-d or non-CPU input (found by a new-user review)."""
    model = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(TypeError, match=r"config instance such as Int8Config\(\)"):
        pyquant.quantize_(model, pyquant.Int8Config)
    with pytest.raises(TypeError, match="expected one of .*Int8Config"):
        pyquant.quantize_(model, object())
    # layers without weights stay float (and keep working); direct conversion says why
    empty = nn.Sequential(nn.Linear(0, 4), nn.Linear(4, 0), nn.Linear(4, 3))
    pyquant.quantize_(empty, pyquant.Int8Config())
    assert [type(m) for m in empty] == [nn.Linear, nn.Linear, pyquant.nn.QuantLinear]
    for lin in (nn.Linear(0, 4), nn.Linear(4, 0)):
        with pytest.raises(ValueError, match="nothing to quantize"):
            pyquant.nn.QuantLinear.from_linear(lin, pyquant.Int8Config())
    # grouped (e.g. depthwise) convs are left float with a warning naming them
    cnn = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 1), nn.Conv2d(64, 64, 3))
    with pytest.warns(UserWarning, match="left float 2 nn.Conv2d/nn.Conv1d layer.*few products.*0, 1"):
        pyquant.quantize_(cnn, pyquant.Int8Config())
    assert type(cnn[0]) is nn.Conv2d and type(cnn[1]) is nn.Conv2d
    assert isinstance(cnn[2], pyquant.nn.QuantConv2d)  # (64 x 3 x 3 x 64 products per pixel)
    pyquant.quantize_(cnn, pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    assert isinstance(cnn[0], pyquant.nn.QuantGroupedConv2d) and isinstance(cnn[1], pyquant.nn.QuantConv2d)
    # modules whose `weight` is not a tensor are not layers: the filter passes over them
    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.lin = 0.5, nn.Linear(4, 4)

        def forward(self, x):
            return self.weight * self.lin(x)

    mix = pyquant.quantize_(Mix(), pyquant.Int8Config())
    assert isinstance(mix.lin, pyquant.nn.QuantLinear) and mix.weight == 0.5
    # an exported program's config text of a 2:4 layer (negative='error' was its only choice
    # before sign-magnitude 2:4) keeps refusing negative inputs
    old = "SparqConfig(bits=4, options=5, rounding='round', pairs=True, negative='error', sparse24=True)"
    assert pyquant.nn.ops.parse_config(old) == pyquant.SparqConfig(sparse24=True, negative="error")
    q = pyquant.quantize_(nn.Linear(1, 8), pyquant.Int8Config())
    with pytest.raises(ValueError, match="0-d tensor"):
        q(torch.tensor(1.0))
    for layer, shape in ((q, (2, 1)), (cnn[1], (1, 4, 5, 5))):
        with pytest.raises(ValueError, match="expected a CPU tensor, got one on meta"):
            layer(torch.ones(shape, device="meta"))


@pytest.mark.parametrize("config", [pyquant.WeightOnlyConfig(4, 32), pyquant.Int8Config(),
                                    pyquant.LUT2Config(), pyquant.SparqConfig()],
                         ids=lambda c: type(c).__name__)
def test_in_place_buffer_edit_reaches_the_native_call(config):
    """Buffers edited in place (not replaced) rebind the fused call and remake what is derived
    from them (WeightOnly's panel scales, Int8/LUT2's scale x column-sum offsets): the output
    follows the edit like a freshly converted module's, not a half-stale mix."""
    torch.manual_seed(3)
    lin = nn.Linear(64, 5)
    q = pyquant.nn.QuantLinear.from_linear(lin, config)
    fresh = pyquant.nn.QuantLinear.from_linear(lin, config)
    x = torch.randn(4, 64)
    with torch.no_grad():
        q(x)  # bound
        q.w_scale.mul_(2)
        fresh.load_state_dict(q.state_dict())  # the same buffers, loaded
        torch.testing.assert_close(q(x), fresh(x), rtol=0, atol=0)
        y0 = q(x)
        q.bias.add_(1)
        torch.testing.assert_close(q(x), y0 + 1, rtol=1e-6, atol=1e-5)


def test_reference_paths_take_nonfinite_and_empty_rows():
    """The pure-PyTorch reference: LUT2's mse estimator on NaN / inf / denormal-range rows
    (it once cast NaN bin positions to int64) matches the native one; SPARQ on an empty batch."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    x = torch.randn(5, 8)
    x[0, 0] = float("nan")
    x[1, 3] = float("inf")
    x[2] = torch.arange(8.0) * 1e-39  # a denormal range: 512 / span is inf
    x[3] = float("nan")
    for mode in ("mse", "minmax"):
        config = pyquant.LUT2Config(a_scale=mode)
        native = pyquant.nn.QuantLinear.from_linear(lin, config)
        with _backend.use_reference():
            ref = pyquant.nn.QuantLinear.from_linear(lin, config)
        with torch.no_grad():
            torch.testing.assert_close(ref(x), native(x), rtol=1e-6, atol=1e-6, equal_nan=True)
            assert torch.isfinite(native(x)[[0, 2, 4]]).all()  # a NaN value is skipped
    with _backend.use_reference():
        r = pyquant.nn.QuantLinear.from_linear(nn.Linear(10, 4), pyquant.SparqConfig())
    with torch.no_grad():
        assert r(torch.randn(0, 10)).shape == (0, 4)


@pytest.mark.parametrize("config", [pyquant.WeightOnlyConfig(4, 32), pyquant.Int8Config(),
                                    pyquant.LUT2Config(), pyquant.SparqConfig()],
                         ids=lambda c: type(c).__name__)
def test_state_dict_nonfinite_values_refused(config):
    """A scale, offset, level sum or bias of NaN / inf in a loaded state dict is a ValueError
    naming the key (it made every output it touched NaN / inf), the module left unchanged."""
    torch.manual_seed(0)
    q = pyquant.nn.QuantLinear.from_linear(nn.Linear(40, 6), config)
    x = torch.randn(2, 40)
    with torch.no_grad():
        y = q(x)
    floats = [k for k, v in q.state_dict().items() if v.is_floating_point() and k != "act_range"]
    assert "bias" in floats and "w_scale" in floats
    for key in floats:
        for bad in (float("nan"), float("inf")):
            sd = q.state_dict()
            sd[key] = sd[key].clone()
            sd[key].view(-1)[0] = bad
            with pytest.raises(ValueError, match=f"{key}: expected finite"):
                q.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(q(x), y, rtol=0, atol=0)


def test_quantlinear_constructor_checks_shapes():
    """The direct constructor: a weight or bias that does not match the stated features is a
    ValueError (out_features was silently taken from the weight)."""
    w = torch.randn(5, 8)
    with pytest.raises(ValueError, match=r"weight: expected shape \[7, 8\]"):
        pyquant.nn.QuantLinear(8, 7, w, None, pyquant.Int8Config())
    with pytest.raises(ValueError, match=r"bias: expected shape \[5\]"):
        pyquant.nn.QuantLinear(8, 5, w, torch.zeros(4), pyquant.Int8Config())
    q = pyquant.nn.QuantLinear(8, 5, w, torch.zeros(5), pyquant.Int8Config())
    assert (q.in_features, q.out_features) == (8, 5)


# ----------------------------------------------------------------------------- a new user's review (2026-12-03)
def test_gptq_shares_quantize_conversion():
    """gptq_ swaps a bare layer (returned, like quantize_), turns the encoder fast path off where
    it would read a quantized layer's float weight, and refuses non-finite calibration data."""
    torch.manual_seed(8)
    config = pyquant.WeightOnlyConfig(4, 32)
    lone = pyquant.nn.gptq_(nn.Linear(64, 16), config, [torch.randn(8, 64)])
    assert isinstance(lone, pyquant.nn.QuantLinear)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 1,
                                enable_nested_tensor=False).eval()
    x = torch.randn(2, 5, 64)
    gq = pyquant.nn.gptq_(copy.deepcopy(enc), config, [x])
    with torch.no_grad():
        assert _sqnr(gq(x), enc(x)) > 10
    bad = torch.randn(4, 64)
    bad[0, 0] = float("nan")
    model = nn.Sequential(nn.Linear(64, 16))
    with pytest.raises(ValueError, match="gptq_: module '0' saw non-finite"):
        pyquant.nn.gptq_(model, config, [bad])
    assert isinstance(model[0], nn.Linear)  # nothing converted


def test_calibration_batches_may_be_keyword_mappings():
    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 4)

        def forward(self, input_ids=None, scale=1.0):
            return self.lin(input_ids * scale)

    torch.manual_seed(9)
    model = pyquant.quantize_(Kw(), pyquant.Int8Config())
    pyquant.calibrate(model, [{"input_ids": torch.randn(3, 8), "scale": 2.0}])
    assert torch.isfinite(model.lin.act_range).all()
    g = pyquant.nn.gptq_(Kw(), pyquant.WeightOnlyConfig(4, 32), [{"input_ids": torch.randn(3, 8)}])
    assert isinstance(g.lin, pyquant.nn.QuantLinear)
    # the hooked layer itself called with its input by keyword (GPTQ reads it there too)
    lone = pyquant.nn.gptq_(nn.Linear(8, 4), pyquant.WeightOnlyConfig(4, 32),
                            [{"input": torch.randn(16, 8)}])
    assert isinstance(lone, pyquant.nn.QuantLinear)
    with pytest.warns(UserWarning, match="gptq_: left float 1 nn.Conv2d/nn.Conv1d"):
        pyquant.nn.gptq_(nn.Sequential(nn.Conv2d(4, 4, 1, groups=2)), pyquant.WeightOnlyConfig(4, 32),
                         [torch.randn(2, 4, 3, 3)])


@pytest.mark.parametrize("layout", ["grouped", "per_group_packs", "reference"])
def test_weight_only_zero_point_term_follows_the_scales(layout, monkeypatch):
    """w_off (in the state dict for older files) is recomputed from packed and w_scale in every
    layout (the grouped kernels' one pack, the per-group packs of a build without them, the
    reference backend's raw codes): an in-place edit of the scales scales signed-input outputs
    too, an edited w_off in a state dict changes nothing, and the recomputed term equals the
    conversion's bit for bit."""
    if layout == "per_group_packs":
        monkeypatch.setattr(_backend, "available", lambda op: op != "lowbit_gemm_grouped")
    if layout == "reference":
        monkeypatch.setattr(_backend, "_reference", True)
    torch.manual_seed(0)
    lin = nn.Linear(100, 8)  # K not a multiple of the groups
    x = torch.randn(3, 100)  # signed rows: the zero-point term matters
    for config in (pyquant.WeightOnlyConfig(4, 32), pyquant.WeightOnlyConfig(2, 64)):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
        assert ("packed_offsets" in q._buffers) == (layout == "per_group_packs")
        w_off = scheme_for(config).quantize_weight(lin.weight.detach())["w_off"]
        assert torch.equal(q.w_off, w_off)
        with torch.no_grad():
            y0 = q(x) - lin.bias
            sd = {k: v.clone() for k, v in q.state_dict().items()}
            q.w_scale.mul_(2)
            torch.testing.assert_close(q(x) - lin.bias, 2 * y0, rtol=1e-5, atol=1e-5)
            sd["w_off"].add_(100.0)
            fresh = pyquant.nn.QuantLinear.from_linear(nn.Linear(100, 8), config)
            fresh.load_state_dict(sd)
            assert torch.equal(fresh(x), q.__class__.from_linear(lin, config)(x))
            assert "w_off" in fresh.state_dict()


@pytest.mark.parametrize("layout", ["kernels", "reference"])
@pytest.mark.parametrize("config", [pyquant.Int8Config(), pyquant.LUT2Config(),
                                    pyquant.LUT2Config(w_levels=(-2, -1, 0, 1))],
                         ids=["int8", "lut2", "lut2-signed"])
def test_code_sums_follow_the_packed_weight(config, layout, monkeypatch):
    """Int8/LUT2's w_sum (sum of each row's codes / w_levels[code]; in the state dict, older
    files carry it) is read back from packed at every refresh, as WeightOnly's w_off: equal to
    the conversion's bit for bit, and an edited one (loaded, or edited in place) changes nothing
    (it loaded and shifted every output)."""
    if layout == "reference":
        monkeypatch.setattr(_backend, "_reference", True)
    torch.manual_seed(0)
    lin = nn.Linear(100, 8)
    x = torch.randn(3, 100) + 1.0
    q = pyquant.nn.QuantLinear.from_linear(lin, config)
    assert torch.equal(q.w_sum, scheme_for(config).quantize_weight(lin.weight.detach())["w_sum"])
    with torch.no_grad():
        y = q(x)
        sd = {k: v.clone() for k, v in q.state_dict().items()}
        sd["w_sum"][0] += 1000.5
        fresh = pyquant.nn.QuantLinear.from_linear(nn.Linear(100, 8), config)
        fresh.load_state_dict(sd)
        assert "w_sum" in fresh.state_dict() and torch.equal(fresh(x), y)
        q.w_sum.add_(7.0)
        assert torch.equal(q(x), y)


def test_layers_without_values_are_clear_errors():
    with pytest.raises(ValueError, match="lazy layer"):
        pyquant.quantize_(nn.Sequential(nn.LazyLinear(4)), pyquant.Int8Config())
    with torch.device("meta"):  # (layers that await a state dict: tests/test_checkpoint.py)
        meta = nn.Sequential(nn.Linear(8, 4), nn.Conv2d(2, 2, 1))
    meta = pyquant.quantize_(meta, pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    with pytest.raises(ValueError, match="not loaded yet"):
        meta[0](torch.ones(1, 8))
    q = pyquant.quantize_(nn.Sequential(nn.Linear(8, 4)), pyquant.Int8Config()).to("meta")
    assert "QuantLinear" in repr(q)


def test_config_type_checks_match():
    with pytest.raises(ValueError, match="act_bits"):
        pyquant.Int8Config(act_bits=8.0)
    for bad in ("no", 0, 1, None):
        with pytest.raises(ValueError, match="pairs"):
            pyquant.SparqConfig(pairs=bad)
    assert pyquant.SparqConfig(pairs=np.bool_(False)).pairs is False


# ----------------------------------------------------------------------------- the weight view
def expected_dequantized(config, w):
    """float64 [N, K]: codes x scales from the scheme's own quantizer, run on the float weight
    (its codes against the independent reference: test_linear_matches_reference); what
    dequantize_weight must read back from the packed buffer."""
    return scheme_for(config).fake_quant_weight(w.float())


WEIGHT_VIEW_CONFIGS = [p.values[0] for p in CONFIGS] + [pyquant.SparqConfig(sparse24=True)]


@pytest.mark.parametrize("config", WEIGHT_VIEW_CONFIGS, ids=lambda c: repr(c)[:40])
@pytest.mark.parametrize("n,k", [(1, 1), (5, 7), (33, 70), (19, 300)])
def test_dequantize_weight_matches_reference(config, backend, n, k):
    """dequantize_weight() reads the codes back through the kernels (whatever panel layout packed
    them) and is exactly codes x scales in float32, for linears and convs (in the float layer's
    layout)."""
    torch.manual_seed(n * 1000 + k)
    lin = nn.Linear(k, n)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    assert torch.equal(q.dequantize_weight(), expected_dequantized(config, lin.weight.detach()).float())
    conv = nn.Conv2d(k, n, (2, 3))
    with _ctx(config, backend):
        qc = pyquant.nn.QuantConv2d.from_conv(conv, config)
    w2d = conv.weight.detach().permute(0, 2, 3, 1).reshape(n, -1)  # QuantConv2d's K order
    expected = expected_dequantized(config, w2d).float().view(n, 2, 3, k).permute(0, 3, 1, 2)
    assert torch.equal(qc.dequantize_weight(), expected)


@pytest.mark.parametrize("config", ONE_PER_FAMILY, ids=["int8", "w4g32", "lut2", "sparq"])
def test_weight_view_metadata_and_values(config, backend):
    """``weight`` answers shape/dtype/device like the float layer's (no float copy kept); any use
    of its values runs on dequantize_weight(); it is not state."""
    torch.manual_seed(4)
    lin, conv = nn.Linear(40, 12), nn.Conv2d(6, 10, 3)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
        qc = pyquant.nn.QuantConv2d.from_conv(conv, config)
    for m, f in ((q, lin), (qc, conv)):
        w = m.weight
        assert isinstance(w, torch.Tensor) and isinstance(w, pyquant.nn.QuantizedWeight)
        assert (w.shape, w.dtype, w.device, w.requires_grad) == (f.weight.shape, torch.float32,
                                                                 torch.device("cpu"), False)
        deq = m.dequantize_weight()
        with pytest.warns(UserWarning, match=r"weight .* were read: a read dequantizes it"):
            assert type(w.detach()) is torch.Tensor and torch.equal(w.detach(), deq)
        assert torch.equal(w + 0, deq) and torch.equal(w.sum(), deq.sum()) and w.tolist() == deq.tolist()
        assert np.array_equal(np.asarray(w), deq.numpy()) and torch.equal(w[1], deq[1])
        assert torch.equal(f.weight.detach() - w, f.weight.detach() - deq)
        assert "QuantizedWeight(shape=" in repr(w) and type(m).__name__ in repr(w)
        buf = io.BytesIO()
        torch.save(w, buf)  # saved as the plain values
        buf.seek(0)
        assert torch.equal(torch.load(buf, weights_only=True), deq)
        assert "weight" not in m.state_dict() and not list(m.parameters())
        with pytest.raises(AttributeError, match="weight cannot be assigned: the layer holds its own"):
            m.weight = nn.Parameter(f.weight.detach().clone())  # (as tie_weights would)
        writes = (lambda: w.mul_(2), lambda: w.data.normal_(), lambda: nn.init.zeros_(w),
                  lambda: torch.add(deq, 1, out=w), lambda: w.__setitem__(0, 1.0),
                  lambda: w.__setitem__(slice(None), deq), lambda: setattr(w, "data", deq),
                  lambda: torch._foreach_mul_([w], 2.0))
        for write in writes:  # writes could not reach the codes
            with pytest.raises(RuntimeError, match="weight cannot be written"):
                write()
        assert torch.equal(m.dequantize_weight(), deq)
        assert type(copy.deepcopy(w)) is torch.Tensor and torch.equal(copy.deepcopy(w), deq)
        m._weight_values_read = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # shape-and-dtype ops neither dequantize nor warn
            z, e = torch.zeros_like(w), w.new_zeros(3)
        assert type(z) is torch.Tensor and z.shape == w.shape and not z.any() and e.shape == (3,)
    # the dtype follows the float layer's and the module's dtype moves
    with _ctx(config, backend):
        qh = pyquant.nn.QuantLinear.from_linear(copy.deepcopy(lin).to(torch.bfloat16), config)
    assert qh.weight.dtype == torch.bfloat16
    assert q.half().weight.dtype == torch.float16 and q.double().weight.dtype == torch.float64
    assert q.float().weight.dtype == torch.float32
    with pytest.warns(UserWarning, match="were read"):  # (at the caller's line: this one)
        assert torch.equal(q.to(torch.bfloat16).weight.float(), q.dequantize_weight().bfloat16().float())


def test_weight_values_read_in_every_forward_are_kept():
    """Model code that uses a layer's weight values in its forward (MobileBERT's LM head,
    Mamba's dt_proj): the first read dequantizes and keeps nothing, later reads reuse one float32
    copy (one K x K x N dequantization in all, not one per call), made again after the buffers
    change; a view of a read is a copy (a write into it reaches no later read); pickling leaves
    it out."""
    torch.manual_seed(5)
    q = pyquant.nn.QuantLinear.from_linear(nn.Linear(64, 10), pyquant.WeightOnlyConfig(4, 32))
    calls = []
    real = q.dequantize_weight
    q.dequantize_weight = lambda: calls.append(1) or real()
    deq = real()
    with pytest.warns(UserWarning, match="from the second read on the values are kept"):
        assert torch.equal(q.weight + 0, deq)
    assert "_weight_values" not in q.__dict__
    for _ in range(5):
        assert torch.equal(q.weight * 1, deq)
    assert len(calls) == 2  # the first read, then the kept copy's
    q.weight.t()[0].zero_()  # a write into a view of a read (a copy) reaches no later read
    q.weight[1].zero_()
    assert torch.equal(q.weight + 0, deq) and len(calls) == 2
    q.w_scale.mul_(2)  # the buffers changed: their new values
    assert torch.equal(q.weight + 0, real()) and not torch.equal(real(), deq) and len(calls) == 3
    deq = real()
    assert torch.equal(q.weight * 1, deq) and len(calls) == 3
    q.weight.numpy()[:] = 0  # what a read hands out is the caller's own
    copy.deepcopy(q.weight).zero_()
    np.asarray(q.weight)[:] = 0
    assert torch.equal(q.weight + 0, deq) and len(calls) == 3
    del q.dequantize_weight
    assert "_weight_values" not in copy.deepcopy(q).__dict__
    assert "_weight_values" not in pickle_roundtrip(q).__dict__
    # a grouped conv's buffers are its convs': an edit there is a new weight too
    g = pyquant.nn.QuantGroupedConv2d.from_conv(nn.Conv2d(128, 128, 3, groups=2),
                                                pyquant.Int8Config())
    with pytest.warns(UserWarning, match="were read"):
        g.weight.sum()
    before = g.weight + 0
    g.convs[0].w_scale.mul_(2)
    assert torch.equal(g.weight + 0, g.dequantize_weight()) and not torch.equal(before, g.weight + 0)


def pickle_roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


class _ReadsWeightDtype(nn.Module):
    """transformers' T5 feed-forward and ViT embedding read a layer's ``weight.dtype`` in every
    forward to cast their activations (modeling_t5.py T5DenseActDense, modeling_vit.py)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, stride=4)
        self.wi, self.wo = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, pixels):
        h = self.patch(pixels.to(self.patch.weight.dtype)).flatten(2).transpose(1, 2)
        h = torch.relu(self.wi(h))
        if isinstance(self.wo.weight, torch.Tensor) and h.dtype != self.wo.weight.dtype \
                and self.wo.weight.dtype != torch.int8:
            h = h.to(self.wo.weight.dtype)
        return self.wo(h)


@pytest.mark.parametrize("config", ONE_PER_FAMILY, ids=["int8", "w4g32", "lut2", "sparq"])
def test_models_that_read_weight_dtype(config):
    torch.manual_seed(7)
    net = _ReadsWeightDtype().eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        y = net(x)
        q = pyquant.quantize_(copy.deepcopy(net), config, filter_fn=pyquant.nn.every_layer_filter)
        assert isinstance(q.wo, pyquant.nn.QuantLinear) and isinstance(q.patch, pyquant.nn.QuantConv2d)
        assert _sqnr(q(x), y) > {pyquant.LUT2Config: 0.0}.get(type(config), 15.0)
        yh = q.to(torch.bfloat16)(x)  # the bf16 model casts its pixels to bf16, as a float one
        assert yh.dtype == torch.bfloat16
        torch._dynamo.reset()  # compiled: a graph break at each read, same result
        assert torch.equal(torch.compile(q.float(), backend="aot_eager")(x), q(x))


# ----------------------------------------------------------------------------- MoE experts
class _Experts(nn.Module):
    """transformers' MoE experts contract (``@use_experts_implementation``), without transformers:
    3-D expert weights, ``_apply_gate`` and ``act_fn`` of the block's own."""

    def __init__(self, e=5, h=24, i=16, transposed=False, bias=False, gate=True, post_norm=False):
        super().__init__()
        self.num_experts, self.has_gate, self.has_bias, self.is_transposed = e, gate, bias, transposed
        self.has_post_expert_norm = post_norm
        up = "gate_up_proj" if gate else "up_proj"
        gu, dn = torch.randn(e, (2 if gate else 1) * i, h) * 0.3, torch.randn(e, h, i) * 0.3
        setattr(self, up, nn.Parameter(gu.transpose(1, 2).contiguous() if transposed else gu))
        self.down_proj = nn.Parameter(dn.transpose(1, 2).contiguous() if transposed else dn)
        if bias:
            setattr(self, up + "_bias", nn.Parameter(torch.randn(e, gu.shape[1])))
            self.down_proj_bias = nn.Parameter(torch.randn(e, h))
        self.act_fn = nn.SiLU()
        if post_norm:
            self.post_expert_norm = nn.LayerNorm(h)

    def _apply_gate(self, gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        return self.act_fn(gate) * up

    def _reference(self, hidden, top_k_index, top_k_weights):  # the float block, token by token
        up_name = "gate_up_proj" if self.has_gate else "up_proj"
        out = torch.zeros_like(hidden)
        for t in range(hidden.shape[0]):
            for j, e in enumerate(top_k_index[t].tolist()):
                gu, dn = getattr(self, up_name)[e], self.down_proj[e]
                if self.is_transposed:
                    gu, dn = gu.T, dn.T
                h = F.linear(hidden[t], gu, getattr(self, up_name + "_bias")[e] if self.has_bias else None)
                h = self._apply_gate(h) if self.has_gate else self.act_fn(h)
                h = F.linear(h, dn, self.down_proj_bias[e] if self.has_bias else None)
                out[t] += top_k_weights[t, j] * (self.post_expert_norm(h) if self.has_post_expert_norm else h)
        return out

    @functools.wraps(_reference)  # as transformers' decorator: a wrapper with __wrapped__
    def forward(self, *args, **kwargs):
        return self._reference(*args, **kwargs)


class _OwnForwardExperts(_Experts):
    """A subclass with a forward of its own around the block's (as transformers' Ergo adds a
    per-expert norm): QuantExperts would drop that work, so quantize_ leaves it float."""

    def forward(self, hidden, top_k_index, top_k_weights):
        return 2 * super().forward(hidden, top_k_index, top_k_weights)


@pytest.mark.parametrize("tokens", [7, 1], ids=["prefill", "decode"])
@pytest.mark.parametrize("transposed,bias,gate,post_norm", [
    (False, False, True, False), (True, True, True, False), (False, True, False, True)],
    ids=["plain", "transposed-bias", "no-gate-post-norm"])
def test_quant_experts_routes_like_the_block(transposed, bias, gate, post_norm, tokens):
    """Each token's output is the routing-weighted sum of its experts' quantized projections (the
    per-expert QuantLinears applied one token at a time, independently of the block's grouping),
    and close to the float block; experts no token chose, and expert-parallel sentinels (index
    num_experts, weight 0), are skipped."""
    torch.manual_seed(8)
    block = _Experts(transposed=transposed, bias=bias, gate=gate, post_norm=post_norm)
    hidden = torch.randn(7, 24)[:tokens]
    top_k_index = torch.tensor([[0, 3, 5], [3, 1, 5], [1, 0, 5], [0, 3, 5], [3, 3, 5], [1, 0, 5],
                                [0, 1, 5]])[:tokens]  # experts 2 and 4 unused; 5: a sentinel
    top_k_weights = (torch.rand(7, 3) * torch.tensor([1.0, 1.0, 0.0]))[:tokens]
    with torch.no_grad():
        ref = block(hidden, top_k_index[:, :2], top_k_weights[:, :2])
        q = pyquant.quantize_(nn.Sequential(copy.deepcopy(block)), pyquant.Int8Config())[0]
        assert isinstance(q, pyquant.nn.QuantExperts) and len(q.up) == len(q.down) == 5
        assert not [n for n, _ in q.named_parameters() if "post_expert_norm" not in n]  # no float expert
        pyquant.nn.QuantExperts(block, pyquant.Int8Config()).to(torch.bfloat16)
        assert torch.equal(block(hidden, top_k_index[:, :2], top_k_weights[:, :2]), ref)  # left whole
        y = q(hidden, top_k_index, top_k_weights)
        def expert(e, x):
            h = q.up[e](x)
            h = q.down[e](block._apply_gate(h) if gate else block.act_fn(h))
            return block.post_expert_norm(h) if post_norm else h

        expected = torch.stack([sum(top_k_weights[t, j] * expert(e, hidden[t:t + 1])[0]
                                    for j, e in enumerate(top_k_index[t, :2].tolist()))
                                for t in range(tokens)])
        assert torch.allclose(y, expected, rtol=1e-5, atol=1e-5)
        assert _sqnr(y, ref) > 30.0
        # the dequantized expert weights are the float ones, transposed back where stored so
        w = (block.gate_up_proj if gate else block.up_proj)[3]
        assert _sqnr(q.up[3].dequantize_weight(), w.T if transposed else w) > 35.0


def test_experts_with_a_forward_of_their_own_stay_float():
    torch.manual_seed(9)
    net = nn.Sequential(_OwnForwardExperts(), nn.Linear(4, 4))
    with pytest.warns(UserWarning, match=r"left float 1 MoE experts block\(s\) of a layout"):
        pyquant.quantize_(net, pyquant.Int8Config())
    assert type(net[0]) is _OwnForwardExperts and isinstance(net[1], pyquant.nn.QuantLinear)
