"""QuantConvTranspose2d / QuantConvTranspose1d: ``nn.ConvTranspose2d`` / ``1d`` (groups=1) on the
kernels (U-Net and FPN decoders, segmentation heads, GAN generators, speech vocoders).

A transposed conv is a GEMM per *input* pixel followed by col2im: row (b, iy, ix) of the input,
[C_in], times the weight as an [kh * kw * C_out, C_in] matrix (columns ordered (ky, kx, c_out)),
gives each kernel tap's contribution to the output pixel it reaches; col2im sums the
contributions per output pixel and adds the bias. One native call does both (the config's fused
forward in its transposed-conv mode, csrc/forward/col2im.h): the GEMM as in QuantLinear
(activation quantization per input pixel, or static from ``calibrate``; weights quantized per
column, i.e. per (tap, output channel), a finer grid than per output channel) into scratch, then
col2im, a gather per output row with the terms in (ky, kx) order, NCHW or channels_last as the
input. Under torch.compile / torch.export, the reference backend and calibration, the GEMM is
the config's torch.library op (or reference) on the rows and col2im the same sum in torch ops
(``col2im_reference``, the same bits).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pyquant import _C

from .modules import (_QuantModule, _check_device, _out_dtype, _prepare_weights, _tracing,
                      batched_image, conv1d_forward)


class _Geometry(NamedTuple):
    """The 2-D geometry the forward runs (a QuantConvTranspose1d's as (1, k))."""
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple


def col2im_reference(cols: torch.Tensor, image: tuple, geometry: list, bias,
                     channels_last: bool) -> torch.Tensor:
    """The native col2im (csrc/forward/col2im.h) in torch ops, term for term in the same order
    (bias, then the taps in (ky, kx) order): [B * H * W, kh * kw * C] -> [B, C, Ho, Wo] (a
    channels_last view if asked)."""
    b, h, w = image
    kh, kw, sh, sw, ph, pw, dh, dw, oph, opw = geometry
    c = cols.shape[1] // (kh * kw)
    hfull, wfull = (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1
    ho, wo = hfull - 2 * ph + oph, wfull - 2 * pw + opw
    # the full scatter target [B, rows, cols, C] from padded coordinate 0, cropped after
    buf = cols.new_zeros(b, max(hfull, ph + ho), max(wfull, pw + wo), c)
    if bias is not None:
        buf += bias
    taps = cols.view(b, h, w, kh, kw, c)
    for ky in range(kh):
        for kx in range(kw):
            buf[:, ky * dh: ky * dh + (h - 1) * sh + 1: sh,
                kx * dw: kx * dw + (w - 1) * sw + 1: sw] += taps[:, :, :, ky, kx]
    y = buf[:, ph:ph + ho, pw:pw + wo].permute(0, 3, 1, 2)
    return y.contiguous(memory_format=torch.channels_last if channels_last
                        else torch.contiguous_format)


class QuantConvTranspose2d(_QuantModule):
    """Quantized ``nn.ConvTranspose2d`` (groups=1): the module docstring. Its attributes are the
    float layer's; ``weight`` / ``dequantize_weight()`` have its [C_in, C_out, kh, kw] shape."""

    @classmethod
    def from_conv(cls, conv: nn.ConvTranspose2d, config, **quant_kw) -> "QuantConvTranspose2d":
        """``quant_kw``: scheme options, e.g. ``hessian=`` over the input channels (GPTQ)."""
        if not isinstance(conv, nn.ConvTranspose2d):
            raise TypeError(f"conv: expected an nn.ConvTranspose2d, got {type(conv).__name__}")
        return cls._converted(conv, config, **quant_kw)

    @classmethod
    def _converted(cls, conv: nn.Module, config, **quant_kw):
        if conv.groups != 1:
            raise ValueError(f"conv: groups={conv.groups}: {cls.__name__} takes groups=1 "
                             "(grouped transposed convs are not supported: quantize_'s filters "
                             "leave them float)")
        _prepare_weights(conv, "conv")  # (weight_norm, spectral_norm, pruning: their hook first)
        if conv.weight.numel() == 0:
            raise ValueError(f"conv: {conv.in_channels} -> {conv.out_channels} channels: a layer "
                             "without weights has nothing to quantize (quantize_ leaves it float)")
        m = cls()
        m.in_channels, m.out_channels, m.groups = conv.in_channels, conv.out_channels, 1
        # the float layer's own attributes (model code reads them)
        m.kernel_size, m.stride, m.padding = conv.kernel_size, conv.stride, conv.padding
        m.dilation, m.output_padding = conv.dilation, conv.output_padding
        m.padding_mode = conv.padding_mode
        g = m._geometry()
        # [C_in, C_out, kh, kw] -> [kh, kw, C_out, C_in] -> [N = kh*kw*C_out, K = C_in]
        w = conv.weight.detach().view(conv.in_channels, conv.out_channels, *g.kernel_size)
        w2d = w.permute(2, 3, 1, 0).reshape(-1, conv.in_channels)
        m._setup(config, w2d, conv.bias, **quant_kw)
        return m

    def _gemm_bias(self):
        return None  # (col2im adds the bias once per output pixel)

    def _bias_features(self) -> int:
        return self.out_channels

    def _refresh_derived(self):
        super()._refresh_derived()
        # the whole layer in one native call: the same fused forward bound with the bias, which
        # the binding's transposed mode hands to col2im (self._run, bound without it, serves
        # the 2-D rows of calibration and of the autograd guard)
        self._run_transposed = None if self._run is None else self.scheme.bind(
            self._buffers, self.act_range, self.bias)

    def __getstate__(self):
        state = super().__getstate__()
        state["_run_transposed"] = None  # (bound to these buffers' arrays: rebound on load)
        return state

    def _geometry(self) -> _Geometry:
        return _Geometry(self.kernel_size, self.stride, self.padding, self.dilation)

    def _float_weight_shape(self) -> tuple:
        return (self.in_channels, self.out_channels, *self.kernel_size)

    def _from_nk(self, w: torch.Tensor) -> torch.Tensor:
        kh, kw = self._geometry().kernel_size
        return w.view(kh, kw, self.out_channels, self.in_channels).permute(3, 2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        _check_device(x)  # (before torch's output_size rule reads x's shape)
        # nn.ConvTranspose2d's own rule (its method reads only self.output_padding): with
        # output_size, the padding that reaches it, checked against what the stride allows
        output_padding = nn.ConvTranspose2d._output_padding(
            self, x, output_size, list(self.stride), list(self.padding), list(self.kernel_size),
            2, list(self.dilation))
        return self._forward(x, output_padding)

    def _forward(self, x: torch.Tensor, output_padding) -> torch.Tensor:
        x, unbatched = batched_image(x, self.in_channels)
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
        if x.shape[0] and not (x.shape[2] and x.shape[3]):
            raise ValueError(f"x: shape {tuple(x.shape)}: an empty image (only a zero batch may "
                             "be empty, as in nn.ConvTranspose2d)")
        g = self._geometry()
        geometry = [*g.kernel_size, *g.stride, *g.padding, *g.dilation, *output_padding]
        b, _, h, w = x.shape
        channels_last = x.stride(1) < x.stride(3)  # (as QuantConv2d: the output follows the input)
        y = self._native_forward(x, geometry, channels_last)
        if y is None:
            rows = x.permute(0, 2, 3, 1).reshape(-1, self.in_channels)
            cols = self._gemm(rows)  # [B*H*W, kh*kw*C_out] float32
            y = col2im_reference(cols, (b, h, w), geometry, self.bias, channels_last)
        y = y.to(_out_dtype(x))
        return y[0] if unbatched else y

    def _native_forward(self, x: torch.Tensor, geometry: list, channels_last: bool):
        """The whole layer in one native call (the pixels' GEMM into scratch, then col2im), or
        None where the torch path runs: traced (torch.compile / export: the config's op on the
        rows, then col2im_reference), the reference backend, calibration, an input that needs
        the autograd guard."""
        self._check_loaded()
        if self._run is None or self._observer is not None or _tracing() or (
                torch.is_grad_enabled() and x.requires_grad) or \
                max(geometry) > _C.CONV_MAX_GEOMETRY:  # (beyond the native call's limits)
            return None
        self._native_run()  # (rebinds both runs after an edited or moved buffer)
        run = self._run_transposed
        if run is None:
            return None
        # [B, C, H, W] or its channels_last view as [B, H, W, C], float32, contiguous
        image = (x.permute(0, 2, 3, 1) if channels_last else x).to(torch.float32).contiguous()
        threads = self._threads(image.numel() // max(1, self.in_channels))
        y = torch.from_numpy(run(image.numpy(), threads, [*geometry[:8], int(not channels_last),
                                                         *geometry[8:]]))
        return y.permute(0, 3, 1, 2) if channels_last else y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}, {self._config_repr()}")


class QuantConvTranspose1d(QuantConvTranspose2d):
    """Quantized ``nn.ConvTranspose1d`` (groups=1): QuantConvTranspose2d with a (1, k) kernel on
    [B, C, 1, L]. Its attributes are nn.ConvTranspose1d's; ``weight`` has its [C_in, C_out, k]
    shape."""

    @classmethod
    def from_conv(cls, conv: nn.ConvTranspose1d, config, **quant_kw) -> "QuantConvTranspose1d":
        if not isinstance(conv, nn.ConvTranspose1d):
            raise TypeError(f"conv: expected an nn.ConvTranspose1d, got {type(conv).__name__}")
        return cls._converted(conv, config, **quant_kw)

    def _geometry(self) -> _Geometry:
        return _Geometry((1, self.kernel_size[0]), (1, self.stride[0]), (0, self.padding[0]),
                         (1, self.dilation[0]))

    def _float_weight_shape(self) -> tuple:
        return (self.in_channels, self.out_channels, self.kernel_size[0])

    def _from_nk(self, w: torch.Tensor) -> torch.Tensor:
        return super()._from_nk(w).squeeze(2)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        def forward_2d(x4):  # (x checked by conv1d_forward; the padding rule reads it as given)
            output_padding = nn.ConvTranspose1d._output_padding(
                self, x, output_size, list(self.stride), list(self.padding),
                list(self.kernel_size), 1, list(self.dilation))
            return self._forward(x4, [0, *output_padding])
        return conv1d_forward(forward_2d, x, self.in_channels)
