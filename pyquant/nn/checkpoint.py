"""Loading a quantized model from its state dict alone: no float weights, no weight search.

    torch.save(quantized_model.state_dict(), "model-w4.pt")   # or safetensors' save_file
    ...
    with torch.device("meta"):          # (accelerate.init_empty_weights() for a model whose
        model = build_model()           # non-persistent buffers must stay real: transformers'
    pyquant.nn.load_quantized_(model, "model-w4.pt", pyquant.WeightOnlyConfig(4, 32))  # RoPE)

``quantize_`` on weights on the meta device makes layers that await their state dict (every
buffer shaped and every packed header written, codes zero; a forward before the load is a
ValueError), which ``load_state_dict(state_dict, assign=True)`` then fills, checked like any
untrusted file (pyquant/nn/_load.py). ``load_quantized_`` does it with the layers the file holds
quantized (a ``packed`` entry under the layer's name), whatever filter and pyquant version
quantized the model; folds the BatchNorms the file no longer holds (``fold_batchnorm`` at
quantize_ time); and refuses to return a model with tensors left on the meta device. Weights of
the layers it converts are never quantized, so converting takes the time of packing zeros, not
of the weight search (an MSE-clipped W4 or LUT2 fit of a 1B model takes minutes).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from .api import _convert, check_config, every_layer_filter
from .fold_bn import _BN_OF, fold_batchnorm_
from .modules import _QuantModule

_BATCHNORMS = tuple(set(_BN_OF.values()))


def read_state_dict(source) -> dict:
    """A mapping of names to tensors, or the path of a ``.safetensors`` file or of a
    ``torch.save`` file (read with ``weights_only=True``, memory-mapped)."""
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError("state_dict: expected a mapping of names to tensors or the path of a "
                        f".safetensors or torch.save file, got {type(source).__name__}")
    path = os.fspath(source)
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(f"{path}: reading .safetensors files needs the 'safetensors' "
                              "package (pip install safetensors)") from e
        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path}: expected a state dict (a mapping of names to tensors), got "
                        f"{type(obj).__name__}")
    return dict(obj)


def quantized_in(state_dict: Mapping):
    """filter_fn for quantize_: the layers ``state_dict`` holds quantized (a packed weight under
    the layer's name, or under one of its parts: an attention block's projections)."""
    held = [k[:-len("packed")].rstrip(".") for k in state_dict
            if k == "packed" or k.endswith(".packed")]

    def in_file(module: nn.Module, fqn: str) -> bool:
        prefix = fqn + "." if fqn else ""
        return every_layer_filter(module, fqn) and any(h == fqn or h.startswith(prefix)
                                                       for h in held)
    return in_file


def load_quantized_(model: nn.Module, state_dict, config, *, strict: bool = True) -> nn.Module:
    """Loads, in place, a state dict saved from a model quantized with ``config`` into ``model``
    (the same architecture, its weights on the meta device or real: the layers it converts are
    replaced without quantizing their weights); returns ``model`` (a quantized root is returned
    swapped, as by quantize_). ``state_dict``: a mapping, or a .safetensors / torch.save path.
    ``strict``: as ``load_state_dict``'s, and no tensor may stay on the meta device."""
    handler = check_config(config)
    sd = read_state_dict(state_dict)
    in_file = quantized_in(sd)
    folded = {fqn for fqn, m in model.named_modules() if isinstance(m, _BATCHNORMS)
              and not any(k.startswith(fqn + ".") for k in sd)}
    for fqn, m in model.named_modules():
        # the file replaces these weights, so none are read (a BN it no longer holds was folded,
        # whatever its mode now)
        if fqn in folded:
            m.to("meta").eval()
        elif in_file(m, fqn) and not isinstance(m, _QuantModule):
            m.to("meta")
    fold_batchnorm_(model, in_file, "all", "load_quantized_", bn_filter=folded.__contains__)
    model = _convert(model, config, handler, in_file)
    model.load_state_dict(sd, strict=strict, assign=True)
    if strict:
        _check_loaded(model)
    return model


def _check_loaded(model: nn.Module) -> None:
    """Nothing left without values: a tensor on the meta device (not in the file: e.g. a
    non-persistent buffer of a model built under torch.device("meta")) or a quantized layer
    still awaiting its weights."""
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    left += [k for n, m in model.named_modules() if isinstance(m, _QuantModule)
             for k in m.unloaded_keys(prefix=n + "." if n else "")]
    if left:
        raise ValueError(
            f"load_quantized_: {len(left)} tensor(s) have no values after loading "
            f"({', '.join(left[:4])}{', ...' if len(left) > 4 else ''}): the state dict does not "
            "hold them. A non-persistent buffer (transformers' rotary inv_freq) is not saved in "
            "state dicts: build the model with only its parameters on the meta device, e.g. "
            "under accelerate.init_empty_weights()")
