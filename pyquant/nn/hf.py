"""transformers' save_pretrained / from_pretrained for models quantized by pyquant.

    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))   # a transformers model
    model.save_pretrained(path)                                 # config.json says how
    model = AutoModelForCausalLM.from_pretrained(path)          # (after import pyquant)

quantize_ (and gptq_, load_quantized_) on a transformers ``PreTrainedModel`` records each
quantized layer's config in ``model.config.quantization_config`` (quant method "pyquant", the
entries of save_quantized's metadata), which save_pretrained writes to config.json. Loading such
a checkpoint rebuilds those layers on the meta device and loads their packed weights, checked
like any untrusted file (pyquant/nn/_load.py): transformers assigns a checkpoint's tensors
itself, so each quantized layer is then loaded again through load_state_dict from them. A float
checkpoint quantizes as it loads: ``from_pretrained(path, quantization_config=
pyquant.nn.hf.PyquantConfig(pyquant.Int8Config()))``.

Without this registration transformers would skip an unknown quant method with a warning and
return the float skeleton with random weights, so ``import pyquant`` registers it as soon as
transformers' quantizers are imported (pyquant/__init__.py).
"""
from __future__ import annotations

import functools
import re

import torch
from torch import nn
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from .checkpoint import (_CONFIGS, _config_fields, convert_as_saved, layer_entries,
                         parse_layer_entries, quantized_layers, set_weight_dtypes)
from .experts import is_experts
from .fold_bn import FoldedIntoConv, fold_batchnorm_
from .modules import AwaitsLoad, _want_hugepages

QUANT_METHOD = "pyquant"


class PyquantConfig(QuantizationConfigMixin):
    """transformers' quantization_config for pyquant: ``config`` (a pyquant config) quantizes a
    float checkpoint as it loads; ``layers`` (written by quantize_, read from config.json) names
    a pre-quantized checkpoint's layers and their configs."""

    def __init__(self, config=None, layers=None, folded=None, **kwargs):
        self.quant_method = QUANT_METHOD
        if config is not None and not isinstance(config, dict):
            if type(config) not in _CONFIGS.values():
                raise TypeError(f"config: expected one of {', '.join(sorted(_CONFIGS))}, got "
                                f"{type(config).__name__}")
            config = {"type": type(config).__name__, **_config_fields(config)}
        self.config = config
        self.layers = layers
        self.folded = folded  # (the BatchNorms quantize_ folded into the convs before them)

    def pyquant_config(self):
        """The pyquant config a float checkpoint is quantized with (checked)."""
        entry = {"": {"config": self.config, "weight_dtype": "float32"}}
        return parse_layer_entries(entry, "quantization_config.config")[""][0]

    def layer_configs(self) -> dict:
        """{layer: (config, weight dtype)} of a pre-quantized checkpoint (checked)."""
        return parse_layer_entries(self.layers, "config.json: quantization_config.layers")

    def folded_batchnorms(self) -> list:
        """The folded BatchNorms' names (checked)."""
        folded = self.folded or []
        if not (isinstance(folded, list) and all(isinstance(n, str) for n in folded)):
            raise ValueError("config.json: quantization_config.folded: expected a list of "
                             f"BatchNorm names, got {folded!r}")
        return folded

    def record(self, model: nn.Module, layers: dict | None = None) -> None:
        """Names model's quantized layers (quantized_layers(model) unless given) and folded
        BatchNorms (as save_pretrained writes them)."""
        self.layers = layer_entries(model, layers)
        self.folded = [fqn for fqn, m in model.named_modules()
                       if isinstance(m, FoldedIntoConv)] or None

    def to_dict(self) -> dict:
        return {"quant_method": QUANT_METHOD, "config": self.config, "layers": self.layers,
                "folded": self.folded}


