"""Schemes: how each config quantizes weights and activations and runs the integer GEMM.

A scheme is stateless apart from its config. ``quantize_weight`` turns a float ``[N, K]`` weight
into named buffers (packed kernel buffer(s) + float scales, what a state_dict holds);
``derived`` computes, once at conversion (and again after ``load_state_dict``), the constants the
fused forward needs (scale x column-sum products, panel-layout scales); ``bind`` returns the whole
forward as ONE native call (float32 in, float32 out, bias included: activation quantization,
integer GEMM and the shared epilogue of csrc/forward/epilogue.h) with the module's buffers
already converted to arrays, so a call costs one array conversion each way; ``op`` is the same
call as a ``torch.library`` custom op with explicit tensors and scalars (compile/export).

``forward`` is the pure-PyTorch path of ``use_reference()`` modules (same quantizer definitions
as the native code, float64 integer GEMMs). ``fake_quant_weight`` / ``fake_quant_act`` are the
dequantized values the older tests multiply in float64.

Static activation ranges (after ``pyquant.calibrate``) arrive as ``act_range = (lo, hi)``;
NaN means dynamic per-row ranges (the default).
"""
from __future__ import annotations

import contextlib
import math
import threading
import weakref

import numpy as np
import torch

import pyquant
from pyquant import _C
from pyquant._threads import get_num_threads
from pyquant.packed import _HEADER

from . import _backend
from .configs import Int8Config, LUT2Config, SparqConfig, WeightOnlyConfig

_SCHEMES: dict[type, type] = {}


def scheme_for(config):
    cls = _SCHEMES.get(type(config))
    if cls is None:
        raise TypeError(f"config: no scheme for {type(config).__name__}")
    return cls(config)


def config_for_op(op: str) -> str:
    """The config whose modules hold weights packed for ``op`` (for error messages)."""
    if op == "sparq24_gemm":
        return "SparqConfig(sparse24=True)"
    found = [c.__name__ for c, s in _SCHEMES.items() if op in s.ops]
    return " / ".join(found) or "no config"


def _register(config_type):
    def deco(cls):
        _SCHEMES[config_type] = cls
        return cls
    return deco


def _static(act_range):
    return act_range is not None and not bool(torch.isnan(act_range).any())


def range_overflows(lo, hi):
    """Where finite lo <= hi are wider apart than float32 holds (csrc/quantize/row_quantize.h
    range_overflows): the native quantizers take the width in double there, and a static range
    (calibration, a loaded act_range) is refused."""
    return torch.isinf(hi - lo) & torch.isfinite(lo) & torch.isfinite(hi)


def _row_range(x, act_range):
    """(lo [M|1, 1], hi [M|1, 1]) with 0 inside the range."""
    if _static(act_range):
        lo, hi = act_range[0].view(1, 1), act_range[1].view(1, 1)
    else:
        lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    return lo.clamp(max=0), hi.clamp(min=0)


_scratch_local = threading.local()


def scratch(shape, dtype):
    """A per-thread reusable buffer (contents undefined). Fresh multi-MB temporaries cost page
    faults on every call; the activation-quantization temporaries are reused instead. Only for
    values consumed before the next forward call on this thread."""
    pool = _scratch_local.__dict__.setdefault("pool", {})
    numel = math.prod(shape)
    buf = pool.get(dtype)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable inside and outside inference mode
            buf = pool[dtype] = torch.empty(max(numel, 1 << 16), dtype=dtype)
    return buf[:numel].view(shape)


def asym_u8(x, act_range=None, reuse=False, qmax=255):
    """Per-row (or static) asymmetric uint8 codes 0..qmax: x ~= sa * (q - zp). Returns q uint8,
    sa, zp (float). ``reuse=True`` writes q into the per-thread scratch buffer (the module's
    forward path)."""
    lo, hi = _row_range(x, act_range)
    sa = (hi - lo) / float(qmax)
    sa = torch.where(range_overflows(lo, hi), ((hi.double() - lo.double()) / qmax).float(), sa)
    sa = torch.where(sa > 0, sa, torch.ones_like(sa))
    zp = torch.round(-lo / sa).clamp_(0, qmax)
    # q = trunc(clamp(x * (1/sa) + (zp + 0.5), 0, qmax + 0.25)): round half up, as the native
    # quantizer (csrc/quantize/row_quantize.h), a separate multiply and add
    t = torch.mul(x, 1.0 / sa, out=scratch(x.shape, torch.float32) if reuse else None)
    t.add_(zp + 0.5).clamp_(0, qmax + 0.25)
    q = scratch(x.shape, torch.uint8) if reuse else torch.empty(x.shape, dtype=torch.uint8)
    return q.copy_(t), sa, zp


def int8_weight(w):
    """Symmetric per-output-channel int8: w ~= sw[n] * wq[n, k], wq in [-127, 127]:
    sw = max(max |w[n]|, 1e-12) / 127, wq = round(w / sw) (one native pass; float32)."""
    wq, sw = _C.quantize_rows_int8(w.detach().float().contiguous().numpy(), get_num_threads())
    return torch.from_numpy(wq), torch.from_numpy(sw)


def float_inplace(acc):
    """int32 accumulator -> float32 in the same memory. Large fresh allocations cost page faults
    (several ms per layer on MiniLM), so the kernel's output buffer is reused as the result."""
    if acc.dtype == torch.float32:
        return acc
    y = acc.view(torch.float32)
    return y.copy_(acc)


def indicator_sums(op: str, packed, n: int, bounds, reference: bool, **kw) -> torch.Tensor:
    """[N, len(bounds)] int32: each weight row's sum of code values over each k range (lo, hi)
    of ``bounds``, read back from the packed weight by the kernels themselves: an exact integer
    GEMM of indicator rows (code 1 inside the range, 0 outside; ``kw``: the op's parameters).
    Reference modules hold the raw codes [N, K]."""
    if reference:
        k = packed.numel() // n if n else 0
    else:
        k = _backend.packed_shape(packed, op, **kw)[1]
    rows = torch.zeros((len(bounds), k), dtype=torch.uint8)
    for g, (lo, hi) in enumerate(bounds):
        rows[g, lo:hi] = 1
    return _backend.gemm(op, rows, packed, n, k, reference, **kw).t()


