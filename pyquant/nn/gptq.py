"""GPTQ (Frantar et al., arXiv 2210.17323) for WeightOnlyConfig: data-aware rounding of the
group-wise low-bit weights, same packed format and kernels as plain round-to-nearest. For
SparqConfig(sparse24=True) the same calibration drives SparseGPT's 2:4 pruning (Frantar and
Alistarh, arXiv 2301.00774) in place of magnitude pruning: same format and kernels too.

    pyquant.nn.gptq_(model, pyquant.WeightOnlyConfig(bits=4, group_size=64), batches)
    pyquant.nn.gptq_(model, pyquant.SparqConfig(sparse24=True), batches)

Each matching nn.Linear (and transformers' Conv1D, and nn.Conv2d / nn.Conv1d over its im2col
rows in QuantConv2d's K order; a grouped conv per group, over its channel slice, where those
Hessians fit in 1 GiB, else round-to-nearest) records ``H = sum x^T x`` over its inputs on the calibration
batches (float model, all layers at once); then its columns are quantized left to right, each
column's rounding error spread over the not-yet-quantized columns through the inverse Hessian's
Cholesky factor.
Blocks are one group wide, so each group's scale is chosen (MSE clipping search) on the weights
as updated so far.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .api import _convert, _default_filter_for, _warn_left_float, convertible, is_conv1d, run_batch
from .fold_bn import check_fold_option, fold_batchnorm_
from .configs import SparqConfig, WeightOnlyConfig
from .attention import QuantMultiheadAttention, is_mha
from .experts import QuantExperts, is_experts
from .recurrent import QuantRNN, is_rnn
from .conv_gain import group_k
from .grouped_conv import QuantGroupedConv1d, QuantGroupedConv2d
from .modules import QuantConv1d, QuantConv2d, QuantLinear, conv1d_geometry, im2col
from .schemes import best_clip, bf16_round


def _group_scale(w, bits):
    """MSE-best symmetric scale per row for one group w [N, g]."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    amax = w.abs().amax(1, keepdim=True).clamp(min=1e-12)

    def candidate(r):
        s = bf16_round(amax * r / max(qmax, 1)).to(w.dtype)  # scales are stored as bfloat16
        return s, ((torch.round(w / s).clamp(qmin, qmax) * s - w) ** 2).sum(1, keepdim=True)

    best_s = best_clip(torch.linspace(1.0, 0.5 if bits == 4 else 0.3, 11).tolist(), candidate)
    return best_s.view(-1)


def _inverse_factor(w: torch.Tensor, hessian: torch.Tensor, damp: float):
    """(w as float64 with the columns no input reached zeroed, the upper Cholesky factor of the
    damped H^-1): what both column sweeps below start from."""
    w = w.detach().double().clone()
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    return w, torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