class PyquantHfQuantizer(HfQuantizer):
    """Loads checkpoints saved from pyquant-quantized models; quantizes float ones."""
    requires_calibration = False

    def validate_environment(self, *args, **kwargs):
        q = self.quantization_config
        if self.pre_quantized and not q.layers:
            raise ValueError("config.json: quantization_config (pyquant) names no quantized layer")
        if not self.pre_quantized:
            q.pyquant_config()  # (a clear error before the weights load)

    def update_dtype(self, dtype):
        self._dtype = dtype  # (the dtype from_pretrained loads the float layers in)
        return dtype

    def _process_model_before_weight_loading(self, model, **kwargs):
        if not self.pre_quantized:
            return
        q = self.quantization_config
        configs = _in_model(model, q.layer_configs())
        self._file_modules = _file_modules(kwargs.get("checkpoint_files"), model)
        folded = set(_in_model(model, dict.fromkeys(q.folded_batchnorms())))
        # (first, as quantize_ did: a BatchNorm folded into its conv, both as the file has them)
        fold_batchnorm_(model, lambda m, fqn: True, "all", "from_pretrained",
                        pair_filter=lambda conv, bn: bn in folded)
        left = [n for n in folded if not isinstance(model.get_submodule(n), FoldedIntoConv)]
        if left:
            raise ValueError(f"config.json: quantization_config (pyquant) names {left[0]!r} a "
                             "BatchNorm folded into the conv before it, which it is not in "
                             f"{type(model).__name__}")
        # (converting runs record: the converted layers' weights leave the tie maps)
        convert_as_saved(model, {fqn: cfg for fqn, (cfg, _) in configs.items()})
        set_weight_dtypes(model, _weight_dtypes(model, configs, getattr(self, "_dtype", None)))
        # the converted layers' own tensors: put back and loaded properly after transformers has
        # assigned the checkpoint's in their place
        self._placeholders = _placeholders(model, configs)

    def _process_model_after_weight_loading(self, model, **kwargs):
        if not self.pre_quantized:
            from .api import quantize_
            quantize_(model, self.quantization_config.pyquant_config())
        else:
            _load_checked(model, self._placeholders)
            del self._placeholders
            _check_made_up(model, self._file_modules)
        self.quantization_config.record(model)  # (as named in this model)
        return model

    def _dequantize(self, model, dtype=None):
        """transformers' ``model.dequantize()``: float modules with the weights the quantized
        layers multiplied by (pyquant.dequantize_); transformers then drops the config."""
        from .dequantize import dequantize_
        # (transformers passes the config's dtype: the layers already report the dtypes
        # from_pretrained loaded them in, keep-in-float32 modules included)
        if dtype == getattr(model.config, "dtype", None):
            dtype = None
        return dequantize_(model, dtype=dtype)

    def is_serializable(self, *args, **kwargs):
        return True

    @property
    def is_trainable(self):
        return False


def register() -> None:
    """Registers PyquantConfig and its quantizer with transformers (once; transformers before
    4.45 has no registry: nothing)."""
    from transformers.quantizers import auto
    if not hasattr(auto, "register_quantizer"):
        return
    if QUANT_METHOD not in auto.AUTO_QUANTIZATION_CONFIG_MAPPING:
        auto.register_quantization_config(QUANT_METHOD)(PyquantConfig)
    if QUANT_METHOD not in auto.AUTO_QUANTIZER_MAPPING:
        auto.register_quantizer(QUANT_METHOD)(PyquantHfQuantizer)


def record(model: nn.Module) -> None:
    """Writes the quantized layers of each outermost transformers model in ``model`` into its
    config (save_pretrained's config.json); from now on save_pretrained does it first too (for
    a model quantized in parts: quantize_ on its decoder layers cannot see the model)."""
    from transformers import PreTrainedModel
    _record_on_save(PreTrainedModel)
    done = []
    for fqn, m in model.named_modules():
        if not isinstance(m, PreTrainedModel) or any(fqn.startswith(d) for d in done):
            continue
        done.append(fqn + "." if fqn else "")
        layers = quantized_layers(m)
        if not layers:  # (after dequantize_: a config left from before would say otherwise)
            if isinstance(getattr(m.config, "quantization_config", None), PyquantConfig):
                del m.config.quantization_config
            continue
        register()
        m.config.quantization_config = PyquantConfig()
        m.config.quantization_config.record(m, layers)
        _drop_stale_ties(m)


