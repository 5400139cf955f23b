"""Plain-numpy oracles written from the math in algorithms.md, never optimized."""
from __future__ import annotations

import numpy as np


def pack_ref(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(codes)
    n = codes.shape[-1]
    flat = codes.reshape(int(np.prod(codes.shape[:-1])), n).astype(np.int64) & ((1 << bits) - 1)
    out = np.zeros((flat.shape[0], (n * bits + 7) // 8), np.uint8)
    for i in range(n):
        bit = i * bits
        out[:, bit // 8] |= (flat[:, i] << (bit % 8)).astype(np.uint8)
    return out.reshape(*codes.shape[:-1], out.shape[-1])


def gemm_ref(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """int64 a @ w.T, wrapped to int32 (the kernels' contract)."""
    return (np.asarray(a).astype(np.int64) @ np.asarray(w).astype(np.int64).T).astype(np.int32)
