"""HGQ-style fixed-point quantizer with learnable widths (PyTorch).

x_q = clip(round(x * 2^f), lo, hi) / 2^f with f fractional bits. Gradients:
  d x_q / d x = 1 (straight-through),  d x_q / d f = -ln2 * (x_q - x) (HGQ's surrogate: the
  rounding error is modelled as uniform with a size proportional to 2^-f).
A width shared by n values gets its gradient scaled by 1/sqrt(n) (HGQ's "degeneracy" scaling),
so a per-layer width does not move sqrt(n) times faster than a per-element one.

Weights are parameterized by their total width b (what the kernels care about): the integer bits
i come from the observed range (max|x| <= 2^i, per output channel), and f = b - 1 - i (one sign
bit). Since i is fixed, d x_q / d b = d x_q / d f. The forward pass uses b projected onto the widths
the kernels run ({2, 4, 8}) through a straight-through estimator, so the loss sees the deployed model.
"""
from __future__ import annotations

import math

import torch

KERNEL_WIDTHS = (2, 4, 8)
LN2 = math.log(2.0)


def scale_grad(x: torch.Tensor, s: float) -> torch.Tensor:
    """Value x, gradient scaled by s."""
    return x * s + (x - x * s).detach()


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def project_width(b: torch.Tensor, widths=KERNEL_WIDTHS) -> torch.Tensor:
    """Nearest allowed width (ties upward) in the forward pass; identity gradient (STE)."""
    ws = torch.tensor(sorted(widths), dtype=b.dtype, device=b.device)
    mids = (ws[1:] + ws[:-1]) / 2
    idx = torch.bucketize(b.detach(), mids, right=True)
    return b + (ws[idx] - b).detach()


def integer_bits(x: torch.Tensor, dim=None) -> torch.Tensor:
    """Smallest integer i with max|x| <= 2^i (over all of x, or per slice along `dim` kept)."""
    if dim is None:
        m = x.detach().abs().max()
    else:
        m = x.detach().abs().amax(dim=dim, keepdim=True)
    return torch.ceil(torch.log2(m.clamp_min(1e-12)))


def hgq_quantize(x: torch.Tensor, f: torch.Tensor, lo=None, hi=None) -> torch.Tensor:
    """x_q = clip(round(x * 2^f), lo, hi) / 2^f, f broadcast against x (f integer-valued in use).

    Gradients: 1 for x (straight-through, also outside the clip range), -ln2 * (x_q - x) for f.
    """
    step = torch.pow(2.0, -f.detach())
    q = torch.round(x.detach() / step)
    if lo is not None or hi is not None:
        q = torch.clamp(q, lo, hi)
    delta = (q * step - x.detach())  # x_q - x, constant for autograd
    prod = delta * f * LN2           # d prod / d f = ln2 * delta
    return x + (delta + prod).detach() - prod


def quantize_signed(x: torch.Tensor, b: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Signed fixed point with total width b (incl. sign) and integer bits i: codes in
    [-2^(b-1), 2^(b-1) - 1], step 2^-(b-1-i)."""
    f = b - 1 - i
    qmax = torch.pow(2.0, b.detach() - 1)
    return hgq_quantize(x, f, -qmax, qmax - 1)


def quantize_unsigned(x: torch.Tensor, b: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Unsigned fixed point (ReLU outputs): codes in [0, 2^b - 1], step 2^-(b-i)."""
    f = b - i
    qmax = torch.pow(2.0, b.detach())
    return hgq_quantize(x, f, torch.zeros_like(qmax), qmax - 1)