def _record_on_save(pretrained: type) -> None:
    """PreTrainedModel.save_pretrained records the model's quantized layers first (once)."""
    save = pretrained.save_pretrained
    if getattr(save, "_pyquant_records", False):
        return

    @functools.wraps(save)
    def save_pretrained(self, *args, **kwargs):
        record(self)
        return save(self, *args, **kwargs)
    save_pretrained._pyquant_records = True
    pretrained.save_pretrained = save_pretrained


def _file_modules(files, model: nn.Module):
    """The model's names of the modules a checkpoint holds tensors of (None: not known)."""
    paths = [str(p) for p in files or ()]
    if not paths:
        return None
    to_model = _namer(model)
    found = set()
    for path in paths:
        if path.endswith(".safetensors"):
            import safetensors
            with safetensors.safe_open(path, framework="pt") as f:
                keys = list(f.keys())
        else:  # (a torch.save file: mapped, not read)
            keys = list(torch.load(path, map_location="cpu", mmap=True, weights_only=True))
        found |= {name for k in keys if (name := to_model(k.rpartition(".")[0])) is not None}
    return found


def _drop_stale_ties(model: nn.Module) -> None:
    """Takes the weights a quantized layer no longer has (a quantized LM head's) out of
    transformers' tied-weight maps, which would tie them at load (the config stays as it is:
    T5 reads tie_word_embeddings for its decoder's scaling, BART ties its encoder's and
    decoder's tables to the shared one)."""
    for m in model.modules():
        tied = getattr(m, "all_tied_weights_keys", None)
        if not isinstance(tied, dict) or not tied:
            continue
        # (parameters only: transformers ties parameters, and a converted layer's bias is a
        # buffer, BERT's MLM decoder's)
        names = {n for n, _ in m.named_parameters(remove_duplicate=False)}
        for target, source in list(tied.items()):
            if target not in names or source not in names:
                del tied[target]
                # (dequantize_ ties them again where the float values agree: retie_dropped)
                m.__dict__.setdefault("_pq_untied", {})[target] = source


def retie_dropped(model: nn.Module) -> None:
    """After dequantize_: the tie-map entries _drop_stale_ties took out come back, and their
    parameters are tied again, where both sides are float parameters with equal values (a
    quantized LM head and a table quantized alike); the others stay untied (their values
    differ: tying would change the model)."""
    for m in model.modules():
        untied = m.__dict__.pop("_pq_untied", None)
        tied = getattr(m, "all_tied_weights_keys", None)
        if not untied or not isinstance(tied, dict):
            continue
        params = dict(m.named_parameters(remove_duplicate=False))
        for target, source in untied.items():
            t, src = params.get(target), params.get(source)
            if t is None or src is None:
                continue
            if t is src or (t.shape == src.shape and t.dtype == src.dtype and torch.equal(t, src)):
                parent, _, leaf = target.rpartition(".")
                setattr(m.get_submodule(parent) if parent else m, leaf, src)
                tied[target] = source


def _in_model(model: nn.Module, configs: dict) -> dict:
    """configs ({layer: ...} as saved) named as in model: a checkpoint of a model with a head
    loads into its base model (AutoModel: "model.layers.0..." is "layers.0..."), the other way
    round, and into a sibling head class (ForSequenceClassification from a ForCausalLM one);
    layers the model does not have are left out, as transformers leaves out their weights (a
    new head is float, initialised by transformers)."""
    to_model = _namer(model)
    return {name: entry for fqn, entry in configs.items() if (name := to_model(fqn)) is not None}


def _namer(model: nn.Module):
    """A function from a module name as saved to the model's name for it (None: not in it)."""
    names = {n for n, _ in model.named_modules()}
    prefix = getattr(model, "base_model_prefix", "") or ""

    def to_model(fqn: str):
        for name in (fqn, f"{prefix}.{fqn}" if prefix else None,
                     fqn[len(prefix) + 1:] if prefix and fqn.startswith(prefix + ".") else None):
            if name is not None and name in names:
                return name
        return None
    return to_model


