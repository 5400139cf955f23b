"""torch.library custom ops: one per GEMM family, each the whole fused forward of a quantized
layer (activation quantization, integer GEMM, epilogue, bias) as one native call; with ``conv``
the op is a QuantConv2d's (x the NHWC image, the im2col rows made natively, csrc/forward/conv.h).

Every op takes explicit tensors (the module's buffers) and scalars (the config's fields), so
torch.compile / torch.export see one opaque op per layer and an exported program carries all it
needs: nothing is looked up in a Python-side registry. Eager mode calls the native functions
directly (``Scheme.native``): the dispatcher adds ~10-20 us per call (docs/notes/nn_forward.md).

``reference_linear`` is the pure-PyTorch path of ``use_reference()`` modules (tests); its config
travels as its repr string, parsed back by ``parse_config`` (only the four config classes, only
literal arguments).
"""
from __future__ import annotations

import ast
from typing import List, Optional

import torch

from pyquant import _C
from pyquant._threads import get_num_threads

Tensor = torch.Tensor


def _np(t):
    return None if t is None else t.contiguous().numpy()


def _out(x, n, conv=None):
    """The output of a linear op on x [M, K], or of a conv op (``conv`` = (kh, kw, sh, sw, ph,
    pw, dh, dw, nchw)) on x [B, C, H, W] -> [B, N, Ho, Wo] if nchw, else [B, H, W, C] ->
    [B, Ho, Wo, N]."""
    if conv is None:
        return x.new_empty((x.shape[0], n))
    kh, kw, sh, sw, ph, pw, dh, dw, nchw = conv
    h, w = (x.shape[2], x.shape[3]) if nchw else (x.shape[1], x.shape[2])
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return x.new_empty((x.shape[0], n, ho, wo) if nchw else (x.shape[0], ho, wo, n))


@torch.library.custom_op("pyquant::int8_linear", mutates_args=())
def int8_linear(x: Tensor, packed: Tensor, w_scale: Tensor, w_off: Tensor, bias: Optional[Tensor],
                act_range: Tensor, act_bits: int = 8, conv: Optional[List[int]] = None) -> Tensor:
    return torch.from_numpy(_C.forward_int8(_np(x), packed.numpy(), w_scale.numpy(), w_off.numpy(),
                                            _np(bias), act_range.numpy(), get_num_threads(),
                                            act_bits, conv))


@int8_linear.register_fake
def _(x, packed, w_scale, w_off, bias, act_range, act_bits=8, conv=None):
    return _out(x, w_scale.shape[0], conv)


@torch.library.custom_op("pyquant::lowbit_linear", mutates_args=())
def lowbit_linear(x: Tensor, packed: Tensor, panel_scales: Tensor, w_off: Tensor,
                  bias: Optional[Tensor], act_range: Tensor, bits: int, group_size: int,
                  conv: Optional[List[int]] = None) -> Tensor:
    return torch.from_numpy(_C.forward_lowbit(_np(x), packed.numpy(), bits, group_size,
                                              panel_scales.numpy(), w_off.numpy(), _np(bias),
                                              act_range.numpy(), get_num_threads(), conv))


@lowbit_linear.register_fake
def _(x, packed, panel_scales, w_off, bias, act_range, bits, group_size, conv=None):
    return _out(x, w_off.shape[0], conv)


@torch.library.custom_op("pyquant::lut_linear", mutates_args=())
def lut_linear(x: Tensor, packed: Tensor, w_scale: Tensor, w_off: Tensor, bias: Optional[Tensor],
               act_range: Tensor, a_levels: List[int], w_levels: List[int], mse: bool,
               conv: Optional[List[int]] = None) -> Tensor:
    return torch.from_numpy(_C.forward_lut(_np(x), packed.numpy(), list(a_levels), list(w_levels),
                                           mse, w_scale.numpy(), w_off.numpy(), _np(bias),
                                           act_range.numpy(), get_num_threads(), conv))


@lut_linear.register_fake
def _(x, packed, w_scale, w_off, bias, act_range, a_levels, w_levels, mse, conv=None):
    return _out(x, w_scale.shape[0], conv)