def probe_codes(op: str, packed, n: int, reference: bool, chunk: int = 256, **kw) -> torch.Tensor:
    """[N, K] int32: every weight code value, read back from the packed weight by the kernels
    themselves (indicator rows with a single 1, ``chunk`` rows per GEMM), whatever layout the
    kernel that packed it chose. Costs one K x K x N GEMM: for inspecting a weight, not per call."""
    k = packed.numel() // n if reference and n else _backend.packed_shape(packed, op, **kw)[1]
    parts = [indicator_sums(op, packed, n, [(j, j + 1) for j in range(lo, min(lo + chunk, k))],
                            reference, **kw) for lo in range(0, k, chunk)]
    return torch.cat(parts, 1) if parts else torch.zeros((n, 0), dtype=torch.int32)


def codes_memo(b, memo: dict, key: str, compute):
    """``compute()``, kept in ``memo[key]`` across refreshes (calibrate, moves) while the packed
    tensors (packed, packed_offsets) are the same unedited objects: sums of the codes change
    only with the codes."""
    codes = [t for t in (b["packed"], b.get("packed_offsets")) if t is not None]
    seen = memo.get(key + "_of", ())
    if len(seen) != len(codes) or any(ref() is not t or v != t._version
                                       for (ref, v), t in zip(seen, codes)):
        memo[key] = compute()
        memo[key + "_of"] = tuple((weakref.ref(t), t._version) for t in codes)
    return memo[key]


_EMPTY = threading.local()  # .states: {key: state} while a conversion runs


@contextlib.contextmanager
def empty_weight_cache():
    """Within the block (a quantize_ call), empty_weight makes each shape's state once."""
    outer = getattr(_EMPTY, "states", None)
    _EMPTY.states = {} if outer is None else outer
    try:
        yield
    finally:
        _EMPTY.states = outer


def _empty_state(scheme, n: int, k: int) -> dict:
    key = (type(scheme), scheme.config, n, k, _backend.is_reference())
    states = getattr(_EMPTY, "states", None)
    if states is not None and key in states:
        return states[key]
    state = scheme.state(*scheme.empty_codes(n, k))
    if states is not None:
        if len(states) >= 8:  # (a decoder block's few shapes, in turn)
            states.pop(next(iter(states)))
        states[key] = state
    return state


class Scheme:
    ops: tuple = ()
    config = None

    def __init__(self, config):
        self.config = config

    def require(self):
        for op in self.ops:
            _backend.require(op)

    @property
    def packed_op(self) -> str:
        """The op the module's ``packed`` buffer is packed for."""
        return self.ops[0]

    def observe(self, x):
        """Calibration statistics for one batch: (min, max) over the whole tensor."""
        return x.min(), x.max()

    def derived(self, b) -> dict:
        """Constants of the fused forward, from the persistent buffers (non-persistent buffers)."""
        return {}

    def empty_weight(self, n: int, k: int) -> dict:
        """The persistent buffers of an [N, K] layer whose weights will be loaded (a model built
        on the meta device): every shape, dtype and packed header right, made without the weight
        searches (``quantize_weight`` on a real weight): from zero codes and unit scales, once
        per shape within a conversion (a decoder's blocks repeat a few shapes; packing is ~5 ns
        a weight), then copied, a packed weight as its header over zero bytes the OS maps on
        first write (calloc), so a layer whose buffers the state dict replaces (``assign=True``)
        never holds the memory. (Zero bytes are a valid payload of every op, whatever codes they
        decode to; the layer refuses to run or be saved until it is loaded.)"""
        with torch.device("cpu"):  # (also inside a `with torch.device("meta"):` block)
            state = _empty_state(self, n, k)
        out = {name: t.clone() for name, t in state.items() if name != "packed"}
        packed = state["packed"]
        if "packed_offsets" in state or packed.dtype != torch.uint8:  # (several headers, raw codes)
            return {**out, "packed": packed.clone()}
        lazy = torch.from_numpy(np.zeros(packed.numel(), dtype=np.uint8))
        lazy[:_HEADER.itemsize] = packed[:_HEADER.itemsize]
        return {**out, "packed": lazy}

    def recomputed(self, b, reference: bool, memo: dict) -> dict:
        """State-dict entries that follow from the others, recomputed at every refresh (both
        backends) so a loaded file or an in-place edit cannot leave them stale; ``memo`` is the
        module's cache across refreshes."""
        return {}

    def dequantize_weight(self, b, reference: bool) -> torch.Tensor:
        """float32 [N, K]: the weight the integer GEMM multiplies by (codes x scales)."""
        n = b["w_scale"].shape[0]
        codes = probe_codes(self.packed_op, b["packed"], n, reference, **self.probe_kwargs())
        return codes.float() * b["w_scale"].float()[:, None]

    def probe_kwargs(self) -> dict:
        """The packed op's parameters for ``probe_codes``."""
        return {}

    reads: tuple = ("packed", "w_scale")
    code_max: int = 128  # the largest |weight code| the packed format holds (int8)

    def read_buffers(self, b) -> tuple:
        """Names of the buffers one forward reads (besides bias and act_range): what a decode
        step streams from memory, as opposed to what the module holds."""
        return tuple(n for n in self.reads if n in b)

    def bind(self, b, act_range, bias):
        """The fused forward bound to these buffers: ``run(x: float32 ndarray [M, K], threads)
        -> float32 ndarray [M, N]``, one native call, or None where this layout has none. With
        ``conv=(kh, kw, sh, sw, ph, pw, dh, dw, nchw)`` x is a conv's input, [B, C, H, W] and
        the output [B, N, Ho, Wo] if nchw, else [B, H, W, C] and [B, Ho, Wo, N] (QuantConv2d). The
        arrays share memory with the tensors, so in-place updates (``calibrate``,
        ``load_state_dict``) reach it; the native side still validates every header per call."""
        return None

    def op(self, x, b, act_range, bias, conv=None):
        """``native`` as a torch.library op (traceable by torch.compile / torch.export); ``conv``
        as in ``bind``."""
        return None

    def has_op(self, b) -> bool:
        """Whether ``op`` exists for this layout (else it returns None)."""
        return False

    def grouped_args(self, b, act_range, bias):
        """This layer's arguments to the family's grouped forward (``run_grouped``: several
        layers of one shape in one native call, e.g. a mixture of experts' experts), or None
        where the family has none."""
        return None

    def run_recurrent(self, xp, batch_sizes, reverse: bool, mode: str, h0, c0, hh, hr,
                      threads: int):
        """A recurrent layer's time loop in one native call (QuantRNN; csrc/forward/recurrent.h):
        xp float32 [R, gates] (every step's input projection), batch_sizes int64 [T], h0
        [B, out], c0 [B, H] or None, hh / hr the state and projection layers' ``grouped_args``
        (hr None without a projection). Returns (y [R, out], h_n, c_n or None); None where the
        family has no native loop."""
        return None

    def recurrent_op(self, xp, batch_sizes, reverse: bool, mode: str, h0, c0, hh, hr):
        """run_recurrent as this family's torch.library op (traced QuantRNN layers; hh / hr the
        layers themselves, hr None), or None where the layout has none (WeightOnly with
        per-group packs: the traced per-step loop runs)."""
        return None

    def run_conv_groups(self, x, weights: list, threads: int, conv):
        """A grouped conv in one native call (QuantGroupedConv2d; csrc/forward/conv.h): x the
        image as ``bind``'s conv call takes it, weights the groups' ``grouped_args`` in channel
        order, conv the geometry tuple. Returns the output as ``bind``'s conv call does; None
        where the family has no such call."""
        return None

    def run_grouped(self, x, weights: list, groups, threads: int):
        """x float32 ndarray [R, K]; weights: ``grouped_args`` of layers of this config and one
        shape; groups int64 [G, 3] of (index into weights, first row of x, rows). Returns
        float32 [sum of rows, N]: each group's rows through its layer, in group order, exactly
        as that layer's own forward gives them."""
        raise NotImplementedError