def _weight_dtypes(model: nn.Module, configs: dict, dtype) -> dict:
    """The dtype each converted layer's weight reports: the one from_pretrained loads the float
    layers in (transformers' plan: its keep-in-float32 modules), as a float layer would have;
    without one, the saved layer's."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return {fqn: saved for fqn, (_, saved) in configs.items()}
    plan = model._get_dtype_plan(dtype) if hasattr(model, "_get_dtype_plan") else {}
    return {fqn: next((d for key, d in plan.items() if re.search(key, fqn)), dtype)
            for fqn in configs}


def _check_made_up(model: nn.Module, file_modules) -> None:
    """No weight of the model was made up by transformers (it flags each tensor it read) where
    the checkpoint says it should not be: a module the file holds in another form (a quantized
    layer or table config.json leaves out), a BatchNorm (one it leaves out of the folds), an
    experts block (saved under legacy names). Others are transformers' to initialise, as for
    float checkpoints: a new head, weights a model never saves (Marian's positions)."""
    blocks = {n for n, m in model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) or is_experts(m)}
    made_up = []
    for name, p in model.named_parameters():
        owner = name.rpartition(".")[0]
        if getattr(p, "_is_hf_initialized", False) or p.is_meta:  # (meta: offloaded)
            continue
        if owner in blocks or (file_modules is not None and owner in file_modules):
            made_up.append(name)
    if made_up:
        raise ValueError(f"from_pretrained: the checkpoint holds no {', '.join(made_up[:4])}"
                         f"{', ...' if len(made_up) > 4 else ''}: config.json's "
                         "quantization_config (pyquant) does not describe its weights (a layer "
                         "it leaves out would load float, with made-up weights)")


def _placeholders(model: nn.Module, configs: dict) -> dict:
    """{module name: (its parameters, its buffers, the keys it awaits)} in the converted layers,
    as converted; the layers then let transformers read their (placeholder) state dict."""
    found = {}
    for fqn, m in model.named_modules():
        if any(fqn == layer or fqn.startswith(layer + ".") for layer in configs):
            found[fqn] = (dict(m._parameters), dict(m._buffers), m.__dict__.get("_awaiting_load"))
            if isinstance(m, AwaitsLoad):
                m._awaiting_load = False
            # (loaded and checked here: transformers' initialisation would write their weights,
            # or look for those a converted block no longer has, a MoE experts block's)
            m._is_hf_initialized = True
    return found


def _load_checked(model: nn.Module, placeholders: dict) -> None:
    """The tensors transformers assigned in the converted layers, loaded again through
    load_state_dict (the checks of an untrusted state dict) into the placeholders; a tensor the
    checkpoint did not hold is a ValueError naming it."""
    state, left = {}, []
    for fqn, (params, bufs, awaiting) in placeholders.items():
        m = model.get_submodule(fqn)
        if awaiting is not None:
            m._awaiting_load = awaiting
        for store, before in ((m._parameters, params), (m._buffers, bufs)):
            for name, t in list(store.items()):
                key = f"{fqn}.{name}" if fqn else name
                # (transformers flags each tensor it read from the checkpoint; one it made up
                # for a missing key, not)
                if t is not None and t is not before.get(name):
                    if getattr(t, "_is_hf_initialized", False):
                        # (the layer's own copy, not a view of a mapped file; large buffers are
                        # copied into huge pages as they load)
                        t = t.detach()
                        state[key] = t if _want_hugepages(t) else t.clone()
                    else:
                        left.append(key)
                store[name] = before.get(name)
    model.load_state_dict(state, strict=False, assign=True)
    left += [k for fqn in placeholders for k in (
        model.get_submodule(fqn).unloaded_keys(prefix=fqn + ".")
        if isinstance(model.get_submodule(fqn), AwaitsLoad) else ()) if k not in left]
    left += [f"{fqn}.{n}" for fqn in placeholders
             for n, t in model.get_submodule(fqn).named_parameters(recurse=False) if t.is_meta]
    if left:
        raise ValueError(f"from_pretrained: the checkpoint holds no {', '.join(left[:4])}"
                         f"{', ...' if len(left) > 4 else ''} (a quantized layer's weights): "
                         "it was not saved from this pyquant-quantized model")


register()  # (here too: importing transformers' quantizers above may have run pyquant's hook
# while this module was only half made, which then leaves the registration to it)
