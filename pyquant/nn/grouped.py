"""Several QuantLinear layers of one shape over row ranges of one input, in one native call.

A group ``(i, r0, n)`` sends rows ``[r0, r0 + n)`` of ``x`` through ``layers[i]``; the outputs come
back stacked in group order, in one native call (``scheme.run_grouped``; Int8 and WeightOnly run
all groups in one parallel region, LUT2 and SPARQ group after group); under tracing, calibration
or the reference backend each group is its own layer call. Both give the same bits. Used by QuantExperts (the experts a step routes
to) and QuantMultiheadAttention (the q, k and v projections).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .modules import QuantLinear, _out_dtype, _tracing, call_threads


def _grouped_args(layers: list, x: torch.Tensor):
    """The layers' arguments to one grouped native call, or None where each must run its own
    forward (a layer other than QuantLinear, the reference backend, calibration, tracing, a
    family without a grouped forward, or an input that needs the autograd guard)."""
    if not x.is_floating_point() or (torch.is_grad_enabled() and x.requires_grad) or _tracing():
        return None  # (QuantLinear's own forward raises on those, or on a backward through it)
    args, config = [], getattr(layers[0], "config", None)
    for layer in layers:
        a = layer.grouped_args(check_tracing=False) if isinstance(layer, QuantLinear) else None
        if a is None or (layer.config is not config and layer.config != config):
            return None  # (one call runs one config)
        args.append(a)
    return args


def _rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A QuantLinear's forward without nn.Module's call machinery (~2 us a call; its hooks do not
    run; the caller checks the device once), any other layer's call."""
    return layer.linear_rows(x) if isinstance(layer, QuantLinear) else layer(x)


def run_groups(layers: list, x: torch.Tensor, groups: list) -> torch.Tensor:
    """``x`` [rows, in] (a CPU tensor) through ``layers`` by ``groups`` (module docstring):
    [sum of the groups' n, out]."""
    args = _grouped_args(layers, x)
    if args is None:
        return torch.cat([_rows(layers[i], x[r0:r0 + n]) for i, r0, n in groups])
    xf = x if x.dtype == torch.float32 else x.float()
    first = layers[0]
    distinct = len({i for i, _, _ in groups})
    threads = call_threads(distinct * first._packed_bytes,
                           sum(n for _, _, n in groups) * first.in_features_k * first.out_features)
    y = first.scheme.run_grouped(xf.contiguous().numpy(), args,
                                 np.array(groups, dtype=np.int64).reshape(-1, 3), threads)
    y = torch.from_numpy(y)
    dtype = _out_dtype(x)
    return y if y.dtype == dtype else y.to(dtype)
