"""``QuantLinear.weight`` / ``QuantConv2d.weight``: the float layer's weight as a tensor that holds
no float copy.

Model code reads a layer's weight for its metadata: transformers' T5 feed-forward compares
``wo.weight.dtype`` with its activations, ViT casts its pixels to the patch conv's
``weight.dtype``, in every forward. A quantized module answers with a ``QuantizedWeight``: the
float weight's shape, dtype and device, nothing materialized. An operation on its values (a
norm, arithmetic, indexing, ``.detach()``, ``.numpy()``, ``torch.save``) runs on
``module.dequantize_weight()``, the exact weight the integer GEMM multiplies by: a K x K x N
GEMM, so the first such read of a layer warns. The first read's values are not kept (inspecting
a weight costs no memory); from the second read on they are, in float32 beside the codes, while
the layer's buffers are unchanged (what a read hands out, ``w.t()``, ``w.numpy()``, a deepcopy, is
the caller's own: a write into it cannot reach them): model code that uses a
weight's values in every forward (MobileBERT's LM head, WavLM's relative position bias, Mamba's
dt_proj) then runs at its float speed, not a GEMM slower per call (MobileBERT's LM head took
35x fp32's time); leaving such a layer float saves that copy. Ops that need only the shape and
dtype (``zeros_like``, ``new_empty``, ...) do not
dequantize. Writes (``mul_``, ``copy_`` into it, ``w[i] = v``, ``nn.init``, ``w.data = t``) are
refused: they could not reach the packed codes; a write into a view of it (``w.view(-1).zero_()``)
reaches only a temporary copy. Metadata-only calls that return the tensor itself (``.float()`` of
a float32 weight, ``.cpu()``) keep the view.
"""
from __future__ import annotations

import os
import sys
import warnings
import weakref

import torch
from torch.utils._pytree import tree_flatten, tree_map

# ops that read only the shape and dtype: given an empty stand-in, not the dequantized values
_METADATA_OPS = {getattr(torch.ops.aten, n).default for n in (
    "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
    "new_empty", "new_zeros", "new_ones", "new_full")}
# torch's and pyquant's own directories: frames a warning skips to reach the user's line
_INTERNAL = (os.path.dirname(torch.__file__) + os.sep,
             os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep)


def _caller_stacklevel() -> int:
    """warnings.warn's stacklevel for the first frame outside torch and pyquant (the user's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def _refuse_write(what: str):
    raise RuntimeError(
        f"{what}: a quantized layer's weight cannot be written (it is a view of the packed codes, "
        "which a write would not reach); change the float weight and quantize again")


def _same_buffers(module, seen) -> bool:
    """Whether the module's buffers are the very tensors in ``seen``, unedited since."""
    buffers = list(module.buffers())
    return len(buffers) == len(seen) and all(
        ref() is t and t._version == version for (ref, version), t in zip(seen, buffers))


class QuantizedWeight(torch.Tensor):
    """Metadata of a quantized module's weight; values on demand (see the module docstring)."""

    # its values come from the packed codes: transformers' weight initialisation in
    # from_pretrained (GPT-2's scaled c_proj init, run on the block) leaves it alone
    _is_hf_initialized = True

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
        """The dequantized weight as a plain tensor of this dtype, the caller's own (a copy of
        the values kept from the second read on: the module docstring)."""
        values = self._values()
        kept = self.module.__dict__.get("_weight_values")
        return values.clone() if kept is not None and values is kept[1] else values

    def _values(self) -> torch.Tensor:
        """materialize's values, the kept tensor itself where there is one (for ops that only
        read their inputs)."""
        m = self.module
        if not m.__dict__.get("_weight_values_read"):
            m._weight_values_read = True
            warnings.warn(
                f"the values of a {type(m).__name__}'s weight {list(self.shape)} were read: a "
                f"read dequantizes it (dequantize_weight(), "
                f"{getattr(m, 'dequantize_cost', 'a K x K x N integer GEMM')}), and from the "
                "second read on the values are kept in float32 beside the codes. Model code that "
                "uses a layer's weight values in its forward keeps that copy; leaving such a "
                "layer float (quantize_'s filter_fn) saves it", stacklevel=_caller_stacklevel())
            return m.dequantize_weight().to(self.dtype)
        kept = m.__dict__.get("_weight_values")
        if kept is None or not _same_buffers(m, kept[0]):
            # every buffer under the module (a grouped conv's are its convs'), weakly: a buffer
            # replaced since, even at a freed one's address, does not match
            buffers = tuple((weakref.ref(t), t._version) for t in m.buffers())
            kept = (buffers, m.dequantize_weight())
            m._weight_values = kept
        return kept[1].to(self.dtype)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for i, a in enumerate(func._schema.arguments):  # in place or out= into the view
            if a.alias_info is not None and a.alias_info.is_write:
                written = tree_flatten(args[i] if i < len(args) else kwargs.get(a.name))[0]
                if any(isinstance(t, QuantizedWeight) for t in written):  # (lists: _foreach_*)
                    _refuse_write(func.__name__)

        # an op returning a view of its input gets a copy: a write into that view must not
        # reach the values kept for later reads
        view_op = any(r.alias_info is not None for r in func._schema.returns)

        def plain(a):
            if not isinstance(a, QuantizedWeight):
                return a
            if func in _METADATA_OPS:
                return torch.empty(a.shape, dtype=a.dtype)
            return a.materialize() if view_op else a._values()

        return func(*tree_map(plain, args), **tree_map(plain, kwargs))

    @property
    def data(self):
        return self  # (``w.data.normal_()`` is a write too: refused like ``w.normal_()``)

    @data.setter
    def data(self, value):
        _refuse_write("data")

    def __setitem__(self, index, value):
        _refuse_write("__setitem__")

    def numpy(self, *, force: bool = False):  # (torch refuses these for tensor subclasses)
        return self.materialize().numpy()

    def tolist(self):
        return self.materialize().tolist()

    def __deepcopy__(self, memo):
        return self.materialize()

    def __repr__(self) -> str:
        m = self.module
        return (f"QuantizedWeight(shape={list(self.shape)}, dtype={self.dtype}, of a "
                f"{type(m).__name__} with config={m.config!r}; values: .dequantize_weight())")

    def __reduce_ex__(self, protocol):
        # a plain tensor of the values (a pickled reference to the module would copy all of it)
        return self.materialize().__reduce_ex__(protocol)
