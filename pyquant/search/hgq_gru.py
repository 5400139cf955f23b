"""HGQ for the integer GRU: the 17 per-operator widths of QuantGRU (plus the head's) learned
with HGQ's surrogate gradient (algorithms.md section 6), then deployed as a QuantGRU.

HGQGRU is a float fake-quant twin of QuantGRU + QuantHead: the same quantization points, scales
and clamps (QuantGRU's integer maths rounds at exactly these points; it differs from the twin only
by the integer biases' and multipliers' rounding), so the loss sees the model that is deployed.
Each operator has one learnable width b:
  - forward: b projected onto its allowed widths ({2, 4, 8} for the six matmuls and the head,
    2..8 for the rest) with a straight-through estimator;
  - backward: the quantizer's surrogate d x_q / d b = -ln2 * (x_q - x) (HGQ's gradient for the
    fractional bits: the integer bits come from ranges, so d/db = d/df), scaled by 1/sqrt(n) for a
    width shared by n values (n = weights of the matrix, or features per step for activations).
The cost is the deployed model size (gru_size_bits + head) / its uniform-8 value, added with
beta ramped on a log scale; every epoch's deployed model is a candidate for the Pareto front
(deployed integer accuracy on the selection split vs size).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn.gru import GRU_OPS, MATMUL_OPS, PRE_CAP, QuantGRU, calibrate, gru_size_bits
from .deploy import QuantHead
from .quantizers import KERNEL_WIDTHS, LN2, project_width, scale_grad

OPS = tuple(GRU_OPS) + ("head",)
ACT_WIDTHS = tuple(range(2, 9))


def fake_quant(x: torch.Tensor, b: torch.Tensor, step: torch.Tensor, lo, hi,
               half_up: bool = False, levels=None) -> torch.Tensor:
    """clamp(round(x / step), lo, hi) * step; gradient 1 for x (straight-through) and HGQ's
    -ln2 * (x_q - x) for b (step = range * 2^-b up to the constant: the fractional bits).
    half_up: ties round up, as QuantGRU's requantization (weights round half to even, as
    torch.round in its conversion). levels: codes = round(x * levels), step 1 / levels, the way
    QuantGRU's lookup tables are built (sigmoid(0) * 15 = 7.5 is a tie, and only the product
    lands on it exactly)."""
    v = x.detach() * levels if levels is not None else x.detach() / step
    q = torch.clamp(torch.floor(v + 0.5) if half_up else torch.round(v), lo, hi) * step
    prod = (q - x.detach()) * b * LN2
    # value exactly q (x - x.detach() and prod - prod.detach() are exact zeros: the twin stays on
    # the integer model's grid), gradients 1 for x and -ln2 * (q - x) for b
    return q + (x - x.detach()) - (prod - prod.detach())


def _qs(b):  # qmax_signed on a (projected, integer-valued) tensor width
    return torch.pow(2.0, b.detach() - 1) - 1


def _qu(b):
    return torch.pow(2.0, b.detach()) - 1


def _size_bits(bits: dict, i: int, h: int, n_out: int):
    """gru_size_bits + the head, differentiable in the (projected, STE) widths."""
    s = h * i * (bits["w_ir"] + bits["w_iz"] + bits["w_in"])
    s = s + h * h * (bits["w_hr"] + bits["w_hz"] + bits["w_hn"])
    for a, o in (("add_r", "sig_r"), ("add_z", "sig_z"), ("add_n", "tanh_n")):
        s = s + torch.pow(2.0, bits[a]) * bits[o]
    return s + 32 * 6 * h + n_out * h * bits["head"] + 32 * n_out


class HGQGRU(nn.Module):
    """Fake-quant twin of QuantGRU + QuantHead with one learnable width per operator."""

    def __init__(self, gru: nn.GRU, head: nn.Linear, init_bits: float = 8.0):
        super().__init__()
        if gru.num_layers != 1 or gru.bidirectional or not gru.bias or not gru.batch_first:
            raise ValueError("gru: a single-layer, unidirectional, batch_first nn.GRU with bias")
        self.input_size, self.hidden_size, self.n_out = gru.input_size, gru.hidden_size, head.out_features
        self.w_ih = nn.Parameter(gru.weight_ih_l0.detach().clone())
        self.w_hh = nn.Parameter(gru.weight_hh_l0.detach().clone())
        self.b_ih = nn.Parameter(gru.bias_ih_l0.detach().clone())
        self.b_hh = nn.Parameter(gru.bias_hh_l0.detach().clone())
        self.head_w = nn.Parameter(head.weight.detach().clone())
        self.head_b = nn.Parameter(head.bias.detach().clone())
        self.bits = nn.Parameter(torch.full((len(OPS),), float(init_bits)))
        self.ranges: dict | None = None

    # -- widths ---------------------------------------------------------------------------------
    @staticmethod
    def allowed(op: str):
        return KERNEL_WIDTHS if op in MATMUL_OPS or op == "head" else ACT_WIDTHS

    def projected(self, grad_scale: dict | None = None) -> dict:
        """{op: projected width (STE)}; grad_scale {op: s} scales each width's gradient."""
        out = {}
        for j, op in enumerate(OPS):
            b = self.bits[j]
            if grad_scale is not None:
                b = scale_grad(b, grad_scale[op])
            out[op] = project_width(b, self.allowed(op))
        return out

    def config(self) -> dict:
        with torch.no_grad():
            return {op: int(v) for op, v in self.projected().items()}

    def clamp_bits(self) -> None:
        with torch.no_grad():
            for j, op in enumerate(OPS):
                ws = self.allowed(op)
                self.bits[j].clamp_(min(ws) - 0.5, max(ws) + 0.5)

    def size_bits(self):
        return _size_bits(self.projected(), self.input_size, self.hidden_size, self.n_out)

    # -- float <-> deployed ---------------------------------------------------------------------
    def to_float(self) -> tuple[nn.GRU, nn.Linear]:
        gru = nn.GRU(self.input_size, self.hidden_size, batch_first=True)
        head = nn.Linear(self.hidden_size, self.n_out)
        with torch.no_grad():
            gru.weight_ih_l0.copy_(self.w_ih), gru.weight_hh_l0.copy_(self.w_hh)
            gru.bias_ih_l0.copy_(self.b_ih), gru.bias_hh_l0.copy_(self.b_hh)
            head.weight.copy_(self.head_w), head.bias.copy_(self.head_b)
        return gru, head

    def observe_ranges(self, x: torch.Tensor) -> None:
        """Ranges (absmax) from a float pass on x, as QuantGRU's calibration takes them; HGQ
        re-observes them every epoch."""
        gru, _ = self.to_float()
        self.ranges = calibrate(gru, x)

    def deploy(self) -> tuple[QuantGRU, QuantHead]:
        gru, head = self.to_float()
        w = self.config()
        q = QuantGRU.from_gru(gru, {op: w[op] for op in GRU_OPS}, ranges=self.ranges)
        return q, QuantHead(head, w["head"])

    # -- fake-quant forward ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, T, I] -> logits [B, n_out] (head on the last state)."""
        H, I = self.hidden_size, self.input_size
        rg = self.ranges
        n_w = {op: (H * I if op.startswith("w_i") else H * H) for op in MATMUL_OPS}
        scale = {op: 1.0 / math.sqrt(n_w.get(op, H)) for op in OPS}
        scale["head"] = 1.0 / math.sqrt(self.n_out * H)
        b = self.projected(scale)
        sx = rg["x"] / 127.0
        xq = torch.clamp(torch.round(x / sx), -127, 127) * sx  # fixed 8 bits, no gradient to x

        def wq(w, bb):  # per-row symmetric codes, as _weight_codes
            q = _qs(bb)
            step = (w.detach().abs().amax(1, keepdim=True) / q).clamp_min(1e-12)
            return fake_quant(w, bb, step, -q, q)

        wi = torch.cat([wq(self.w_ih[j * H:(j + 1) * H], b["w_i" + g]) for j, g in enumerate("rzn")])
        wh = torch.cat([wq(self.w_hh[j * H:(j + 1) * H], b["w_h" + g]) for j, g in enumerate("rzn")])
        gi_all = xq @ wi.T + self.b_ih  # [B, T, 3H]

        def sq(v, bb, rng):  # signed activation with a fixed range
            q = _qs(bb)
            return fake_quant(v, bb, max(rng, 1e-6) / q, -q, q, half_up=True)

        def uq(v, bb):  # unsigned in [0, 1] (1 - z)
            q = _qu(bb)
            return fake_quant(v, bb, 1.0 / q, 0 * q, q, half_up=True)

        def lut(v, bb, signed):  # a lookup-table output: round(fn(code * s) * levels)
            q = _qs(bb) if signed else _qu(bb)
            return fake_quant(v, bb, 1.0 / q, -q if signed else 0 * q, q, levels=q)

        h = torch.zeros(x.shape[0], H)
        for t in range(x.shape[1]):
            gi = gi_all[:, t]
            gh = h @ wh.T + self.b_hh
            pr = sq(gi[:, :H] + gh[:, :H], b["add_r"], min(rg["add_r"], PRE_CAP))
            pz = sq(gi[:, H:2 * H] + gh[:, H:2 * H], b["add_z"], min(rg["add_z"], PRE_CAP))
            r, z = lut(torch.sigmoid(pr), b["sig_r"], False), lut(torch.sigmoid(pz), b["sig_z"], False)
            rn = sq(r * gh[:, 2 * H:], b["mul_rn"], rg["mul_rn"])
            pn = sq(gi[:, 2 * H:] + rn, b["add_n"], min(rg["add_n"], PRE_CAP))
            n = lut(torch.tanh(pn), b["tanh_n"], True)
            omz = uq(1 - z, b["one_minus_z"])
            h = sq(sq(omz * n, b["mul_zn"], 1.0) + sq(z * h, b["mul_zh"], 1.0), b["add_h"], 1.0)
        return h @ wq(self.head_w, b["head"]).T + self.head_b


