"""``QuantLinear.weight`` / ``QuantConv2d.weight``: the float layer's weight as a tensor that holds
no float copy.

Model code reads a layer's weight for its metadata: transformers' T5 feed-forward compares
``wo.weight.dtype`` with its activations, ViT casts its pixels to the patch conv's
``weight.dtype``, in every forward. A quantized module answers with a ``QuantizedWeight``: the
float weight's shape, dtype and device, nothing materialized. Any operation on its values (a
norm, a copy, ``.float()``, printing) runs on ``module.dequantize_weight()``, the exact weight the
integer GEMM multiplies by, computed on demand and not kept.
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_map


class QuantizedWeight(torch.Tensor):
    """Metadata of a quantized module's weight; values on demand (see the module docstring)."""

    @staticmethod
    def __new__(cls, module, shape, dtype: torch.dtype):
        t = torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device="cpu",
                                                requires_grad=False)
        t.module = module
        return t

    def __init__(self, module, shape, dtype):
        super().__init__()

    __torch_function__ = torch._C._disabled_torch_function_impl

    def materialize(self) -> torch.Tensor:
        """The dequantized weight as a plain tensor of this dtype."""
        return self.module.dequantize_weight().to(self.dtype)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        def plain(a):
            return a.materialize() if isinstance(a, QuantizedWeight) else a

        return func(*tree_map(plain, args), **tree_map(plain, kwargs or {}))

    def numpy(self, *, force: bool = False):  # (torch refuses these for tensor subclasses)
        return self.materialize().numpy()

    def tolist(self):
        return self.materialize().tolist()

    def __repr__(self) -> str:
        m = self.module
        return (f"QuantizedWeight(shape={list(self.shape)}, dtype={self.dtype}, of a "
                f"{type(m).__name__} with config={m.config!r}; values: .dequantize_weight())")

    def __reduce_ex__(self, protocol):
        # a plain tensor of the values (a pickled reference to the module would copy all of it)
        return self.materialize().__reduce_ex__(protocol)
