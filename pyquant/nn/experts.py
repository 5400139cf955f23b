"""QuantExperts: a mixture-of-experts block of transformers (>= 5) on pyquant's kernels.

transformers keeps an MoE layer's experts as 3-D parameters of one module (``gate_up_proj``
[E, 2I, H] or ``up_proj``, ``down_proj`` [E, H, I], ``[E, in, out]`` when ``is_transposed``,
optional ``*_bias``), declared by its ``@use_experts_implementation`` decorator. They are most of
an MoE model's weights (Mixtral, Qwen-MoE, OLMoE, gpt-oss, ...), and no nn.Linear: quantize_
would leave them float. QuantExperts holds one QuantLinear per expert and projection and runs
the block's forward contract ``(hidden_states [T, H], top_k_index [T, k], top_k_weights [T, k])
-> [T, H]`` over the experts the tokens were routed to; the gating (``_apply_gate``, ``act_fn``)
and the optional post-expert norm stay the original block's own.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .grouped import run_groups
from .modules import QuantLinear, _check_device


def _up_name(module) -> str:
    return "gate_up_proj" if module.has_gate else "up_proj"


def is_experts(module: nn.Module) -> bool:
    """A transformers MoE experts block with its expert weights as 3-D tensors, whose forward is
    the decorator's (a subclass with a forward of its own, e.g. Ergo's per-expert norm, does work
    QuantExperts would drop: it stays float, with quantize_'s warning)."""
    if not all(hasattr(module, a) for a in ("num_experts", "has_gate", "has_bias", "is_transposed")):
        return False
    if getattr(type(module).forward, "__wrapped__", None) is None:
        return False
    weights = [getattr(module, n, None) for n in (_up_name(module), "down_proj")]
    return all(isinstance(w, torch.Tensor) and w.dim() == 3 and w.shape[0] == module.num_experts
               for w in weights)


class QuantExperts(nn.Module):
    """Quantized MoE experts block (see the module docstring); built by quantize_."""

    def __init__(self, experts: nn.Module, config):
        super().__init__()
        if not is_experts(experts):
            raise TypeError(f"experts: expected a transformers MoE experts block with 3-D expert "
                            f"weights, got {type(experts).__name__}")
        self.num_experts = experts.num_experts
        self.has_gate = experts.has_gate
        self.has_post_expert_norm = getattr(experts, "has_post_expert_norm", False)
        self.config = config
        up = _up_name(experts)
        self.up = self._per_expert(experts, up, config)
        self.down = self._per_expert(experts, "down_proj", config)
        # the block without its expert weights (a copy of the rest: the float block is left
        # whole), its gating and norm run as they were written
        dropped = [p for n, p in experts._parameters.items()
                   if n in (up, "down_proj", up + "_bias", "down_proj_bias")]
        block = copy.deepcopy(experts, {id(p): None for p in dropped})
        block._parameters = {n: p for n, p in block._parameters.items() if p is not None}
        self.block = block

    @staticmethod
    def _per_expert(experts, name: str, config) -> nn.ModuleList:
        w = getattr(experts, name).detach()
        if experts.is_transposed:  # [E, in, out] -> [E, out, in]
            w = w.transpose(1, 2)
        b = getattr(experts, name + "_bias", None) if experts.has_bias else None
        return nn.ModuleList(
            QuantLinear(w.shape[2], w.shape[1], w[e], None if b is None else b[e].detach(), config)
            for e in range(w.shape[0]))

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        _check_device(hidden_states, "hidden_states")
        e_max = self.num_experts  # (expert-parallel sentinels, outside [0, E), are skipped)
        if hidden_states.shape[0] == 1:  # decode: the token's k experts in slot order, no sort
            slots = [(j, e) for j, e in enumerate(top_k_index[0].tolist()) if 0 <= e < e_max]
            experts = [e for _, e in slots]
            up_groups = [(i, 0, 1) for i in range(len(slots))]
            tokens = torch.zeros(len(slots), dtype=torch.long)
            weights = top_k_weights[0, [j for j, _ in slots]]
            x = hidden_states
        else:  # the (token, slot) pairs grouped by expert: one sort
            k = top_k_index.shape[-1]
            flat = top_k_index.reshape(-1)
            pairs = ((flat >= 0) & (flat < e_max)).nonzero().view(-1)
            order = pairs[torch.argsort(flat[pairs], stable=True)]
            ids, counts = torch.unique_consecutive(flat[order], return_counts=True)
            experts, counts = ids.tolist(), counts.tolist()
            starts = [0]
            for n in counts[:-1]:
                starts.append(starts[-1] + n)
            up_groups = [(i, r0, n) for i, (r0, n) in enumerate(zip(starts, counts))]
            tokens = order // k
            weights = top_k_weights.reshape(-1)[order]
            x = hidden_states[tokens]
        out = torch.zeros_like(hidden_states)
        if not experts:
            return out
        h = self._project(self.up, experts, x, up_groups)
        h = self.block._apply_gate(h) if self.has_gate else self.block.act_fn(h)
        # h's rows are in group order: each group's rows are the next ones
        down_groups, r0 = [], 0
        for i, _, n in up_groups:
            down_groups.append((i, r0, n))
            r0 += n
        h = self._project(self.down, experts, h, down_groups)
        if self.has_post_expert_norm:
            h = self.block.post_expert_norm(h)
        out.index_add_(0, tokens, (h * weights[:, None]).to(out.dtype))
        return out

    @staticmethod
    def _project(layers: nn.ModuleList, experts: list, x: torch.Tensor, groups: list) -> torch.Tensor:
        """Rows of x through experts' layers (grouped.run_groups): group (i, r0, n) sends rows
        [r0, r0 + n) to layers[experts[i]]; the outputs in group order."""
        mods = layers._modules  # (ModuleList's own indexing costs ~1.5 us a lookup)
        return run_groups([mods[str(e)] for e in experts], x, groups)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, config={self.config!r}"
