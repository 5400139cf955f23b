"""QuantMultiheadAttention: ``nn.MultiheadAttention`` with its projections on pyquant's kernels.

nn.MultiheadAttention keeps its q/k/v projections as one raw ``in_proj_weight`` [3E, E] (or three
``*_proj_weight`` when kdim/vdim differ) and reads ``out_proj.weight`` directly: none of it is an
nn.Linear call, so converting Linear layers leaves a third of every nn.Transformer / ViT block
float (PyTorch's own quantize_dynamic does too). Here the four projections are QuantLinear
layers; q, k and v run as one grouped native call (the same bits as three calls), the
attention itself is PyTorch's (``F.scaled_dot_product_attention``, or an explicit softmax when
the weights are asked for). The forward keeps nn.MultiheadAttention's signature, masks, and
``batch_first`` / unbatched layouts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _load
from .grouped import _rows, run_groups
from .modules import QuantLinear, _check_device

_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def is_mha(module: nn.Module) -> bool:
    """nn.MultiheadAttention itself, or a subclass that keeps its forward."""
    return isinstance(module, nn.MultiheadAttention) \
        and type(module).forward is nn.MultiheadAttention.forward


def _additive(mask, name: str, dtype: torch.dtype):
    """A mask as the float that is added to the scores: bool True (masked out) -> -inf."""
    if mask is None:
        return None
    _check_device(mask, name)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(f"{name}: expected a bool or floating-point mask, got {mask.dtype}")
    return mask


class QuantMultiheadAttention(nn.Module):
    """Quantized nn.MultiheadAttention (see the module docstring); built by quantize_.

    ``proj_kw``: per-projection scheme options by name (``"q_proj"``, ..., ``"out_proj"``), e.g.
    a GPTQ ``hessian``.
    """

    # torch's fused encoder fast paths read these float weights; None turns them off
    in_proj_weight = None
    in_proj_bias = None

    def __init__(self, mha: nn.Module, config, proj_kw: dict | None = None):
        super().__init__()
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha: expected an nn.MultiheadAttention, got {type(mha).__name__}")
        kw = proj_kw or {}
        e = mha.embed_dim
        self.embed_dim, self.kdim, self.vdim = e, mha.kdim, mha.vdim
        self.num_heads, self.head_dim = mha.num_heads, mha.head_dim
        self.batch_first, self.dropout = mha.batch_first, mha.dropout
        self.add_zero_attn = mha.add_zero_attn
        self._qkv_same_embed_dim = mha._qkv_same_embed_dim
        self.config = config
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.detach().chunk(3)
        else:
            weights = [getattr(mha, n + "_weight").detach() for n in _PROJECTIONS]
        biases = ([None] * 3 if mha.in_proj_bias is None
                  else mha.in_proj_bias.detach().chunk(3))
        for name, w, b, k in zip(_PROJECTIONS, weights, biases, (e, self.kdim, self.vdim)):
            setattr(self, name, QuantLinear(k, e, w, b, config, **kw.get(name, {})))
        self.out_proj = QuantLinear.from_linear(mha.out_proj, config, **kw.get("out_proj", {}))
        for name in ("bias_k", "bias_v"):
            t = getattr(mha, name)
            self.register_buffer(name, None if t is None else t.detach().clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a file's bias_k / bias_v are checked as every quantized layer's side tensors are
        # (the projections check their own buffers)
        _load.check_float_buffers(self, state_dict, prefix, ("bias_k", "bias_v"))
        _load.as_plain_buffers(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        """nn.MultiheadAttention.forward: ``(attn_output, attn_weights or None)``."""
        for name, t in (("query", query), ("key", key), ("value", value)):
            _check_device(t, name)
            if not t.is_floating_point():
                raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        batched = query.dim() == 3
        self._check_inputs(query, key, value, batched)
        self_attention, same_kv = query is key and key is value, key is value
        if not batched:  # one sequence: a batch of one, in the seq-first layout
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                _check_device(key_padding_mask, "key_padding_mask")
                key_padding_mask = key_padding_mask.unsqueeze(0)
        seq_first = not (self.batch_first and batched)
        seq_dim = 0 if seq_first else 1
        l, b, s = query.shape[seq_dim], query.shape[1 - seq_dim], key.shape[seq_dim]
        q, k, v = self._project_qkv(query, key, value, self_attention, same_kv)

        def batch_major(t, n):  # rows in the input's order -> [B, n, E]
            e = self.embed_dim
            return t.view(n, b, e).transpose(0, 1) if seq_first else t.view(b, n, e)

        q, k, v = batch_major(q, l), batch_major(k, s), batch_major(v, s)
        extra = 0  # key positions appended to every sequence
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.to(k.dtype).expand(b, 1, -1)], 1)
            v = torch.cat([v, self.bias_v.to(v.dtype).expand(b, 1, -1)], 1)
            extra += 1
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(b, 1, k.shape[2])], 1)
            v = torch.cat([v, v.new_zeros(b, 1, v.shape[2])], 1)
            extra += 1
        mask, causal = self._mask(attn_mask, key_padding_mask, is_causal, need_weights,
                                  q.dtype, b, l, s, extra)  # (q's: bf16 under autocast)
        h, d = self.num_heads, self.head_dim
        q, k, v = (t.reshape(b, t.shape[1], h, d).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:  # the explicit softmax (SDPA does not return the weights)
            # as nn.MultiheadAttention's weights path: the mask added inside baddbmm (adding it
            # after the product rounds differently on AVX2 CPUs)
            sk = k.shape[2]
            qs = (q * (1.0 / d) ** 0.5).reshape(b * h, l, d)
            kt = k.reshape(b * h, sk, d).transpose(1, 2)
            if mask is not None:
                scores = torch.baddbmm(mask.expand(b, h, l, sk).reshape(b * h, l, sk).to(qs.dtype),
                                       qs, kt)
            else:
                scores = torch.bmm(qs, kt)
            weights = torch.softmax(scores.view(b, h, l, sk), dim=-1)
            if p > 0.0:
                weights = F.dropout(weights, p=p)
            o = weights @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=causal)
        # [B, H, L, D] -> rows in the input's order
        o = o.permute(2, 0, 1, 3) if seq_first else o.transpose(1, 2)
        out = _rows(self.out_proj, o.reshape(-1, self.embed_dim))
        e = self.embed_dim
        out = out.view(l, b, e) if seq_first else out.view(b, l, e)
        return (out if batched else out.squeeze(1)), weights

    def _project_qkv(self, query, key, value, self_attention: bool, same_kv: bool):
        """q, k, v as rows [*, E] in their inputs' row order: one grouped call when the three
        projections have one shape."""
        layers = [self.q_proj, self.k_proj, self.v_proj]
        xq, xk, xv = (t.reshape(-1, t.shape[-1]) for t in (query, key, value))
        mq, ms = xq.shape[0], xk.shape[0]
        if not (self.kdim == self.vdim == self.embed_dim):
            return tuple(_rows(m, x) for m, x in zip(layers, (xq, xk, xv)))
        if self_attention:
            x, groups = xq, [(0, 0, mq), (1, 0, mq), (2, 0, mq)]
        elif same_kv:
            x, groups = torch.cat([xq, xk]), [(0, 0, mq), (1, mq, ms), (2, mq, ms)]
        else:
            x, groups = torch.cat([xq, xk, xv]), [(0, 0, mq), (1, mq, ms), (2, mq + ms, ms)]
        return run_groups(layers, x, groups).split([mq, ms, ms])

    def _mask(self, attn_mask, key_padding_mask, is_causal: bool, need_weights: bool, dtype,
              b: int, l: int, s: int, extra: int):
        """(the additive mask broadcastable to [B, H, L, S + extra] or None, SDPA's is_causal),
        as nn.MultiheadAttention reads them: ``is_causal`` is a hint that ``attn_mask`` is the
        causal mask, used in its place only where no padding mask and no weights are asked for."""
        if is_causal and attn_mask is None:
            raise ValueError("attn_mask: is_causal=True is a hint that attn_mask is the causal "
                             "mask, and needs it (nn.Transformer.generate_square_subsequent_mask)")
        kpm = _additive(key_padding_mask, "key_padding_mask", dtype)
        if is_causal and kpm is None and not need_weights:
            return None, True
        h = self.num_heads
        mask = _additive(attn_mask, "attn_mask", dtype)
        if mask is not None:
            if mask.dim() == 2 and tuple(mask.shape) == (l, s):
                mask = mask.view(1, 1, l, s)
            elif mask.dim() == 3 and tuple(mask.shape) == (b * h, l, s):
                mask = mask.view(b, h, l, s)
            else:
                raise ValueError(f"attn_mask: expected shape [{l}, {s}] (L, S) or [{b * h}, {l}, "
                                 f"{s}] (batch x num_heads, L, S), got {list(mask.shape)}")
            mask = F.pad(mask, (0, extra)) if extra else mask
        if kpm is not None:
            if tuple(kpm.shape) != (b, s):
                raise ValueError(f"key_padding_mask: expected shape [{b}, {s}] (batch, S), or "
                                 f"[{s}] for unbatched inputs, got {list(kpm.shape)}")
            kpm = (F.pad(kpm, (0, extra)) if extra else kpm).view(b, 1, 1, s + extra)
            mask = kpm if mask is None else mask + kpm
        return mask, False

    def _check_inputs(self, query, key, value, batched: bool) -> None:
        """Shapes nn.MultiheadAttention accepts, else a ValueError naming the argument."""
        dims = 3 if batched else 2
        for name, t, width in (("query", query, self.embed_dim), ("key", key, self.kdim),
                               ("value", value, self.vdim)):
            if t.dim() != dims or t.shape[-1] != width:
                raise ValueError(f"{name}: expected a {dims}-D tensor [..., {width}] (query is "
                                 f"{query.dim()}-D), got shape {list(t.shape)}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"value: expected the sequence and batch dims of key "
                             f"{list(key.shape[:-1])}, got {list(value.shape[:-1])}")
        batch_dim = 0 if self.batch_first else 1
        if batched and query.shape[batch_dim] != key.shape[batch_dim]:
            raise ValueError(f"key: expected batch size {query.shape[batch_dim]} (query's, dim "
                             f"{batch_dim}), got shape {list(key.shape)}")

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"batch_first={self.batch_first}, config={self.config!r}")
