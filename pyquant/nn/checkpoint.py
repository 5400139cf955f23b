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

from pyquant import _C
from pyquant.packed import header_op

from . import _backend
from .api import (_CONVERTED_LAYERS, _convert, check_config, convertible,
                  record_for_transformers)
from .attention import QuantMultiheadAttention
from .configs import Int8Config, LUT2Config, SparqConfig, WeightOnlyConfig
from .embedding import TABLE_TYPES, QuantEmbedding, check_table, table_bits, table_layout
from .experts import QuantExperts
from .fold_bn import _BN_OF, fold_batchnorm_
from .grouped_conv import QuantGroupedConv2d
from .modules import AwaitsLoad, _QuantModule, _want_hugepages
from .recurrent import QuantRNN
from .schemes import config_for_op, scheme_for

_BATCHNORMS = tuple(set(_BN_OF.values()))
_CONFIGS = {c.__name__: c for c in (Int8Config, WeightOnlyConfig, LUT2Config, SparqConfig)}
_CONVERTED = (_QuantModule, QuantMultiheadAttention, QuantRNN, QuantExperts, QuantGroupedConv2d,
              QuantEmbedding)
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
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(layer_entries(model, layers))})


def layer_entries(model: nn.Module, layers: dict | None = None) -> dict:
    """{layer: {"config": {"type": ..., its arguments}, "weight_dtype": ...}} of a quantized
    model's layers (quantized_layers(model) unless given): what save_quantized's metadata and
    transformers' config.json (pyquant/nn/hf.py) hold, read back by parse_layer_entries."""
    layers = quantized_layers(model) if layers is None else layers
    mods = dict(model.named_modules())
    return {fqn: {"config": {"type": type(c).__name__, **_config_fields(c)},
                  "weight_dtype": str(_weight_dtype(mods[fqn])).removeprefix("torch.")}
            for fqn, c in layers.items()}


