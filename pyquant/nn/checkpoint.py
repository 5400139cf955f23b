"""Loading a quantized model from its state dict alone: no float weights, no weight search.

    pyquant.save_quantized(quantized_model, "model.safetensors")  # state dict + each layer's config
    ...
    with torch.device("meta"):          # (accelerate.init_empty_weights() for a model whose
        model = build_model()           # non-persistent buffers must stay real: transformers'
    pyquant.load_quantized_(model, "model.safetensors")                                   # RoPE)

A plain state dict (``torch.save(model.state_dict(), path)``) loads the same way with the
config given: ``load_quantized_(model, path, pyquant.WeightOnlyConfig(4, 32))``.

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

import dataclasses
import json
import os
from collections.abc import Mapping

import torch
from torch import nn

from .api import _convert, check_config, every_layer_filter
from .attention import QuantMultiheadAttention
from .configs import Int8Config, LUT2Config, SparqConfig, WeightOnlyConfig
from .experts import QuantExperts
from .fold_bn import _BN_OF, fold_batchnorm_
from .grouped_conv import QuantGroupedConv2d
from .modules import _QuantModule
from .recurrent import QuantRNN

_BATCHNORMS = tuple(set(_BN_OF.values()))
_CONFIGS = {c.__name__: c for c in (Int8Config, WeightOnlyConfig, LUT2Config, SparqConfig)}
_CONVERTED = (_QuantModule, QuantMultiheadAttention, QuantRNN, QuantExperts, QuantGroupedConv2d)
METADATA_KEY = "pyquant.configs"  # (the safetensors metadata entry: {layer: config} as JSON)


def quantized_layers(model: nn.Module) -> dict:
    """{name: config} of the layers quantize_ converted (the outermost: an attention block, not
    its projections)."""
    found = {}

    def walk(module: nn.Module, fqn: str) -> None:
        if isinstance(module, _CONVERTED) and type(getattr(module, "config", None)) in \
                _CONFIGS.values():
            found[fqn] = module.config
            return
        for name, child in module.named_children():
            walk(child, f"{fqn}.{name}" if fqn else name)
    walk(model, "")
    return found


def save_quantized(model: nn.Module, path) -> None:
    """Saves a quantized model's state dict as a ``.safetensors`` file with each quantized
    layer's config in its metadata, so ``load_quantized_(model, path)`` needs no config (a
    model quantized by several quantize_ calls with different configs loads as it was). Tensors
    that share memory (tied float weights) are saved as copies."""
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("model: no quantized layer to save (run pyquant.quantize_ first)")
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise ValueError(f"path: expected a .safetensors file (its metadata holds the configs), "
                         f"got {path!r}; torch.save(model.state_dict(), path) saves a plain state "
                         "dict, which load_quantized_ reads with the config given")
    save_file = _safetensors().save_file
    tensors, seen = {}, set()
    for key, t in model.state_dict().items():
        t = t.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        tensors[key] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    text = json.dumps({fqn: {"type": type(c).__name__, **dataclasses.asdict(c)}
                       for fqn, c in layers.items()})
    save_file(tensors, path, metadata={METADATA_KEY: text})


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ImportError("reading and writing .safetensors files needs the 'safetensors' "
                          "package (pip install safetensors)") from e
    return safetensors.torch


def saved_configs(path) -> dict | None:
    """{layer: config} from a file written by save_quantized (None for a file without them).
    The metadata is untrusted: only pyquant's config types, built by their own checks."""
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        return None
    def metadata():
        with _safetensors().safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    text = _readable(path, metadata).get(METADATA_KEY)
    if text is None:
        return None
    where = f"{path}: metadata {METADATA_KEY!r}"
    try:
        entries = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{where}: not JSON ({e})") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{where}: expected an object of layer names to configs")
    configs = {}
    for fqn, entry in entries.items():
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in _CONFIGS:
            raise ValueError(f"{where}: layer {fqn!r}: expected a config of type "
                             f"{', '.join(sorted(_CONFIGS))}, got {kind!r}")
        fields = {k: v for k, v in entry.items() if k != "type"}
        try:
            configs[fqn] = _CONFIGS[kind](**fields)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: layer {fqn!r}: {e}") from None
    return configs


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
        load_file = _safetensors().load_file
        return _readable(path, lambda: load_file(path))
    obj = _readable(path, lambda: torch.load(path, map_location="cpu", weights_only=True,
                                             mmap=True))
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path}: expected a state dict (a mapping of names to tensors), got "
                        f"{type(obj).__name__}")
    return dict(obj)


def _readable(path: str, read):
    """read(), a damaged or foreign file's error as a ValueError naming it (a missing file stays
    FileNotFoundError)."""
    try:
        return read()
    except OSError:
        raise
    except Exception as e:  # (safetensors' SafetensorError, pickle's and zipfile's errors)
        raise ValueError(f"{path}: not a readable state dict file ({type(e).__name__}: "
                         f"{e})") from e


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


def load_quantized_(model: nn.Module, state_dict, config=None, *,
                    strict: bool = True) -> nn.Module:
    """Loads, in place, a quantized model's state dict into ``model`` (the same architecture, its
    weights on the meta device or real: the layers it converts are replaced without quantizing
    their weights); returns ``model`` (a quantized root is returned swapped, as by quantize_).
    ``state_dict``: a mapping, or a .safetensors / torch.save path. ``config``: the config every
    quantized layer was made with; None reads each layer's from a save_quantized file.
    ``strict``: as ``load_state_dict``'s, and no tensor may stay on the meta device."""
    configs = None
    if config is not None:
        check_config(config)
    else:
        if isinstance(state_dict, (str, os.PathLike)):
            configs = saved_configs(state_dict)
        if configs is None:
            raise ValueError("config: this state dict does not say how it was quantized (only "
                             "a file written by pyquant.save_quantized does); pass the config "
                             "its model was quantized with, e.g. pyquant.WeightOnlyConfig(4, 32)")
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
    if configs is None:
        model = _convert(model, config, check_config(config), in_file)
    else:  # each layer with its own config (one pass per distinct config)
        for cfg in dict.fromkeys(configs.values()):
            model = _convert(model, cfg, check_config(cfg),
                             lambda m, fqn, cfg=cfg: in_file(m, fqn) and configs.get(fqn) == cfg)
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
