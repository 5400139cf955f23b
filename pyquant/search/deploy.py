"""Integer inference on pyquant's kernels for the widths a search picked.

`gemm_codes(a, w_codes, bits)` is the single entry point: 2/4-bit weight codes go to
`pyquant.lowbit_gemm` (W4A8/W2A8) when the package has it; otherwise (and for 8-bit) to
`pyquant.int8_gemm`, which is exact on the same codes (a b-bit code is an int8 value). Both return
the same int32 result, so deployed accuracy does not depend on which kernel ran.
"""
from __future__ import annotations

import numpy as np
import torch

import pyquant


def lowbit_available() -> bool:
    return hasattr(pyquant, "lowbit_gemm")


def kernel_for(bits: int) -> str:
    return "lowbit_gemm" if bits in (2, 4) and lowbit_available() else "int8_gemm"


def gemm_codes(a, w_codes, bits: int):
    """int32 ``a @ w_codes.T``; a int8/uint8 [M, K], w_codes int8 [N, K] with b-bit values."""
    if kernel_for(bits) == "lowbit_gemm":
        return pyquant.lowbit_gemm(a, w_codes, bits=bits)
    return pyquant.int8_gemm(a, w_codes)


def grouped_gemm(a, w_codes: np.ndarray, row_bits: np.ndarray):
    """Rows of w with different widths: one GEMM per width over its rows, scattered back."""
    a_np = a.numpy() if isinstance(a, torch.Tensor) else a
    out = np.empty((a_np.shape[0], w_codes.shape[0]), np.int32)
    for b in np.unique(row_bits):
        rows = np.nonzero(row_bits == b)[0]
        out[:, rows] = gemm_codes(a_np, np.ascontiguousarray(w_codes[rows]), int(b))
    return out


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
