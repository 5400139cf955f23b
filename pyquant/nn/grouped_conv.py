"""QuantGroupedConv2d / QuantGroupedConv1d: ``nn.Conv2d`` / ``nn.Conv1d`` with ``groups > 1``.

A grouped conv is ``groups`` independent convs: group i reads input channels
``[i * C/G, (i + 1) * C/G)`` and writes output channels ``[i * N/G, (i + 1) * N/G)``. Here each
group is a QuantConv2d / QuantConv1d of its own (its own codes, scales, bias and, after
``calibrate``, static activation range), so the layer is exactly those convs with their outputs
concatenated. Every config runs all groups in one native call (csrc/forward/conv.cc: each
(group, chunk of output pixels) a task, im2col made in cache from the group's channel slice);
tracing, calibration and the reference backend call the groups one by one (the same bits).

quantize_'s default filter converts the grouped convs whose groups are GEMMs of some size
(conv_gain.py: wav2vec2 / HuBERT's positional conv, 16 groups of 48 channels, kernel 128, a fifth
of the Int8 model's time when left float); depthwise and ResNeXt-style convs stay float.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from .modules import (QuantConv1d, QuantConv2d, _prepare_weights, _out_dtype, _pad, _tracing,
                      batched_image, call_threads, conv1d_forward, native_conv_geometry,
                      native_conv_image, output_pixels, smaller_than_kernel)
from .weight_view import QuantizedWeight


def _group_view(conv: nn.Module, weight: torch.Tensor, i: int) -> SimpleNamespace:
    """Group i of ``conv`` (whose weight, read once: a weight-norm parametrization recomputes it
    on every read, is ``weight``) as the attributes QuantConv2d/1d's conversion reads (no float
    layer is built: a depthwise conv has hundreds of groups)."""
    cg, ng = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    w = weight[i * ng:(i + 1) * ng]
    b = None if conv.bias is None else conv.bias.detach()[i * ng:(i + 1) * ng]
    return SimpleNamespace(in_channels=cg, out_channels=ng, kernel_size=conv.kernel_size,
                           stride=conv.stride, dilation=conv.dilation, padding=conv.padding,
                           padding_mode=conv.padding_mode, groups=1, weight=w, bias=b)


@torch.compiler.disable  # (a graph break under torch.compile, as QuantConv2d's weight)
def _grouped_weight_view(module) -> QuantizedWeight:
    first = module.convs[0]
    return QuantizedWeight(module, (module.out_channels, *first._float_weight_shape()[1:]),
                           first.weight_dtype)


class QuantGroupedConv2d(nn.Module):
    """Quantized ``nn.Conv2d`` with ``groups > 1`` (module docstring). ``convs[i]`` is group i's
    QuantConv2d; the attributes are the float layer's (model code reads them). The forward runs
    the groups' layers directly, not through their ``__call__``: hooks on ``convs[i]`` do not
    fire (hook the grouped layer)."""

    _layer = QuantConv2d
    _float = nn.Conv2d

    @classmethod
    def from_conv(cls, conv: nn.Module, config, hessians: list | None = None, damp: float = 0.2):
        """``hessians``: GPTQ's per-group Hessians over each group's im2col K order, with its
        ``damp``."""
        if not isinstance(conv, cls._float):
            raise TypeError(f"conv: expected an {cls._float.__name__}, got {type(conv).__name__}")
        _prepare_weights(conv, "conv")
        if conv.groups < 2:
            raise ValueError(f"conv: groups={conv.groups}: use {cls._layer.__name__} for groups=1")
        if hessians is not None and len(hessians) != conv.groups:
            raise ValueError(f"hessians: expected one per group ({conv.groups}), got {len(hessians)}")
        m = cls()
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode"):
            setattr(m, name, getattr(conv, name))
        m.config = config
        kws = [{} if hessians is None else dict(hessian=h, damp=damp) for h in hessians or
               [None] * conv.groups]
        weight = conv.weight.detach()
        m.convs = nn.ModuleList(cls._layer._converted(_group_view(conv, weight, i), config,
                                                      **kws[i]) for i in range(conv.groups))
        return m

    @property
    def weight(self) -> QuantizedWeight:
        """The float layer's weight [N, C / groups, *kernel] as metadata for model code that
        reads it; its values, on any use, are ``dequantize_weight()`` (as QuantConv2d's)."""
        return _grouped_weight_view(self)

    @property
    def bias(self):
        biases = [c.bias for c in self.convs]
        return None if biases[0] is None else torch.cat(biases)

    def dequantize_weight(self) -> torch.Tensor:
        """float32 [N, C / groups, *kernel]: the groups' exact weights (QuantConv2d's)."""
        return torch.cat([c.dequantize_weight() for c in self.convs])

    def _geometry(self):
        return self.convs[0]._geometry()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, unbatched = batched_image(x, self.in_channels)
        y = self._native(x)
        if y is None:  # each group's own layer on its channel slice
            g = self._geometry()  # (an input too small: said of the whole, not of a slice)
            if x.is_floating_point() and smaller_than_kernel(g, *_pad(g, x)):
                raise ValueError(f"x: input of shape {tuple(x.shape)} is smaller than the kernel "
                                 f"{self.kernel_size} (dilation {self.dilation}) after padding")
            cg = self.in_channels // self.groups
            y = torch.cat([QuantConv2d.forward(c, x[:, i * cg:(i + 1) * cg])
                           for i, c in enumerate(self.convs)], dim=1)
        return y[0] if unbatched else y

    def _native(self, x: torch.Tensor):
        """Every group in one native call, or None (module docstring)."""
        first = self.convs[0]
        if not x.is_floating_point() or (torch.is_grad_enabled() and x.requires_grad) \
                or _tracing():  # (the groups' own forwards raise, guard or trace)
            return None
        args = [c.grouped_args(check_tracing=False) for c in self.convs]
        if any(a is None for a in args):
            return None
        g = self._geometry()
        xp, pad = _pad(g, x)
        if smaller_than_kernel(g, xp, pad):
            return None  # (the groups' forwards say why)
        channels_last = x.stride(1) < x.stride(3)
        geometry = native_conv_geometry(g, pad, channels_last)
        if geometry is None:
            return None
        image = native_conv_image(xp, channels_last)
        pixels = output_pixels(image, self.in_channels, g)
        threads = call_threads(len(self.convs) * first._packed_bytes,
                               pixels * first.in_features_k * self.out_channels)
        y = first.scheme.run_conv_groups(image.detach().numpy(), args, threads, geometry)
        if y is None:  # (a family without the grouped conv call)
            return None
        y = torch.from_numpy(y)
        y = y.permute(0, 3, 1, 2) if channels_last else y
        return y.to(_out_dtype(x))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.convs[0].bias is not None}, "
                f"{self.convs[0]._config_repr()}")


class QuantGroupedConv1d(QuantGroupedConv2d):
    """Quantized ``nn.Conv1d`` with ``groups > 1``: QuantGroupedConv2d on [B, C, 1, L], its
    groups QuantConv1d layers."""

    _layer = QuantConv1d
    _float = nn.Conv1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv1d_forward(super().forward, x, self.in_channels)
