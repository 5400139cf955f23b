"""Exact int32 GEMMs on integer codes of a given width, routed to pyquant's kernels.

Shared by QuantGRU (pyquant.nn.gru) and the search's deployed models (pyquant.search.deploy):
2/4-bit weight codes go to ``pyquant.lowbit_gemm`` (W4A8/W2A8) when the package has it; otherwise
(and for 8-bit) to ``pyquant.int8_gemm``, which is exact on the same codes (a b-bit code is an int8
value). Both return the same int32 result, so results do not depend on which kernel ran.
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
