"""Integer inference on pyquant's kernels for the widths a search picked.

The GEMMs on codes (`gemm_codes`, `grouped_gemm`: 2/4-bit rows to `pyquant.lowbit_gemm`, 8-bit to
`pyquant.int8_gemm`, the same exact int32 result either way) live in `pyquant.nn._code_gemm`,
shared with `pyquant.nn.QuantGRU`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..nn._code_gemm import gemm_codes, grouped_gemm, kernel_for, lowbit_available  # noqa: F401


class DeployedMLP:
    """An MLP frozen from an HGQ model: int8 activation codes, per-row weight codes at 2/4/8 bits,
    int32 GEMMs on the kernels, power-of-two rescale + bias + ReLU between layers."""

    def __init__(self, layers):
        # layers: list of dicts with w_codes [N,K] int8, row_bits [N], w_step [N] (2^-f_w),
        # bias [N] float, a_f (input fractional bits), a_bits, a_signed, relu
        self.layers = layers

    @staticmethod
    def quantize_act(x: np.ndarray, f: float, bits: int, signed: bool) -> np.ndarray:
        q = np.round(x * 2.0**f)
        if signed:
            q = np.clip(q, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(np.int8)
        else:
            q = np.clip(q, 0, 2**bits - 1).astype(np.uint8)
        return q

    def __call__(self, x) -> np.ndarray:
        h = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        h = h.astype(np.float32)
        for L in self.layers:
            a = self.quantize_act(h, L["a_f"], L["a_bits"], L["a_signed"])
            acc = grouped_gemm(a, L["w_codes"], L["row_bits"])
            h = acc.astype(np.float64) * (L["w_step"] * 2.0 ** (-L["a_f"]))[None, :] + L["bias"]
            h = h.astype(np.float32)
            if L["relu"]:
                h = np.maximum(h, 0)
        return h


class QuantHead:
    """A Linear classifier head on integer state codes (e.g. QuantGRU's h): per-row symmetric
    weight codes at `bits`, one GEMM on the kernels, float logits."""

    def __init__(self, linear: torch.nn.Linear, bits: int):
        w = linear.weight.detach().double()
        q = (1 << (bits - 1)) - 1
        self.scale = (w.abs().amax(1) / q).clamp_min(1e-12).numpy()
        self.codes = np.clip(np.round(w.numpy() / self.scale[:, None]), -q, q).astype(np.int8)
        self.bias = linear.bias.detach().double().numpy()
        self.bits = bits

    def __call__(self, h_codes, s_h: float, backend: str = "kernels") -> np.ndarray:
        a = np.ascontiguousarray(np.asarray(h_codes, dtype=np.int8))
        if backend == "kernels":
            acc = gemm_codes(a, self.codes, self.bits)
        else:
            acc = a.astype(np.int64) @ self.codes.astype(np.int64).T
        return acc * (self.scale * s_h)[None, :] + self.bias

    def size_bits(self) -> int:
        return int(self.codes.size * self.bits + 32 * self.bias.size)
