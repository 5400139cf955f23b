"""numpy / torch interchange for the public ops.

Every op accepts numpy arrays and CPU torch tensors and returns the kind it was given. Torch
tensors cross as zero-copy numpy views (`.numpy()` / `torch.from_numpy`), so the extension never
links libtorch and one build works with any torch version.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _torch():
    return sys.modules.get("torch")


def is_torch(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view of x (numpy array or CPU torch tensor); TypeError for anything else."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.generic):
        return np.asarray(x)
    if is_torch(x):
        if x.device.type != "cpu":
            raise TypeError(f"{name}: expected a CPU tensor, got one on {x.device}")
        if x.is_sparse or x.layout != _torch().strided:
            raise TypeError(f"{name}: expected a dense (strided) tensor")
        if x.is_quantized:
            raise TypeError(f"{name}: quantized torch tensors are not accepted; pass the integer codes")
        if x.is_conj() or x.is_neg():
            x = x.resolve_conj().resolve_neg()
        try:
            return x.detach().numpy()
        except TypeError:  # a dtype numpy lacks (bfloat16, float8, ...)
            raise TypeError(f"{name}: torch dtype {x.dtype} has no numpy equivalent; convert it "
                            "first (integer codes for the kernels)") from None
    raise TypeError(
        f"{name}: expected a numpy array or a torch tensor, got {type(x).__name__}"
    )


def like(result: np.ndarray, template_is_torch: bool):
    """Wraps a numpy result back into the kind the caller passed."""
    if template_is_torch:
        return _torch().from_numpy(result)
    return result


def require_int_dtype(a: np.ndarray, name: str, allowed: tuple) -> None:
    if a.dtype not in allowed:
        names = " or ".join(np.dtype(d).name for d in allowed)
        raise TypeError(f"{name}: expected dtype {names}, got {a.dtype}")


def require_ndim(a: np.ndarray, ndim: int, name: str, shape_hint: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array {shape_hint}, got shape {tuple(a.shape)}")


def contiguous(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def check_codes(codes: np.ndarray, name: str, lo: int, hi: int) -> None:
    """ValueError unless every value is in [lo, hi]."""
    if codes.size == 0:
        return
    mn, mx = int(codes.min()), int(codes.max())
    if mn < lo or mx > hi:
        bad = mn if mn < lo else mx
        raise ValueError(f"{name}: values must be in [{lo}, {hi}], found {bad}")