def _config_fields(config) -> dict:
    """A config's arguments as written to a file: what was asked, so Int8Config's act_bits="auto"
    is resolved again on the CPU that loads it."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    if isinstance(config, Int8Config):
        fields["act_bits"] = config.act_bits_asked
    return fields


def _as_saved(config) -> str:
    """A config as its file says it (Int8Config(act_bits='auto'), not this CPU's width)."""
    args = ", ".join(f"{k}={v!r}" for k, v in _config_fields(config).items())
    return f"{type(config).__name__}({args})"


def _weight_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a quantized layer's ``weight`` reports (the float layer's, after .to(dtype))."""
    w = getattr(layer, "weight", None)
    if isinstance(w, torch.Tensor) or hasattr(w, "dtype"):
        return w.dtype
    first = next((m for m in layer.modules() if isinstance(m, _QuantModule)), None)
    return torch.float32 if first is None else first.weight_dtype


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ImportError("reading and writing .safetensors files needs the 'safetensors' "
                          "package (pip install safetensors)") from e
    return safetensors.torch


_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float32, torch.float16,
                                                        torch.bfloat16, torch.float64)}


def saved_configs(path) -> dict | None:
    """{layer: (config, weight dtype)} from a file written by save_quantized (None for a file
    without them). The metadata is untrusted: only pyquant's config types, each built by its own
    checks, and float dtypes."""
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
    return parse_layer_entries(entries, where)


def parse_layer_entries(entries, where: str) -> dict:
    """{layer: (config, weight dtype)} from layer_entries' form, untrusted (a file's metadata,
    a config.json): only pyquant's config types, each built by its own checks, and float
    dtypes; ValueError naming `where` and the layer otherwise."""
    if not isinstance(entries, dict):
        raise ValueError(f"{where}: expected an object of layer names to configs")
    configs = {}
    for fqn, entry in entries.items():
        cfg = entry.get("config") if isinstance(entry, dict) else None
        kind = cfg.get("type") if isinstance(cfg, dict) else None
        if not isinstance(kind, str) or kind not in _CONFIGS:  # (a list or dict: unhashable)
            raise ValueError(f"{where}: layer {fqn!r}: expected a config of type "
                             f"{', '.join(sorted(_CONFIGS))}, got {kind!r}")
        name = entry.get("weight_dtype")
        dtype = _DTYPES.get(name) if isinstance(name, str) else None
        if dtype is None:
            raise ValueError(f"{where}: layer {fqn!r}: expected a weight_dtype of "
                             f"{', '.join(_DTYPES)}, got {entry.get('weight_dtype')!r}")
        try:
            config = _CONFIGS[kind](**{k: v for k, v in cfg.items() if k != "type"})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: layer {fqn!r}: {e}") from None
        configs[fqn] = (config, dtype)
    return configs


def _sources(source) -> list:
    """A state dict, a path, or a list of them (a checkpoint in shards)."""
    return list(source) if isinstance(source, (list, tuple)) else [source]


def read_state_dict(source, mapped: set | None = None) -> dict:
    """A mapping of names to tensors, the path of a ``.safetensors`` file or of a ``torch.save``
    file (read with ``weights_only=True``), or a list of them (shards: merged). safetensors maps
    its file: the keys of such tensors are added to ``mapped`` (load_quantized_ copies what the
    model keeps of them: a file mapped into the model would crash the process if it were
    truncated later, and change the weights if it were rewritten)."""
    merged = {}
    for src in _sources(source):
        if isinstance(src, Mapping):
            part = dict(src)
        elif isinstance(src, (str, os.PathLike)):
            path = os.fspath(src)
            if path.endswith(".safetensors"):
                load_file = _safetensors().load_file
                part = _readable(path, lambda: load_file(path))
                if mapped is not None:
                    mapped.update(part)
            else:
                part = _readable(path, lambda: torch.load(path, map_location="cpu",
                                                          weights_only=True))
                if not isinstance(part, Mapping):
                    raise TypeError(f"{path}: expected a state dict (a mapping of names to "
                                    f"tensors), got {type(part).__name__}")
        else:
            raise TypeError("state_dict: expected a mapping of names to tensors, the path of a "
                            ".safetensors or torch.save file, or a list of them, got "
                            f"{type(src).__name__}")
        for k in part:
            if not isinstance(k, str):
                raise TypeError(f"state_dict: expected string keys, got {k!r}")
            if k in merged:
                raise ValueError(f"state_dict: key {k!r} is in more than one shard")
        merged.update(part)
    return merged


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


# Float parameters that a converted block keeps under the same names (nn.MultiheadAttention's
# add_bias_kv pair, buffers of QuantMultiheadAttention).
_KEPT_FLOAT = ("bias_k", "bias_v")


def quantized_in(state_dict: Mapping):
    """filter_fn for quantize_: the layers ``state_dict`` holds quantized: a packed weight under
    the layer's name, or under its parts (an attention block's projections) while none of its
    own float parameters is in the file (an attention block with only its out_proj quantized
    stays float, its out_proj converted)."""
    held = {k[:-len("packed")].rstrip(".") for k in state_dict
            if k == "packed" or k.endswith(".packed")}

    def in_file(module: nn.Module, fqn: str) -> bool:
        if not convertible(module):
            return False
        prefix = fqn + "." if fqn else ""
        if isinstance(module, TABLE_TYPES):  # (a QuantEmbedding's table: codes, no header)
            return prefix + "codes" in state_dict and prefix + "weight" not in state_dict
        if fqn in held:
            return True
        # (an attention block's bias_k / bias_v are in the file quantized or not: its
        # QuantMultiheadAttention keeps them under the same names)
        own = [prefix + n for n, _ in module.named_parameters(recurse=False)
               if n not in _KEPT_FLOAT]
        return (not any(k in state_dict for k in own)
                and any(h.startswith(prefix) for h in held))
    return in_file


def load_quantized_(model: nn.Module, state_dict, config=None, *,
                    strict: bool = True) -> nn.Module:
    """Loads, in place, a quantized model's state dict into ``model`` (the same architecture, its
    weights on the meta device or real: the layers it converts are replaced without quantizing
    their weights); returns ``model`` (a quantized root is returned swapped, as by quantize_).
    ``state_dict``: a mapping, a .safetensors / torch.save path, or a list of them (shards).
    ``config``: the config every quantized layer was made with; None reads each layer's from a
    save_quantized file (given both, they must agree). ``strict``: as ``load_state_dict``'s,
    and no tensor may stay on the meta device. The file's packed weights are checked against
    the configs before the model changes (a wrong config leaves the model as it was)."""
    if config is not None:
        check_config(config)
    saved = {}
    for src in _sources(state_dict):
        if isinstance(src, (str, os.PathLike)):
            saved.update(saved_configs(src) or {})
    if config is None and not saved:
        raise ValueError("config: this state dict does not say how it was quantized (only "
                         "a file written by pyquant.save_quantized does); pass the config "
                         "its model was quantized with, e.g. pyquant.WeightOnlyConfig(4, 32)")
    for fqn, (cfg, _) in saved.items():
        if config is not None and cfg != config:
            raise ValueError(f"config: {config!r}, but the file says layer {fqn!r} was quantized "
                             f"with {_as_saved(cfg)} (pass config=None to use the file's)")
    mapped = set()
    sd = read_state_dict(state_dict, mapped)
    in_file = quantized_in(sd)
    layers = _outermost([fqn for fqn, m in model.named_modules()
                         if not isinstance(m, _QuantModule) and in_file(m, fqn)])
    if not layers and not any(isinstance(m, _CONVERTED_LAYERS) for m in model.modules()):
        raise ValueError("state_dict: holds no quantized layer (a float checkpoint?): load it "
                         "with model.load_state_dict, then quantize with pyquant.quantize_(model, "
                         "config)")
    if config is None:
        unknown = [fqn for fqn in layers if fqn not in saved]
        if unknown:
            raise ValueError(f"state_dict: layer {unknown[0]!r} is quantized in the file, but the "
                             "file's metadata has no config for it")
    configs = {fqn: saved[fqn][0] if config is None else config for fqn in layers}
    _check_packed_ops(sd, configs)
    _check_tables(model, sd, configs)
    # a BN the file no longer holds was folded into the conv before it (whatever its mode now)
    kept = {k.rpartition(".")[0] for k in sd}
    fold_batchnorm_(model, in_file, "all", "load_quantized_",
                    pair_filter=lambda conv, bn: bn not in kept and _under(conv, kept))
    for fqn in layers:  # the file replaces these weights: none are read or quantized
        model.get_submodule(fqn).to("meta") if fqn else model.to("meta")
    model = convert_as_saved(model, configs, in_file)
    file_tensors = [sd[k] for k in mapped]
    quantized = tuple(f + "." if f else "" for f in configs)
    for k in mapped:  # (a quantized layer's large buffers are copied to huge pages at its load)
        if not (k.startswith(quantized) and _want_hugepages(sd[k]) and not sd[k].is_shared()):
            sd[k] = sd[k].clone()
    model.load_state_dict(sd, strict=strict, assign=True)
    _own_memory(model, file_tensors)
    # the dtype each layer's weight reports, as saved (a plain state dict: the one dtype the
    # model's float parameters took from the file, if they agree)
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    set_weight_dtypes(model, {fqn: saved[fqn][1] if fqn in saved else (
        next(iter(floats)) if len(floats) == 1 else None) for fqn in configs})
    if strict:
        _check_loaded(model)
    record_for_transformers(model)  # (with the weight dtypes as saved)
    return model


def convert_as_saved(model: nn.Module, configs: dict, select=lambda m, fqn: True) -> nn.Module:
    """Converts the layers named in configs ({layer: config}) that select(module, fqn) accepts,
    each with its config (weights on the meta device: layers awaiting their state dict)."""
    # one pass per distinct config as asked (Int8Config() and Int8Config(act_bits=8) compare
    # equal on a VNNI CPU, but only the first resolves again where the model loads next)
    asked = {fqn: (cfg, str(_config_fields(cfg))) for fqn, cfg in configs.items()}
    for key in dict.fromkeys(asked.values()):
        cfg = key[0]
        model = _convert(model, cfg, check_config(cfg),
                         lambda m, fqn, key=key: asked.get(fqn) == key and select(m, fqn))
    return model


def set_weight_dtypes(model: nn.Module, dtypes: dict) -> None:
    """The dtype each converted layer's weight reports ({layer: dtype}; None: left as is)."""
    for fqn, dtype in dtypes.items():
        for m in (model.get_submodule(fqn).modules() if dtype is not None else ()):
            if isinstance(m, _CONVERTED_LAYERS):
                m._weight_dtype = dtype