def _np(t):
    return None if t is None else t.numpy()


def _op_weight(layer, *names) -> list:
    """A recurrent op's weight argument: the layer's buffers ``names`` and its act_range, or []
    for no layer (no projection)."""
    return [] if layer is None else [layer._buffers[n] for n in names] + [layer.act_range]


# ----------------------------------------------------------------------------- Int8
@_register(Int8Config)
class Int8Scheme(Scheme):
    ops = ("int8_gemm",)
    reads = ("packed", "w_scale", "w_off")

    def quantize_weight(self, w):
        return self.state(*int8_weight(w))

    def empty_codes(self, n, k):
        return torch.zeros((n, k), dtype=torch.int8), torch.ones(n, dtype=torch.float32)

    def state(self, wq, sw):
        wsum = wq.sum(1, dtype=torch.int32).float()
        return {"packed": _backend.prepack("int8_gemm", wq), "w_scale": sw,
                "w_sum": wsum}

    def int_acc(self, q, zp, b, n, k, reference):
        """Exact int32 accumulator sum_k (q - zp) * wq, zero point removed in integers."""
        acc = _backend.gemm("int8_gemm", q, b["packed"], n, k, reference)
        return acc.sub_(torch.outer(zp.view(-1).to(torch.int32), b["w_sum"].to(torch.int32)))

    @property
    def qmax(self):
        return (1 << self.config.act_bits) - 1

    def forward(self, x, b, act_range, n, k, reference):
        q, sa, zp = asym_u8(x, act_range, reuse=True, qmax=self.qmax)
        acc = _backend.gemm("int8_gemm", q, b["packed"], n, k, reference)
        # the shared epilogue: (acc * sa) * sw - (sa * zp) * (sw * wsum)
        y = float_inplace(acc).mul_(sa).mul_(b["w_scale"])
        y.sub_((sa * zp).view(-1, 1) * (b["w_scale"] * b["w_sum"]))
        return y

    def recomputed(self, b, reference, memo):
        # w_sum stays in the state dict (older files carry it) but follows from the codes: read
        # back from ``packed`` at every refresh, so a loaded or edited one cannot disagree
        n = b["w_scale"].shape[0]
        sums = codes_memo(b, memo, "w_sum", lambda: indicator_sums(
            "int8_gemm", b["packed"], n, [(0, 1 << 62)], reference).view(-1))
        return {"w_sum": sums.float()}

    def derived(self, b):
        return {"w_off": b["w_scale"] * b["w_sum"]}

    def bind(self, b, act_range, bias):
        f, bits = _C.forward_int8, self.config.act_bits
        p, s, o, bi, r = self.grouped_args(b, act_range, bias)
        return lambda x, threads, conv=None: f(x, p, s, o, bi, r, threads, bits, conv)

    def grouped_args(self, b, act_range, bias):
        return tuple(_np(t) for t in (b["packed"], b["w_scale"], b["w_off"], bias, act_range))

    def run_grouped(self, x, weights, groups, threads):
        return _C.forward_int8_grouped(x, weights, groups, threads, self.config.act_bits)

    def run_conv_groups(self, x, weights, threads, conv):
        return _C.forward_int8_conv_groups(x, weights, threads, self.config.act_bits, conv)

    def run_recurrent(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr, threads):
        return _C.recurrent_forward_int8(xp, batch_sizes, reverse, mode, h0, c0, hh, hr,
                                         self.config.act_bits, threads)

    def recurrent_op(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr):
        def weight(layer):
            return _op_weight(layer, "packed", "w_scale", "w_off")
        return torch.ops.pyquant.int8_recurrent(xp, batch_sizes, reverse, mode, h0, c0,
                                                weight(hh), hh.bias, weight(hr),
                                                self.config.act_bits)

    def has_op(self, b) -> bool:
        return True

    def op(self, x, b, act_range, bias, conv=None):
        return torch.ops.pyquant.int8_linear(x, b["packed"], b["w_scale"], b["w_off"], bias, act_range,
                                             self.config.act_bits, conv)

    def fake_quant_weight(self, w):
        wq, sw = int8_weight(w)
        return wq.double() * sw.double()[:, None]

    def fake_quant_act(self, x, act_range=None):
        q, sa, zp = asym_u8(x, act_range, qmax=self.qmax)
        return (q.double() - zp.double()) * sa.double()


