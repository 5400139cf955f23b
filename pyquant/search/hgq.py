"""HGQ-style quantization-aware training with learnable widths, for Linear layers / MLPs.

Each HGQLinear learns one width per group of output channels (groups=1: per layer), projected onto
{2, 4, 8} in the forward pass. Input activations are 8-bit fixed point (what the W*A8 kernels take)
with integer bits from the range observed in the current epoch (HGQ resets min/max per epoch).
The trainer adds beta * cost / cost(uniform 8) to the loss, ramps beta on a log scale in one run,
and keeps every checkpoint on the (validation accuracy, size) Pareto front.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .deploy import DeployedMLP
from .latency import shape_key
from .quantizers import (KERNEL_WIDTHS, integer_bits, project_width, quantize_signed,
                         quantize_unsigned, scale_grad)

BIAS_BITS = 32



def beta_schedule(epoch: int, epochs: int, warmup: int, beta0: float, beta1: float) -> float:
    """The size-penalty weight: 0 during warm-up, then geometric from beta0 to beta1."""
    if epoch < warmup:
        return 0.0
    t = (epoch - warmup) / max(1, epochs - warmup - 1)
    return math.exp(math.log(beta0) + t * (math.log(beta1) - math.log(beta0)))

class HGQLinear(nn.Module):
    """nn.Linear with fake-quantized weights (learnable width per output-channel group, integer
    bits per row from its range) and 8-bit fixed-point inputs; `freeze()` gives the integer codes
    the kernels run."""

    def __init__(self, linear: nn.Linear, groups: int = 1, init_bits: float = 8.0,
                 a_bits: int = 8, a_signed: bool = False, relu: bool = False):
        super().__init__()
        n, k = linear.weight.shape
        if not 1 <= groups <= n:
            raise ValueError(f"groups: expected 1..{n}, got {groups}")
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())
        self.bits = nn.Parameter(torch.full((groups,), float(init_bits)))
        # contiguous output-channel groups (deployment runs one GEMM per width over its rows)
        self.register_buffer("row_group", torch.arange(n) * groups // n)
        self.register_buffer("act_max", torch.zeros(()))
        self.a_bits, self.a_signed, self.relu = a_bits, a_signed, relu

    @property
    def group_sizes(self) -> torch.Tensor:  # weights per group
        return torch.bincount(self.row_group, minlength=self.bits.numel()) * self.weight.shape[1]

    def projected_bits(self) -> torch.Tensor:
        return project_width(self.bits)

    def row_bits(self) -> torch.Tensor:
        return self.projected_bits()[self.row_group]

    def act_f(self) -> float:
        i = integer_bits(self.act_max)
        return float(self.a_bits - (1 if self.a_signed else 0) - i)

    def forward(self, x):
        if self.training:
            self.act_max = torch.maximum(self.act_max, x.detach().abs().max())
        i_a = integer_bits(self.act_max)
        ab = torch.tensor(float(self.a_bits))
        xq = quantize_signed(x, ab, i_a) if self.a_signed else quantize_unsigned(x, ab, i_a)
        # 1/sqrt(n): a width shared by n weights gets the sum of n surrogate gradients
        n = self.group_sizes.to(self.bits.dtype)
        b = project_width(scale_grad(self.bits, 1.0 / torch.sqrt(n)))
        b_rows = b[self.row_group][:, None]
        wq = quantize_signed(self.weight, b_rows, integer_bits(self.weight, dim=1))
        y = F.linear(xq, wq, self.bias)
        return F.relu(y) if self.relu else y

    def size_bits(self) -> torch.Tensor:
        """Weight bits at the projected widths (differentiable in bits via STE) + int32 biases."""
        return (self.projected_bits() * self.group_sizes).sum() + BIAS_BITS * self.bias.numel()

    def ebops(self) -> torch.Tensor:
        """EBOPs per sample: sum over multiplies of b_w * b_a (no accumulation cost)."""
        return (self.projected_bits() * self.group_sizes).sum() * self.a_bits

    def freeze(self) -> dict:
        """Integer codes for deployment (pyquant.search.deploy.DeployedMLP layer dict)."""
        with torch.no_grad():
            rb = self.row_bits()
            i_w = integer_bits(self.weight, dim=1)[:, 0]
            f_w = rb - 1 - i_w
            qmax = 2.0 ** (rb - 1)
            codes = torch.clamp(torch.round(self.weight * 2.0 ** f_w[:, None]), -qmax[:, None],
                                qmax[:, None] - 1)
            return {
                "w_codes": codes.to(torch.int8).numpy(), "row_bits": rb.to(torch.int64).numpy(),
                "w_step": (2.0 ** (-f_w)).double().numpy(), "bias": self.bias.double().numpy(),
                "a_f": self.act_f(), "a_bits": self.a_bits, "a_signed": self.a_signed,
                "relu": self.relu,
            }


class HGQMLP(nn.Module):
    """A float MLP (nn.Sequential of Linear/ReLU) turned into HGQLinear layers."""

    def __init__(self, float_mlp: nn.Sequential, groups: int = 1, init_bits: float = 8.0):
        super().__init__()
        mods = list(float_mlp)
        layers = []
        for j, m in enumerate(mods):
            if isinstance(m, nn.Linear):
                relu = j + 1 < len(mods) and isinstance(mods[j + 1], nn.ReLU)
                first = not layers
                layers.append(HGQLinear(m, groups, init_bits, a_signed=first, relu=relu))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for L in self.layers:
            x = L(x)
        return x

    def size_bits(self):
        return sum(L.size_bits() for L in self.layers)

    def ebops(self):
        return sum(L.ebops() for L in self.layers)

    def set_uniform(self, bits: int, freeze: bool = True):
        for L in self.layers:
            L.bits.data.fill_(float(bits))
            L.bits.requires_grad_(not freeze)

    def config(self) -> dict:
        return {f"fc{j}": [int(b) for b in L.projected_bits().tolist()]
                for j, L in enumerate(self.layers)}

    def reset_ranges(self):
        for L in self.layers:
            L.act_max.zero_()

    def deploy(self) -> DeployedMLP:
        return DeployedMLP([L.freeze() for L in self.layers])


def latency_cost(model: HGQMLP, table: dict, m: int = 1) -> torch.Tensor:
    """Sum over layers of the measured time at each group's width, weighted by its share of rows;
    piecewise-linear in the continuous width so the cost has a gradient (value at the projection)."""
    total = 0.0
    for L in model.layers:
        n, k = L.weight.shape
        ts = table["entries"][shape_key(m, n, k)]  # {"2": seconds, "4": ..., "8": ...}
        ws = sorted(int(w) for w in ts)
        frac = torch.bincount(L.row_group, minlength=L.bits.numel()).to(L.bits.dtype) / n
        b = L.bits.clamp(ws[0], ws[-1])
        interp = torch.zeros_like(b)
        for lo, hi in zip(ws[:-1], ws[1:]):
            seg = (b >= lo) & (b <= hi)
            val = ts[str(lo)] + (b - lo) * (ts[str(hi)] - ts[str(lo)]) / (hi - lo)
            interp = torch.where(seg, val, interp)
        proj = L.projected_bits().detach()
        at_proj = torch.tensor([ts[str(int(p))] for p in proj.tolist()], dtype=b.dtype)
        total = total + ((interp + (at_proj - interp).detach()) * frac).sum()
    return total


@dataclass
class Checkpoint:
    epoch: int
    beta: float
    size_bits: int
    val_acc: float
    config: dict
    state: dict = field(repr=False)


def pareto_insert(front: list, cp: Checkpoint) -> list:
    """Keep only non-dominated checkpoints (size down, accuracy up)."""
    for o in front:
        if o.size_bits <= cp.size_bits and o.val_acc >= cp.val_acc:
            return front
    return [o for o in front if not (cp.size_bits <= o.size_bits and cp.val_acc >= o.val_acc)] + [cp]


def accuracy(model, x, y) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train(was)
    return acc


class HGQTrainer:
    """One run, beta ramped log-linearly from beta0 to beta1; Pareto checkpoints on validation."""

    def __init__(self, model: HGQMLP, cost: str = "size", beta0: float = 1e-4, beta1: float = 1.0,
                 epochs: int = 200, lr: float = 1e-3, lr_bits: float = 0.05, batch: int = 64,
                 warmup: int = 5, latency_table: dict | None = None, seed: int = 0):
        if cost not in ("size", "ebops", "latency"):
            raise ValueError(f"cost: expected 'size', 'ebops' or 'latency', got {cost!r}")
        if cost == "latency" and latency_table is None:
            raise ValueError("latency_table: required for cost='latency'")
        self.model, self.cost, self.epochs = model, cost, epochs
        self.beta0, self.beta1, self.warmup = beta0, beta1, warmup
        self.batch, self.seed, self.table = batch, seed, latency_table
        bit_params = [L.bits for L in model.layers]
        other = [p for n, p in model.named_parameters() if not n.endswith("bits")]
        self.opt = torch.optim.Adam([{"params": other, "lr": lr},
                                     {"params": bit_params, "lr": lr_bits}])
        with torch.no_grad():
            self.ref = float(self._cost())  # cost at the start (uniform init_bits): beta is scale-free

    def _cost(self):
        if self.cost == "size":
            return self.model.size_bits()
        if self.cost == "ebops":
            return self.model.ebops()
        return latency_cost(self.model, self.table)

    def beta(self, epoch: int) -> float:
        return beta_schedule(epoch, self.epochs, self.warmup, self.beta0, self.beta1)

    def fit(self, xtr, ytr, xval, yval, progress=None) -> list:
        g = torch.Generator().manual_seed(self.seed)
        front: list = []
        m = self.model
        for epoch in range(self.epochs):
            beta = self.beta(epoch)
            m.train()
            m.reset_ranges()
            perm = torch.randperm(len(xtr), generator=g)
            for s in range(0, len(xtr), self.batch):
                idx = perm[s:s + self.batch]
                loss = F.cross_entropy(m(xtr[idx]), ytr[idx])
                if beta > 0:
                    loss = loss + beta * self._cost() / self.ref
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                with torch.no_grad():
                    for L in m.layers:
                        L.bits.clamp_(min(KERNEL_WIDTHS) - 0.5, max(KERNEL_WIDTHS) + 0.5)
            acc = accuracy(m, xval, yval)
            size = int(m.size_bits().item())
            cp = Checkpoint(epoch, beta, size, acc, m.config(), copy.deepcopy(m.state_dict()))
            front = pareto_insert(front, cp)
            if progress is not None:
                progress(epoch, beta, size, acc)
        return sorted(front, key=lambda c: c.size_bits)