def _own_memory(model: nn.Module, file_tensors: list) -> None:
    """The model's tensors that are still the file's mapped ones become copies (the large
    buffers of quantized layers were already copied into huge-page memory at their refresh)."""
    if not file_tensors:
        return
    storages = {t.untyped_storage().data_ptr() for t in file_tensors}
    for m in model.modules():
        copied = False
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                if t is not None and t.untyped_storage().data_ptr() in storages:
                    c = t.detach().clone()
                    store[name] = nn.Parameter(c, t.requires_grad) if isinstance(
                        t, nn.Parameter) else c
                    copied = True
        if copied and isinstance(m, _QuantModule):
            m._refresh_derived()  # (bound to the copies)


def _outermost(names: list) -> list:
    """names without those inside another (an attention block's out_proj inside the block)."""
    return [n for n in names if not any(o != n and (o == "" or n.startswith(o + "."))
                                        for o in names)]


def _under(fqn: str, names: set) -> bool:
    """The file holds entries of the module fqn (its own, or of a quantized version's parts)."""
    return fqn in names or any(n.startswith(fqn + ".") for n in names)


def _check_packed_ops(sd: dict, configs: dict) -> None:
    """Every packed weight the file holds for a layer is packed for its config's op and
    parameters (headers only, before anything changes): ValueError naming the key otherwise
    (the load itself then checks every buffer whole)."""
    if _backend.is_reference():  # (raw codes, no headers)
        return
    expected = {}
    for fqn, cfg in configs.items():
        scheme = scheme_for(cfg)
        if cfg not in expected:  # (a 1 x 4 layer's header: the op's parameters for cfg)
            expected[cfg] = _C.validate_packed(scheme.empty_weight(1, 4)["packed"].numpy(),
                                               scheme.packed_op, "packed", payload=False)
        prefix = fqn + "." if fqn else ""
        for key in [k for k in sd if k.startswith(prefix) and k.rpartition(".")[2] == "packed"]:
            t = sd[key]
            if not (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1
                    and t.device.type == "cpu"):
                continue  # (the load names what is wrong with it)
            buf = t.detach().contiguous().numpy()
            op = header_op(buf)
            if op is not None and op != scheme.packed_op:
                raise ValueError(f"{key}: the file's weight was packed for {op!r} (saved with "
                                 f"{config_for_op(op)}), but the config is {cfg!r}")
            got = _C.validate_packed(buf, scheme.packed_op, key, payload=False)["params"]
            for name, value in expected[cfg]["params"].items():
                if got.get(name) != value:
                    raise ValueError(f"{key}: packed with {name}={got.get(name)!r}, but the "
                                     f"config {cfg!r} has {name}={value!r}")