@torch.library.custom_op("pyquant::sparq_linear", mutates_args=())
def sparq_linear(x: Tensor, packed: Tensor, w_scale: Tensor, bias: Optional[Tensor],
                 act_range: Tensor, bits: int, options: int, round: bool, pairs: bool,
                 allow_negative: bool, conv: Optional[List[int]] = None) -> Tensor:
    return torch.from_numpy(_C.forward_sparq(_np(x), packed.numpy(), bits, options, round, pairs,
                                             allow_negative, w_scale.numpy(), _np(bias),
                                             act_range.numpy(), get_num_threads(), conv))


@sparq_linear.register_fake
def _(x, packed, w_scale, bias, act_range, bits, options, round, pairs, allow_negative, conv=None):
    return _out(x, w_scale.shape[0], conv)


# ---------------------------------------------------------------- recurrent layers
# One layer and direction of a QuantRNN (csrc/forward/recurrent.h): xp [R, gates] (every step's
# input projection), batch_sizes int64 [T], h0 [B, out], c0 [B, H] (LSTM) or None; hh / hr the
# state and projection weights' buffers as the family's linear op takes them (hr empty: no
# projection), their biases apart. Returns (y [R, out], h_n, c_n; c_n empty without a cell).
def _weight(tensors: List[Tensor], bias: Optional[Tensor]):
    return None if not tensors else (*(t.contiguous().numpy() for t in tensors[:-1]), _np(bias),
                                     tensors[-1].contiguous().numpy())


def _recurrent_result(out):
    y, h, c = out
    return (torch.from_numpy(y), torch.from_numpy(h),
            torch.from_numpy(c) if c is not None else torch.empty(0))


def _step_threads(hh: List[Tensor], h0: Tensor, xp: Tensor) -> int:
    """The state matmul's threads per step, as the eager path picks them (call_threads)."""
    from .modules import call_threads

    return call_threads(hh[0].numel(), h0.shape[0] * h0.shape[1] * xp.shape[1])


def _recurrent_fake(xp, h0, c0):
    return (xp.new_empty((xp.shape[0], h0.shape[1])), h0.new_empty(h0.shape),
            c0.new_empty(c0.shape) if c0 is not None else h0.new_empty(0))


