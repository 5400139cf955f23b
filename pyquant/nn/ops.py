"""torch.library custom op wrapping the quantized GEMM, so torch.compile / torch.export see one
opaque op (with a fake implementation for shape propagation) instead of tracing into numpy.

Eager mode never goes through here: modules call ``run`` directly (no dispatcher overhead).
"""
from __future__ import annotations

from typing import Optional

import torch

_RUNNERS: dict[str, tuple] = {}


def register_runner(key: str, scheme, names: tuple, reference: bool) -> None:
    _RUNNERS[key] = (scheme, names, reference)


def run(x, bufs: dict, act_range, bias, n: int, scheme, reference: bool):
    """x [M, K] float32 -> y [M, N] float32: quantized GEMM + float bias."""
    if not reference:
        # one fused kernel call (quantize, GEMM, dequantize + bias) where the scheme has one
        fused = getattr(scheme, "forward_fused", None)
        y = fused(x, bufs, act_range, bias) if fused is not None else None
        if y is not None:
            return y
    y = scheme.forward(x, bufs, act_range, n, x.shape[1], reference)
    if bias is not None:
        y.add_(bias)
    return y


@torch.library.custom_op("pyquant::qgemm", mutates_args=())
def qgemm(x: torch.Tensor, tensors: list[torch.Tensor], act_range: torch.Tensor,
          bias: Optional[torch.Tensor], key: str, n: int) -> torch.Tensor:
    scheme, names, reference = _RUNNERS[key]
    return run(x.contiguous(), dict(zip(names, tensors)), act_range, bias, n, scheme, reference)


@qgemm.register_fake
def _(x, tensors, act_range, bias, key, n):
    return x.new_empty((x.shape[0], n))