def _check_tables(model: nn.Module, sd: dict, configs: dict) -> None:
    """The file's quantized embedding tables fit their configs and the model's tables (before
    anything changes, as _check_packed_ops for the packed weights)."""
    for fqn, cfg in configs.items():
        emb = model.get_submodule(fqn)
        if not isinstance(emb, TABLE_TYPES):
            continue
        if emb.max_norm is not None:
            raise ValueError(f"layer {fqn!r}: max_norm: a table with max_norm cannot "
                             "hold a quantized table (its lookups rewrite float rows)")
        try:
            layout = table_layout(emb.num_embeddings, emb.embedding_dim, cfg)
        except TypeError as e:
            raise ValueError(f"layer {fqn!r}: {e}") from None
        prefix = fqn + "." if fqn else ""
        layout = {prefix + n: v for n, v in layout.items()}
        what = f"a {emb.num_embeddings} x {emb.embedding_dim} table under {cfg!r}"
        for key in layout:
            if key in sd:
                check_table(sd[key], key, layout, what, table_bits(cfg))


def _check_loaded(model: nn.Module) -> None:
    """Nothing left without values: a tensor on the meta device (not in the file: e.g. a
    non-persistent buffer of a model built under torch.device("meta")) or a quantized layer
    still awaiting its weights."""
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    left += [k for n, m in model.named_modules() if isinstance(m, AwaitsLoad)
             for k in m.unloaded_keys(prefix=n + "." if n else "")]
    if left:
        raise ValueError(
            f"load_quantized_: {len(left)} tensor(s) have no values after loading "
            f"({', '.join(left[:4])}{', ...' if len(left) > 4 else ''}): the state dict does not "
            "hold them. A non-persistent buffer (transformers' rotary inv_freq) is not saved in "
            "state dicts: build the model with only its parameters on the meta device, e.g. "
            "under accelerate.init_empty_weights()")