# ----------------------------------------------------------------------------- WeightOnly
def best_clip(ratios, candidate):
    """MSE clipping search: ``candidate(r) -> (scale, squared error)`` per slice; keeps, slice by
    slice, the scale with the smallest error (the first one on ties)."""
    best_s, best_err = candidate(ratios[0])
    for r in ratios[1:]:
        s, err = candidate(r)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
    return best_s


def group_bounds(k, gs):
    return [(lo, min(lo + gs, k)) for lo in range(0, k, gs)]


def bf16_round(s):
    """Scales as stored: rounded to bfloat16 (nearest even), returned as float32. The codes are
    computed with the rounded scale, so the rounding only moves the clipping point slightly; a
    bf16 scale is 0.5 bit per weight at group size 32 where float32 was 1 (the GEMV streams it
    beside the codes)."""
    return s.to(torch.bfloat16).float()


def zero_point_term(scales, sums):
    """WeightOnly's w_off [N] float32: sum_g scale[n, g] * sums[n, g], in float64."""
    return (scales.double() * sums.double()).sum(1).float()


# The WeightOnly search runs on row chunks of at most this many groups (11 candidates each: 44 MB;
# an 8B model's lm_head would need 0.7 GB of candidates at once).
SEARCH_CHUNK_GROUPS = 1 << 20


def clip_ratios(bits):
    """WeightOnly's 11 clipping candidates: the group's max |w| times these, over qmax (quantize_'s
    search and GPTQ's alike)."""
    return torch.linspace(1.0, 0.5 if bits == 4 else 0.3, 11).tolist()