@torch.library.custom_op("pyquant::int8_recurrent", mutates_args=())
def int8_recurrent(xp: Tensor, batch_sizes: Tensor, reverse: bool, mode: str, h0: Tensor,
                   c0: Optional[Tensor], hh: List[Tensor], hh_bias: Optional[Tensor],
                   hr: List[Tensor], act_bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """hh / hr: [packed, w_scale, w_off, act_range]."""
    return _recurrent_result(_C.recurrent_forward_int8(
        _np(xp), batch_sizes.numpy(), reverse, mode, _np(h0), _np(c0), _weight(hh, hh_bias),
        _weight(hr, None), act_bits, _step_threads(hh, h0, xp)))


@int8_recurrent.register_fake
def _(xp, batch_sizes, reverse, mode, h0, c0, hh, hh_bias, hr, act_bits):
    return _recurrent_fake(xp, h0, c0)


@torch.library.custom_op("pyquant::lowbit_recurrent", mutates_args=())
def lowbit_recurrent(xp: Tensor, batch_sizes: Tensor, reverse: bool, mode: str, h0: Tensor,
                     c0: Optional[Tensor], hh: List[Tensor], hh_bias: Optional[Tensor],
                     hr: List[Tensor], bits: int, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """hh / hr: [packed, panel_scales, w_off, act_range]."""
    return _recurrent_result(_C.recurrent_forward_lowbit(
        _np(xp), batch_sizes.numpy(), reverse, mode, _np(h0), _np(c0), _weight(hh, hh_bias),
        _weight(hr, None), bits, group_size, _step_threads(hh, h0, xp)))


@lowbit_recurrent.register_fake
def _(xp, batch_sizes, reverse, mode, h0, c0, hh, hh_bias, hr, bits, group_size):
    return _recurrent_fake(xp, h0, c0)


@torch.library.custom_op("pyquant::lut_recurrent", mutates_args=())
def lut_recurrent(xp: Tensor, batch_sizes: Tensor, reverse: bool, mode: str, h0: Tensor,
                  c0: Optional[Tensor], hh: List[Tensor], hh_bias: Optional[Tensor],
                  hr: List[Tensor], a_levels: List[int], w_levels: List[int],
                  mse: bool) -> tuple[Tensor, Tensor, Tensor]:
    """hh / hr: [packed, w_scale, w_off, act_range]."""
    return _recurrent_result(_C.recurrent_forward_lut(
        _np(xp), batch_sizes.numpy(), reverse, mode, _np(h0), _np(c0), _weight(hh, hh_bias),
        _weight(hr, None), list(a_levels), list(w_levels), mse, _step_threads(hh, h0, xp)))


@lut_recurrent.register_fake
def _(xp, batch_sizes, reverse, mode, h0, c0, hh, hh_bias, hr, a_levels, w_levels, mse):
    return _recurrent_fake(xp, h0, c0)


@torch.library.custom_op("pyquant::sparq_recurrent", mutates_args=())
def sparq_recurrent(xp: Tensor, batch_sizes: Tensor, reverse: bool, mode: str, h0: Tensor,
                    c0: Optional[Tensor], hh: List[Tensor], hh_bias: Optional[Tensor],
                    hr: List[Tensor], bits: int, options: int, round: bool, pairs: bool,
                    allow_negative: bool, sparse24: bool) -> tuple[Tensor, Tensor, Tensor]:
    """hh / hr: [packed, w_scale, act_range] (dense or 2:4 packed, as sparse24 says)."""
    return _recurrent_result(_C.recurrent_forward_sparq(
        _np(xp), batch_sizes.numpy(), reverse, mode, _np(h0), _np(c0), _weight(hh, hh_bias),
        _weight(hr, None), bits, options, round, pairs, allow_negative, sparse24,
        _step_threads(hh, h0, xp)))


@sparq_recurrent.register_fake
def _(xp, batch_sizes, reverse, mode, h0, c0, hh, hh_bias, hr, bits, options, round, pairs,
      allow_negative, sparse24):
    return _recurrent_fake(xp, h0, c0)


# ---------------------------------------------------------------- reference path
def parse_config(text: str):
    """``repr(config)`` -> config, for the four config classes with literal arguments only."""
    from . import configs

    allowed = {c.__name__: c for c in (configs.Int8Config, configs.WeightOnlyConfig,
                                       configs.LUT2Config, configs.SparqConfig)}
    node = ast.parse(text, mode="eval").body
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in allowed
            and not node.args):
        raise ValueError(f"config: not a pyquant config repr: {text!r}")
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    return allowed[node.func.id](**kwargs)


@torch.library.custom_op("pyquant::inference_only_grad", mutates_args=())
def inference_only_grad(grad: Tensor, shape: List[int], layer: str) -> Tensor:
    """The backward of a quantized layer: always a RuntimeError naming it. An op (with a fake
    implementation) so that torch.compile can trace a plain call, which needs the backward graph,
    and only an actual backward fails."""
    raise RuntimeError(
        f"{layer} is inference-only: quantized layers have no backward; keep them out of "
        "training (or train the float model and quantize it afterwards)")


@inference_only_grad.register_fake
def _(grad, shape, layer):
    return grad.new_empty(shape)  # the layer input's shape


def run_reference(x, bufs: dict, act_range, bias, n: int, scheme, reference: bool = True):
    """x [M, K] float32 -> y [M, N] float32 through the scheme's Python forward (+ bias)."""
    y = scheme.forward(x, bufs, act_range, n, x.shape[1], reference)
    if bias is not None:
        y = y + bias
    return y


@torch.library.custom_op("pyquant::reference_linear", mutates_args=())
def reference_linear(x: Tensor, tensors: List[Tensor], names: str, act_range: Tensor,
                     bias: Optional[Tensor], config: str, reference: bool, n: int) -> Tensor:
    from .schemes import scheme_for

    return run_reference(x.contiguous(), dict(zip(names.split(","), tensors)), act_range, bias, n,
                         scheme_for(parse_config(config)), reference).clone()


@reference_linear.register_fake
def _(x, tensors, names, act_range, bias, config, reference, n):
    return _out(x, n)