@dataclass
class GRUCheckpoint:
    epoch: int
    beta: float
    size_bits: int
    val_acc: float       # deployed (integer) accuracy on the selection split
    config: dict
    state: dict = field(repr=False)
    ranges: dict = field(repr=False, default_factory=dict)


def deployed_accuracy(m: HGQGRU, x, y, backend: str = "kernels") -> float:
    q, head = m.deploy()
    q.backend = backend
    codes = q.forward_codes(x)
    logits = head(codes[:, -1].numpy(), q.s_h, backend=backend)
    return float((torch.from_numpy(logits).argmax(1) == y).double().mean())


class HGQGRUTrainer:
    """One run: `warmup` epochs at beta = 0, then beta from beta0 to beta1 (log scale). Adam on the
    weights (lr) and the widths (lr_bits). Every epoch's deployed model enters the Pareto front on
    (deployed validation accuracy, size)."""

    def __init__(self, model: HGQGRU, epochs: int = 200, beta0: float = 1e-2, beta1: float = 1.0,
                 lr: float = 1e-3, lr_bits: float = 0.05, batch: int = 64, warmup: int = 5,
                 seed: int = 0):
        self.m, self.epochs, self.beta0, self.beta1 = model, epochs, beta0, beta1
        self.batch, self.warmup, self.seed = batch, warmup, seed
        other = [p for n, p in model.named_parameters() if n != "bits"]
        self.opt = torch.optim.Adam([{"params": other, "lr": lr},
                                     {"params": [model.bits], "lr": lr_bits}])
        with torch.no_grad():
            self.ref = float(model.size_bits())  # uniform init: beta is scale-free

    def beta(self, epoch: int) -> float:
        from .hgq import beta_schedule

        return beta_schedule(epoch, self.epochs, self.warmup, self.beta0, self.beta1)

    def fit(self, xtr, ytr, xval, yval, progress=None) -> list:
        """Train on (xtr, ytr); checkpoints are ranked by deployed accuracy on (xval, yval)."""
        from .hgq import pareto_insert

        g = torch.Generator().manual_seed(self.seed)
        m, front = self.m, []
        for epoch in range(self.epochs):
            beta = self.beta(epoch)
            m.observe_ranges(xtr)
            m.train()
            perm = torch.randperm(len(xtr), generator=g)
            for s in range(0, len(xtr), self.batch):
                idx = perm[s:s + self.batch]
                loss = F.cross_entropy(m(xtr[idx]), ytr[idx])
                if beta > 0:
                    loss = loss + beta * m.size_bits() / self.ref
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                m.clamp_bits()
            m.eval()
            m.observe_ranges(xtr)  # the deployed model's calibration: final weights, train split
            acc = deployed_accuracy(m, xval, yval)
            size = int(m.size_bits().item())
            cp = GRUCheckpoint(epoch, beta, size, acc, m.config(), copy.deepcopy(m.state_dict()),
                               dict(m.ranges))
            front = pareto_insert(front, cp)
            if progress is not None:
                progress(epoch, beta, size, acc)
        return sorted(front, key=lambda c: c.size_bits)