def gptq_weight(w: torch.Tensor, hessian: torch.Tensor, bits: int, gs: int, damp: float = 0.2):
    """(codes int8 [N, K], bf16-exact scales float32 [N, G]) for w [N, K] given H = X^T X [K, K]."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    w, hinv = _inverse_factor(w, hessian, damp)
    n, k = w.shape
    codes = torch.zeros(n, k, dtype=torch.int8)
    scales = []
    for i1 in range(0, k, gs):
        i2 = min(i1 + gs, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        s = _group_scale(w1, bits)
        scales.append(s)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            c = torch.round(col / s).clamp(qmin, qmax)
            codes[:, i1 + i] = c.to(torch.int8)
            e = (col - c * s) / h1[i, i]
            w1[:, i:] -= e[:, None] * h1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes, torch.stack(scales, 1).float()


def sparsegpt_24(w: torch.Tensor, hessian: torch.Tensor, damp: float = 0.2, block: int = 128):
    """SparseGPT's 2:4 pruning of w [N, K] given H = X^T X [K, K]: float32 [N, K] with at most two
    non-zeros in every aligned group of 4 along K (a partial last group keeps at most two).

    Columns are visited left to right; at each group's first column the two weights with the
    smallest OBS saliency w^2 / [H^-1]_jj^2 (of the weights as updated so far) are chosen for
    pruning, and each column's pruning error is spread over the columns not yet visited through
    the Cholesky factor of H^-1, as GPTQ spreads rounding errors. With H a multiple of the
    identity this is magnitude pruning (up to the order of exact ties). ``damp`` as in gptq_
    (0.2: 0.826 mean cosine on all-MiniLM-L6-v2 with 32 calibration sentences, against
    0.82-0.83 for 0.1-0.5 and 0.660 for magnitude pruning)."""
    if block <= 0 or block % 4:
        raise ValueError(f"block: expected a positive multiple of 4, got {block}")
    w, hinv = _inverse_factor(w, hessian, damp)
    n, k = w.shape
    for i1 in range(0, k, block):  # block: a multiple of 4, so groups never straddle blocks
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        d = torch.diag(h1)
        prune = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if i % 4 == 0 and i2 - i1 - i > 2:  # this group's two least salient (of up to 4)
                j = min(i + 4, i2 - i1)
                saliency = w1[:, i:j] ** 2 / d[i:j] ** 2
                low = torch.topk(saliency, j - i - 2, dim=1, largest=False).indices
                prune[:, i:j].scatter_(1, low, True)
            col = w1[:, i]
            kept = torch.where(prune[:, i], torch.zeros_like(col), col)
            e = (col - kept) / h1[i, i]
            w1[:, i:] -= e[:, None] * h1[i, i:][None, :]
            w1[:, i] = kept
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w.float()


_MAX_GROUPED_HESSIAN_BYTES = 1 << 30


def _grouped_hessians_fit(conv: nn.Module) -> bool:
    """A grouped conv's per-group float64 Hessians (groups x K^2 x 8 bytes) within 1 GiB in all;
    beyond, the layer is converted round-to-nearest (wav2vec2-base's positional conv would need
    16 x 6144^2 x 8 = 4.8 GB and 16 Cholesky factorizations of 6144 x 6144)."""
    return conv.groups * group_k(conv) ** 2 * 8 <= _MAX_GROUPED_HESSIAN_BYTES


def gptq_(model: nn.Module, config: WeightOnlyConfig | SparqConfig, batches: Iterable, *,
          filter_fn: Callable | None = None, damp: float = 0.2,
          fold_batchnorm: bool | str = True) -> nn.Module:
    """quantize_ for WeightOnlyConfig with GPTQ rounding from calibration `batches` (tensors,
    tuples of positional args or mappings of keyword args), or for SparqConfig(sparse24=True)
    with SparseGPT's 2:4 pruning; layers that saw no input fall back to round-to-nearest /
    magnitude pruning, and so do MoE experts blocks (each expert sees only the tokens routed to
    it), recurrent layers (nn.LSTM/GRU/RNN), a MultiheadAttention's out_proj (its q/k/v projections get GPTQ from the query, key
    and value inputs) and grouped convs whose per-group Hessians would pass 1 GiB. Returns the model (the root swapped if it is itself a layer).

    ``damp``: added to H's diagonal as a fraction of its mean. Larger than the paper's 0.01
    because a few hundred calibration tokens leave H (K up to 1536) rank-deficient; on MiniLM
    with 32 calibration sentences 0.003/0.01/0.05/0.2 gave 0.970/0.976/0.980/0.982 mean cosine.
    ``fold_batchnorm`` as in quantize_.
    """
    sparse24 = isinstance(config, SparqConfig) and config.sparse24
    if not (isinstance(config, WeightOnlyConfig) or sparse24):
        raise TypeError("config: GPTQ applies to WeightOnlyConfig (and SparseGPT to "
                        f"SparqConfig(sparse24=True)), got {config!r}")
    check_fold_option(fold_batchnorm)
    if filter_fn is None:
        _warn_left_float(model, "gptq_", config)
        filter_fn = _default_filter_for(config)
    hess: dict[nn.Module, torch.Tensor] = {}

    def accumulate(key, x):
        h = hess.get(key, 0)
        for r in range(0, x.shape[0], 4096):  # float64 a few rows at a time (im2col rows are many)
            xc = x[r:r + 4096].double()
            h = h + xc.T @ xc
        hess[key] = h

    def hook(mod, args, kwargs):
        if is_mha(mod):  # q, k and v see query, key and value (positional or by keyword)
            for i, name in enumerate(("query", "key", "value")):
                x = (args[i] if i < len(args) else kwargs[name]).detach()
                accumulate((mod, name[0] + "_proj"), x.reshape(-1, x.shape[-1]))
            return
        x = (args[0] if args else next(iter(kwargs.values()))).detach()  # (input by keyword)
        if isinstance(mod, (nn.Conv2d, nn.Conv1d)):  # the GEMM's rows: im2col in QuantConv2d's
            if isinstance(mod, nn.Conv1d):           # K order (Conv1d: on [B, C, 1, L])
                x = (x if x.dim() == 3 else x.unsqueeze(0)).unsqueeze(2)
                geometry = conv1d_geometry(mod)
            else:
                x, geometry = (x if x.dim() == 4 else x.unsqueeze(0)), mod
            cg = mod.in_channels // mod.groups  # a grouped conv: one Hessian per group
            if mod.groups > 1 and not _grouped_hessians_fit(mod):
                return  # (round-to-nearest: see _grouped_hessians_fit)
            for i in range(mod.groups):
                key = mod if mod.groups == 1 else (mod, i)
                accumulate(key, im2col(geometry, x[:, i * cg:(i + 1) * cg])[0])
            return
        accumulate(mod, x.reshape(-1, x.shape[-1]))

    def quantizable(m, fqn):
        return convertible(m) and filter_fn(m, fqn)

    on_meta = [fqn or "(root)" for fqn, m in model.named_modules()
               if any(p.is_meta for p in m.parameters(recurse=False))]
    if on_meta:  # (quantize_ makes layers that await a quantized state dict of such a model)
        raise ValueError(f"gptq_: {len(on_meta)} module(s) have weights on the meta device "
                         f"({', '.join(on_meta[:4])}{', ...' if len(on_meta) > 4 else ''}): GPTQ "
                         "fits the weights to calibration data; load the float weights first")
    # (before the hooks: GPTQ rounds the folded weights)
    fold_batchnorm_(model, quantizable, fold_batchnorm, "gptq_")
    # MoE experts blocks see no Hessian of their own (each expert sees only its routed tokens):
    # they are converted round-to-nearest / magnitude-pruned, as are recurrent layers (their
    # state inputs are no module's input); so is a MultiheadAttention's
    # out_proj (its input, the attention output, is never a module's input)
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True)
               for name, m in model.named_modules()
               if quantizable(m, name) and not (is_experts(m) or is_rnn(m))]
    try:
        with torch.no_grad():
            for b in batches:
                run_batch(model, b)
    finally:
        for h in handles:
            h.remove()
    names = {m: fqn or type(m).__name__ for fqn, m in model.named_modules()}
    for key, h in hess.items():
        mod = key[0] if isinstance(key, tuple) else key
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"gptq_: module {names[mod]!r} saw non-finite calibration inputs "
                             "(NaN or inf); no layer was converted")

    def handler(mod, cfg):
        kw = dict(hessian=hess[mod], damp=damp) if mod in hess else {}
        if isinstance(mod, (nn.Conv2d, nn.Conv1d)) and mod.groups > 1:
            cls = QuantGroupedConv2d if isinstance(mod, nn.Conv2d) else QuantGroupedConv1d
            hessians = [hess.get((mod, i)) for i in range(mod.groups)]
            if any(h is None for h in hessians):  # (a conv no calibration batch reached)
                return cls.from_conv(mod, cfg)
            return cls.from_conv(mod, cfg, hessians=hessians, damp=damp)
        if isinstance(mod, nn.Conv2d):
            return QuantConv2d.from_conv(mod, cfg, **kw)
        if isinstance(mod, nn.Conv1d):
            return QuantConv1d.from_conv(mod, cfg, **kw)
        if is_conv1d(mod):
            return QuantLinear.from_conv1d(mod, cfg, **kw)
        if is_experts(mod):
            return QuantExperts(mod, cfg)
        if is_rnn(mod):
            return QuantRNN(mod, cfg)
        if is_mha(mod):
            return QuantMultiheadAttention(mod, cfg, {
                name: dict(hessian=hess[mod, name], damp=damp)
                for name in ("q_proj", "k_proj", "v_proj") if (mod, name) in hess})
        return QuantLinear.from_linear(mod, cfg, **kw)

    return _convert(model, config, handler, quantizable)