def lowbit_weight(w, bits, gs):
    """Group-wise symmetric codes (int8 in [-2**(b-1), 2**(b-1)-1]) and bf16-exact scales [N, G]
    (float32 holding bfloat16 values), MSE-clipped: 11 candidate scales per group (the group's
    max |w| times 1.0 .. 0.5 (4-bit) or 0.3 (2-bit) over qmax, rounded to bfloat16), searched in
    one native pass per group (csrc/quantize/weight_search.h)."""
    w = w.detach().float().contiguous()
    n, k = w.shape
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    amax = torch.from_numpy(_C.group_absmax(w.numpy(), gs, get_num_threads())).clamp_(min=1e-12)
    ratios = clip_ratios(bits)
    if amax.numel() and not bool(torch.isfinite(bf16_round(amax.max() * ratios[0] / max(qmax, 1)))):
        raise ValueError(f"weight: |w| up to {float(amax.max()):.3g} overflows the bfloat16 group "
                         "scales")  # (the largest candidate; the others are smaller)
    codes = torch.empty((n, k), dtype=torch.int8)
    best = torch.empty(amax.shape)
    step = max(1, SEARCH_CHUNK_GROUPS // max(amax.shape[1], 1))
    for r0 in range(0, n, step):
        a = amax[r0:r0 + step]
        scales = torch.stack([bf16_round(a * r / max(qmax, 1)) for r in ratios])
        c, b = _C.clip_search_uniform(w[r0:r0 + step].numpy(), scales.numpy(), gs, qmin, qmax,
                                      get_num_threads())
        codes[r0:r0 + step] = torch.from_numpy(c)
        best[r0:r0 + step] = torch.from_numpy(b)
    return codes, best


def group_packs(b) -> list:
    """WeightOnly's fallback layout (a build without the grouped kernels): the per-group packs
    that ``packed`` concatenates, cut at ``packed_offsets``."""
    off = b["packed_offsets"].tolist()
    return [b["packed"][lo:hi] for lo, hi in zip(off, off[1:])]


@_register(WeightOnlyConfig)
class WeightOnlyScheme(Scheme):
    """State: ``packed`` (codes), ``w_scale`` bfloat16 [N, G], ``w_off`` float32 [N] =
    sum_g scale * (sum of the group's codes), the zero-point correction of the epilogue.
    ``w_off`` stays in the state dict (older files carry it), but ``recomputed`` rebuilds it from
    ``packed`` and ``w_scale`` at every refresh (conversion, load, the first eager call after an
    in-place edit), so a loaded file or an edited scale does not leave it stale. (A traced
    program, torch.compile / torch.export, takes the constants as they are when it is traced.)"""
    ops = ("lowbit_gemm",)

    @property
    def code_max(self):
        return 1 << (self.config.bits - 1)

    def read_buffers(self, b):
        if "packed_offsets" in b:  # per-group packs: the PyTorch epilogue reads w_scale
            return ("packed", "w_scale", "w_off")
        return ("packed", "panel_scales", "w_off")

    def quantize_weight(self, w, hessian=None, damp=0.2):
        bits, gs = self.config.bits, self.config.group_size
        if hessian is None:
            codes, sw = lowbit_weight(w, bits, gs)
        else:
            from .gptq import gptq_weight

            codes, sw = gptq_weight(w, hessian, bits, gs, damp)
        return self.state(codes, sw)

    def empty_codes(self, n, k):
        scales = torch.ones(n, -(-k // self.config.group_size), dtype=torch.float32)
        return torch.zeros((n, k), dtype=torch.int8), scales

    def state(self, codes, sw):
        """The buffers of group-wise codes [N, K] and their scales [N, G]."""
        bits, gs = self.config.bits, self.config.group_size
        k = codes.shape[1]
        sums = torch.from_numpy(_C.group_sums(codes.contiguous().numpy(), gs, get_num_threads()))
        state = {"w_scale": sw.to(torch.bfloat16), "w_off": zero_point_term(sw, sums)}
        if _backend.is_reference() or _backend.available("lowbit_gemm_grouped"):
            # one pack for all of K; the grouped kernels apply the group scales in their epilogue
            return {"packed": _backend.prepack("lowbit_gemm", codes, bits=bits), **state}
        # fallback layout: one pack per K group, concatenated (lowbit_gemm per group)
        packs = [_backend.prepack("lowbit_gemm", codes[:, lo:hi], bits=bits)
                 for lo, hi in group_bounds(k, gs)]
        offsets = torch.tensor([0] + [p.numel() for p in packs], dtype=torch.int64).cumsum(0)
        return {"packed": torch.cat(packs), "packed_offsets": offsets, **state}

    def group_code_sums(self, b, reference: bool) -> torch.Tensor:
        """[N, G] int32: each group's sum of signed codes, read back from the packed weight (by
        the kernels themselves: an exact integer GEMM of group-indicator rows)."""
        bits, gs = self.config.bits, self.config.group_size
        n = b["w_scale"].shape[0]
        if reference:  # raw int8 codes [N, K]
            codes = b["packed"].view(torch.int8).reshape(n, -1)
            return torch.stack([codes[:, lo:hi].sum(1, dtype=torch.int32)
                                for lo, hi in group_bounds(codes.shape[1], gs)], 1)

        if "packed_offsets" not in b:
            k = _backend.packed_shape(b["packed"], "lowbit_gemm", bits=bits)[1]
            return indicator_sums("lowbit_gemm", b["packed"], n, group_bounds(k, gs), False,
                                  bits=bits).contiguous()
        # one pack per group: a row of ones against each
        return torch.cat([indicator_sums("lowbit_gemm", pack, n, [(0, 1 << 62)], False, bits=bits)
                          for pack in group_packs(b)], 1).contiguous()

    def dequantize_weight(self, b, reference: bool) -> torch.Tensor:
        bits, gs = self.config.bits, self.config.group_size
        n = b["w_scale"].shape[0]
        if "packed_offsets" in b:  # one pack per group
            codes = torch.cat([probe_codes("lowbit_gemm", pack, n, reference, bits=bits)
                               for pack in group_packs(b)], 1)
        else:
            codes = probe_codes("lowbit_gemm", b["packed"], n, reference, bits=bits)
        return codes.float() * b["w_scale"].float().repeat_interleave(gs, 1)[:, : codes.shape[1]]

    def recomputed(self, b, reference, memo):
        sums = codes_memo(b, memo, "group_sums", lambda: self.group_code_sums(b, reference))
        return {"w_off": zero_point_term(b["w_scale"].float(), sums)}

    def derived(self, b):
        if "packed_offsets" in b:
            return {}
        # the bfloat16 bits in the kernels' panel layout (int16; csrc/lowbit_gemm/panel_scales.h):
        # one unpack with zero widens 8 or 16 of them, and the decode GEMV streams half the bytes
        sw = b["w_scale"].float().contiguous().numpy()
        return {"panel_scales": torch.from_numpy(_C.lowbit_panel_scales(sw))}

    def bind(self, b, act_range, bias):
        if "packed_offsets" in b:
            return None
        f, bits, gs = _C.forward_lowbit, self.config.bits, self.config.group_size
        p, s, o, bi, r = self.grouped_args(b, act_range, bias)
        return lambda x, threads, conv=None: f(x, p, bits, gs, s, o, bi, r, threads, conv)

    def grouped_args(self, b, act_range, bias):
        if "packed_offsets" in b:
            return None
        return tuple(_np(t) for t in (b["packed"], b["panel_scales"], b["w_off"], bias, act_range))

    def run_grouped(self, x, weights, groups, threads):
        c = self.config
        return _C.forward_lowbit_grouped(x, weights, groups, c.bits, c.group_size, threads)

    def run_conv_groups(self, x, weights, threads, conv):
        c = self.config
        return _C.forward_lowbit_conv_groups(x, weights, c.bits, c.group_size, threads, conv)

    def run_recurrent(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr, threads):
        c = self.config
        return _C.recurrent_forward_lowbit(xp, batch_sizes, reverse, mode, h0, c0, hh, hr,
                                           c.bits, c.group_size, threads)

    def recurrent_op(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr):
        if any(lay is not None and "packed_offsets" in lay._buffers for lay in (hh, hr)):
            return None

        def weight(layer):
            return _op_weight(layer, "packed", "panel_scales", "w_off")
        c = self.config
        return torch.ops.pyquant.lowbit_recurrent(xp, batch_sizes, reverse, mode, h0, c0,
                                                  weight(hh), hh.bias, weight(hr), c.bits,
                                                  c.group_size)

    def has_op(self, b) -> bool:
        return "packed_offsets" not in b

    def op(self, x, b, act_range, bias, conv=None):
        if "packed_offsets" in b:
            return None
        c = self.config
        return torch.ops.pyquant.lowbit_linear(x, b["packed"], b["panel_scales"], b["w_off"], bias,
                                               act_range, c.bits, c.group_size, conv)

    def forward(self, x, b, act_range, n, k, reference):
        bits, gs = self.config.bits, self.config.group_size
        q, sa, zp = asym_u8(x, act_range, reuse=True)
        sw = b["w_scale"].float()
        if "packed_offsets" not in b:
            y = float_inplace(_backend.gemm("lowbit_gemm_grouped", q, b["packed"], n, k, reference,
                                            bits=bits, group_size=gs, scales=sw))
        else:
            y = None
            for g, ((lo, hi), pack) in enumerate(zip(group_bounds(k, gs), group_packs(b))):
                acc = _backend.gemm("lowbit_gemm", q[:, lo:hi], pack, n, hi - lo, reference,
                                    bits=bits)
                if y is None:
                    y = float_inplace(acc).mul_(sw[:, g])
                else:
                    y.addcmul_(acc, sw[:, g])
        # the shared epilogue: F * sa - (sa * zp) * w_off
        y.mul_(sa).sub_((sa * zp).view(-1, 1) * b["w_off"])
        return y

    def fake_quant_weight(self, w):
        codes, sw = lowbit_weight(w, self.config.bits, self.config.group_size)
        gs = self.config.group_size
        return codes.double() * sw.double().repeat_interleave(gs, 1)[:, : w.shape[1]]

    def fake_quant_act(self, x, act_range=None):
        q, sa, zp = asym_u8(x, act_range)
        return (q.double() - zp.double()) * sa.double()


# ----------------------------------------------------------------------------- LUT2
def nearest_level(v, levels):
    """Index (into `levels`, any order) of the level nearest to each element of v (uint8)."""
    lv = torch.tensor(levels, dtype=v.dtype)
    sorted_lv, order = torch.sort(lv)
    mids = ((sorted_lv[1:] + sorted_lv[:-1]) / 2).tolist()
    # count of midpoints below v (== torch.bucketize, but vectorized compares are ~10x faster)
    idx = (v > mids[0]).to(torch.uint8)
    for m in mids[1:]:
        idx += v > m
    if torch.equal(order, torch.arange(len(levels))):
        return idx
    return order.to(torch.uint8)[idx.long()]


def lut_weight(w, levels):
    """2-bit codes into `levels` and per-row scale, MSE-clipped: 17 candidates (the row's max |w|
    times 1.0 .. 0.2 over the largest |level|), searched in one native pass per row
    (csrc/quantize/weight_search.h)."""
    w = w.detach().float().contiguous()
    amax = torch.from_numpy(_C.group_absmax(w.numpy(), max(w.shape[1], 1), get_num_threads()))
    amax = amax.view(-1).clamp_(min=1e-12)
    top = torch.tensor(levels, dtype=torch.float32).abs().max()
    scales = torch.stack([amax * r / top for r in torch.linspace(1.0, 0.2, 17).tolist()])
    codes, best = _C.clip_search_levels(w.numpy(), scales.view(17, -1, 1).numpy(), list(levels),
                                        get_num_threads())
    return torch.from_numpy(codes), torch.from_numpy(best)


LUT_BINS = 512
LUT_RATIOS = [1.0 - 0.85 * i / 11.0 for i in range(12)]  # rounded to float32 where used


def _lut_levels(levels):
    srt = sorted(levels)
    order = torch.tensor([list(levels).index(v) for v in srt], dtype=torch.uint8)
    mids = [(srt[i] + srt[i + 1]) / 2 for i in range(3)]
    return srt, order, mids


def _lut_minmax(lo, hi, srt):
    """(sa, off) float32 from a range: sa = (hi - lo) / (lmax - lmin) (1 if not > 0), off = lo - sa*lmin."""
    span = float(srt[3] - srt[0])
    sa = (hi - lo) / span
    sa = torch.where(sa > 0, sa, torch.ones_like(sa))
    off = lo - sa * float(srt[0])
    wide = range_overflows(lo, hi)  # (the native branch: s and off in double)
    if bool(wide.any()):
        ds = (hi.double() - lo.double()) / span
        sa = torch.where(wide, ds.float(), sa)
        off = torch.where(wide, (lo.double() - ds * float(srt[0])).float(), off)
    return sa, off


def _lut_row_range(x):
    """The native LUT2 row range: NaN values skipped (an all-NaN row gives NaN)."""
    nan = torch.isnan(x)
    inf = torch.tensor(float("inf"), dtype=x.dtype)
    lo = torch.where(nan, inf, x).amin(1, keepdim=True)
    hi = torch.where(nan, -inf, x).amax(1, keepdim=True)
    all_nan = nan.all(1, keepdim=True)
    return lo.masked_fill(all_nan, float("nan")), hi.masked_fill(all_nan, float("nan"))


def _lut_mse(x, srt):
    """The native "mse" estimator (csrc/quantize/act_quantize.h) in PyTorch: per-row clipping
    search over a 512-bin histogram, float64 from the bins on."""
    m, k = x.shape
    lo, hi = _lut_row_range(x)
    flat = ~(hi > lo) | range_overflows(lo, hi)  # (minmax's parameters for these rows)
    span = torch.where(flat, torch.ones_like(hi), hi - lo)
    t = (x - lo) * (torch.tensor(float(LUT_BINS)) / span)
    # the native bin rule: t > 0 (false for NaN) ? min(t, B - 1) : 0, never a cast of NaN or inf
    idx = torch.where(t > 0, t.clamp(max=LUT_BINS - 1), torch.zeros_like(t)).to(torch.int64)
    counts = torch.zeros(m, LUT_BINS, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones_like(idx, dtype=torch.float64))
    dlo = lo.double()
    centre = dlo + (torch.arange(LUT_BINS, dtype=torch.float64) + 0.5) * ((hi.double() - dlo) / LUT_BINS)
    mu = (counts * centre).sum(1, keepdim=True) / k
    lmin, span_l = float(srt[0]), float(srt[3] - srt[0])
    mids = [(srt[i] + srt[i + 1]) / 2 for i in range(3)]
    lv = torch.tensor(srt, dtype=torch.float64)
    best = None
    for r in LUT_RATIOS:
        r = float(torch.tensor(r, dtype=torch.float32))
        clo, chi = mu + r * (dlo - mu), mu + r * (hi.double() - mu)
        sa = (chi - clo) / span_l
        off = clo - sa * lmin
        v = (centre - off) * (1.0 / sa)
        pos = (v > mids[0]).long() + (v > mids[1]).long() + (v > mids[2]).long()
        d = centre - (off + sa * lv[pos])
        err = (counts * (d * d)).sum(1, keepdim=True)
        if best is None:
            best = [err, sa, off]
        else:
            better = err < best[0]
            best = [torch.where(better, err, best[0]), torch.where(better, sa, best[1]),
                    torch.where(better, off, best[2])]
    sa, off = best[1].float(), best[2].float()
    sa = torch.where(sa > 0, sa, torch.ones_like(sa))
    sa_mm, off_mm = _lut_minmax(lo, hi, srt)
    return torch.where(flat, sa_mm, sa), torch.where(flat, off_mm, off)


def lut_act(x, levels, mode, act_range=None):
    """x ~= off + sa * levels[code] per row (the native definition). Returns codes uint8, sa, off
    ([M|1, 1] float32)."""
    srt, order, mids = _lut_levels(levels)
    if _static(act_range):
        sa, off = _lut_minmax(act_range[0].view(1, 1), act_range[1].view(1, 1), srt)
    elif mode == "minmax":
        sa, off = _lut_minmax(*_lut_row_range(x), srt)
    else:
        sa, off = _lut_mse(x, srt)
    v = (x - off) * (1.0 / sa)
    pos = (v > mids[0]).to(torch.uint8) + (v > mids[1]).to(torch.uint8) + (v > mids[2]).to(torch.uint8)
    return order[pos.long()], sa, off


@_register(LUT2Config)
class LUT2Scheme(Scheme):
    ops = ("lut_gemm",)
    reads = ("packed", "w_scale", "w_off")

    @property
    def code_max(self):
        return max(abs(v) for v in self.config.w_levels) or 1

    def quantize_weight(self, w):
        return self.state(*lut_weight(w, self.config.w_levels))

    def empty_codes(self, n, k):
        return torch.zeros((n, k), dtype=torch.uint8), torch.ones(n, dtype=torch.float32)

    def state(self, codes, sw):
        wl = self.config.w_levels
        # sum of w_levels[code] per row, by counts per level (no [N, K] int64 index copy)
        counts = torch.from_numpy(_C.level_counts(codes.contiguous().numpy(), get_num_threads()))
        lsum = sum(float(v) * counts[:, i].float() for i, v in enumerate(wl))
        return {"packed": _backend.prepack("lut_gemm", codes, w_levels=wl), "w_scale": sw, "w_sum": lsum}

    def recomputed(self, b, reference, memo):
        # w_sum (sum of w_levels[code] per row): as Int8's, read back from ``packed``; activation
        # levels (0, 1, 0, 0) make the indicator rows' codes 0/1 count as 0/1
        n, wl = b["w_scale"].shape[0], self.config.w_levels
        sums = codes_memo(b, memo, "w_sum", lambda: indicator_sums(
            "lut_gemm", b["packed"], n, [(0, 1 << 62)], reference, a_levels=(0, 1, 0, 0),
            w_levels=wl).view(-1))
        return {"w_sum": sums.float()}

    def probe_kwargs(self) -> dict:
        # activation levels (0, 1, 0, 0): an indicator code 1 reads w_levels[code] back
        return {"a_levels": (0, 1, 0, 0), "w_levels": self.config.w_levels}

    def derived(self, b):
        return {"w_off": b["w_scale"] * b["w_sum"]}

    def _levels(self):
        c = self.config
        return list(c.a_levels), list(c.w_levels), c.a_scale == "mse"

    def bind(self, b, act_range, bias):
        f, (al, wl, mse) = _C.forward_lut, self._levels()
        p, s, o, bi, r = self.grouped_args(b, act_range, bias)
        return lambda x, threads, conv=None: f(x, p, al, wl, mse, s, o, bi, r, threads, conv)

    def grouped_args(self, b, act_range, bias):
        return tuple(_np(t) for t in (b["packed"], b["w_scale"], b["w_off"], bias, act_range))

    # (LUT2 and SPARQ's grouped calls run group after group, each forward parallel inside)
    def run_grouped(self, x, weights, groups, threads):
        return _C.forward_lut_grouped(x, weights, groups, *self._levels(), threads)

    def run_conv_groups(self, x, weights, threads, conv):
        return _C.forward_lut_conv_groups(x, weights, *self._levels(), threads, conv)

    def run_recurrent(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr, threads):
        return _C.recurrent_forward_lut(xp, batch_sizes, reverse, mode, h0, c0, hh, hr,
                                        *self._levels(), threads)

    def recurrent_op(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr):
        def weight(layer):
            return _op_weight(layer, "packed", "w_scale", "w_off")
        return torch.ops.pyquant.lut_recurrent(xp, batch_sizes, reverse, mode, h0, c0, weight(hh),
                                               hh.bias, weight(hr), *self._levels())

    def has_op(self, b) -> bool:
        return True

    def op(self, x, b, act_range, bias, conv=None):
        c = self.config
        return torch.ops.pyquant.lut_linear(x, b["packed"], b["w_scale"], b["w_off"], bias, act_range,
                                            list(c.a_levels), list(c.w_levels), c.a_scale == "mse",
                                            conv)

    def forward(self, x, b, act_range, n, k, reference):
        c = self.config
        codes, sa, off = lut_act(x, c.a_levels, c.a_scale, act_range)
        acc = _backend.gemm("lut_gemm", codes, b["packed"], n, k, reference,
                            a_levels=c.a_levels, w_levels=c.w_levels)
        # the shared epilogue: (acc * sa) * sw - (-off) * (sw * lsum)
        y = float_inplace(acc).mul_(sa).mul_(b["w_scale"])
        y.sub_((-off).view(-1, 1) * (b["w_scale"] * b["w_sum"]))
        return y

    def fake_quant_weight(self, w):
        codes, sw = lut_weight(w, self.config.w_levels)
        return torch.tensor(self.config.w_levels, dtype=torch.float64)[codes.long()] * sw.double()[:, None]

    def fake_quant_act(self, x, act_range=None):
        c = self.config
        codes, sa, off = lut_act(x, c.a_levels, c.a_scale, act_range)
        return off.double() + sa.double() * torch.tensor(c.a_levels, dtype=torch.float64)[codes.long()]


# ----------------------------------------------------------------------------- SPARQ
def sparq_act(x, act_range=None):
    """uint8 magnitudes per row (or static per tensor): |x| ~= sa * q. Returns q, sa, negative mask."""
    if _static(act_range):
        amax = torch.maximum(act_range[1].abs(), act_range[0].abs()).view(1, 1)
    else:
        amax = x.abs().amax(1, keepdim=True)
    sa = torch.where(amax > 0, amax / 255.0, torch.ones_like(amax))
    # q = trunc(min(|x| * (1/sa) + 0.5, 255.25)): the native definition (act_quantize.h)
    q = (x.abs() * (1.0 / sa)).add_(0.5).clamp_(max=255.25).to(torch.uint8)
    return q, sa


@_register(SparqConfig)
class SparqScheme(Scheme):
    ops = ("sparq_gemm", "sparq_quantize")

    @property
    def packed_op(self) -> str:
        return "sparq24_gemm" if self.config.sparse24 else "sparq_gemm"

    def _weight(self, w, hessian=None, damp=0.2):
        if self.config.sparse24:  # 2:4 pruning of the float weight, then int8
            if hessian is not None:  # SparseGPT (gptq_); its result is 2:4 already
                from .gptq import sparsegpt_24

                w = sparsegpt_24(w, hessian, damp)
            w = pyquant.prune_24(w)  # by magnitude
        elif hessian is not None:
            raise TypeError("hessian: SparseGPT applies to SparqConfig(sparse24=True) only")
        return int8_weight(w)

    def quantize_weight(self, w, hessian=None, damp=0.2):
        return self.state(*self._weight(w, hessian, damp))

    def empty_codes(self, n, k):
        return torch.zeros((n, k), dtype=torch.int8), torch.ones(n, dtype=torch.float32)

    def state(self, wq, sw):
        return {"packed": _backend.prepack(self.packed_op, wq, **self.config.op_kwargs()), "w_scale": sw}

    def probe_kwargs(self) -> dict:
        # an activation of 1 is kept whole by every trim (its window is bits 0..3)
        return self.config.op_kwargs()

    def int_acc(self, x, b, act_range, n, k, reference):
        kw = self.config.op_kwargs()
        q, sa = sparq_act(x, act_range)
        neg = x < 0
        if not bool(neg.any()):
            return _backend.gemm(self.packed_op, q, b["packed"], n, k, reference, **kw), sa
        if self.config.negative == "error":
            raise ValueError("x: SparqConfig(negative='error') got negative inputs")
        if self.config.sparse24:  # pairs per output channel: the op takes the signed magnitudes
            signed = torch.where(neg, -q.to(torch.int16), q.to(torch.int16))
            return _backend.gemm(self.packed_op, signed, b["packed"], n, k, reference, **kw), sa
        # sign-magnitude: trim magnitudes once, then positive part minus negative part
        t = _backend.sparq_quantize(q, reference, **kw)
        zero = torch.zeros((), dtype=torch.uint8)
        pos = _backend.gemm("sparq_gemm", torch.where(neg, zero, t), b["packed"], n, k, reference, **kw)
        negp = _backend.gemm("sparq_gemm", torch.where(neg, t, zero), b["packed"], n, k, reference, **kw)
        return pos.sub_(negp), sa

    def _options(self):
        """(bits, options, round, pairs, allow_negative) as the native forwards take them."""
        c = self.config
        return c.bits, c.options, c.rounding == "round", c.pairs, c.negative == "sign_magnitude"

    def bind(self, b, act_range, bias):
        bits, opts, rnd, pairs, signed = self._options()
        p, s, bi, r = self.grouped_args(b, act_range, bias)
        f = _C.forward_sparq24 if self.config.sparse24 else _C.forward_sparq
        return lambda x, threads, conv=None: f(x, p, bits, opts, rnd, pairs, signed, s, bi, r, threads,
                                               conv)

    def grouped_args(self, b, act_range, bias):
        return tuple(_np(t) for t in (b["packed"], b["w_scale"], bias, act_range))

    def run_grouped(self, x, weights, groups, threads):
        return _C.forward_sparq_grouped(x, weights, groups, *self._options(), self.config.sparse24,
                                        threads)

    def run_conv_groups(self, x, weights, threads, conv):
        return _C.forward_sparq_conv_groups(x, weights, *self._options(), self.config.sparse24,
                                            threads, conv)

    def run_recurrent(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr, threads):
        return _C.recurrent_forward_sparq(xp, batch_sizes, reverse, mode, h0, c0, hh, hr,
                                          *self._options(), self.config.sparse24, threads)

    def recurrent_op(self, xp, batch_sizes, reverse, mode, h0, c0, hh, hr):
        def weight(layer):
            return _op_weight(layer, "packed", "w_scale")
        return torch.ops.pyquant.sparq_recurrent(xp, batch_sizes, reverse, mode, h0, c0,
                                                 weight(hh), hh.bias, weight(hr), *self._options(),
                                                 self.config.sparse24)

    def has_op(self, b) -> bool:
        return not self.config.sparse24

    def op(self, x, b, act_range, bias, conv=None):
        c = self.config
        if c.sparse24:
            return None
        return torch.ops.pyquant.sparq_linear(x, b["packed"], b["w_scale"], bias, act_range, c.bits,
                                              c.options, c.rounding == "round", c.pairs,
                                              c.negative == "sign_magnitude", conv)

    def forward(self, x, b, act_range, n, k, reference):
        acc, sa = self.int_acc(x, b, act_range, n, k, reference)
        return float_inplace(acc).mul_(sa).mul_(b["w_scale"])

    def fake_quant_weight(self, w):
        wq, sw = self._weight(w)
        return wq.double() * sw.double()[:, None]

    def fake_quant_act(self, x, act_range=None):
        q, sa = sparq_act(x, act_range)
        t = _backend.sparq_quantize_ref(q, **self.config.op_kwargs()).double()
        return torch.where(x < 0, -t, t) * sa.double()
