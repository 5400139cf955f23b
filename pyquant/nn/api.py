"""pyquant.quantize_ (torchao's convention) and static-activation calibration."""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Mapping
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from .configs import GRUConfig, Int8Config, LUT2Config, SparqConfig, WeightOnlyConfig
from .attention import QuantMultiheadAttention, is_mha
from .experts import QuantExperts, is_experts
from .recurrent import MIN_LSTM_HIDDEN, QuantRNN, is_rnn, worth_converting
from .conv_gain import MIN_CONV_OUT, MIN_CONV_PRODUCTS
from .conv_gain import transposed_worth_converting
from .conv_gain import worth_converting as conv_worth_converting
from .conv_transpose import QuantConvTranspose1d, QuantConvTranspose2d
from .embedding import TABLE_TYPES, QuantEmbedding, _plain_embedding, quantized_table
from .fold_bn import check_fold_option, fold_batchnorm_
from .grouped_conv import QuantGroupedConv1d, QuantGroupedConv2d
from .modules import QuantConv1d, QuantConv2d, QuantLinear, _QuantModule
from .schemes import empty_weight_cache
from .schemes import range_overflows

_HANDLERS: dict[type, Callable] = {}
_CONVERTED_LAYERS = (_QuantModule, QuantEmbedding)  # (quantize_ never converts these again)


def register_quantize_module_handler(config_type: type):
    """Decorator: ``fn(module, config) -> new module`` is how ``config_type`` swaps a module."""
    def deco(fn):
        _HANDLERS[config_type] = fn
        return fn
    return deco


def is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2 family): a linear layer ``y = x @ W + b`` with the weight
    stored transposed, ``[in, out]`` (matched by name and shape: no transformers import)."""
    w = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2
            and w.shape[1] == getattr(module, "nf", None))


def _swap(module: nn.Module, config):
    if isinstance(module, nn.Linear):
        return QuantLinear.from_linear(module, config)
    if isinstance(module, nn.Conv2d):
        return (QuantGroupedConv2d if module.groups > 1 else QuantConv2d).from_conv(module, config)
    if isinstance(module, nn.Conv1d):
        return (QuantGroupedConv1d if module.groups > 1 else QuantConv1d).from_conv(module, config)
    if isinstance(module, nn.ConvTranspose2d):
        return QuantConvTranspose2d.from_conv(module, config)
    if isinstance(module, nn.ConvTranspose1d):
        return QuantConvTranspose1d.from_conv(module, config)
    if is_conv1d(module):
        return QuantLinear.from_conv1d(module, config)
    if is_experts(module):
        return QuantExperts(module, config)
    if is_mha(module):
        return QuantMultiheadAttention(module, config)
    if is_rnn(module):
        return QuantRNN(module, config)
    if isinstance(module, TABLE_TYPES):
        return quantized_table(module, config)
    raise TypeError(f"module: {type(module).__name__} cannot be quantized (nn.Linear, nn.Conv2d, "
                    "nn.Conv1d, nn.ConvTranspose2d/1d, nn.MultiheadAttention, nn.LSTM/GRU/RNN, "
                    "nn.Embedding/EmbeddingBag, transformers' Conv1D or an MoE experts block)")


def convertible(module: nn.Module) -> bool:
    """A layer the configs' handler converts (whatever a filter says)."""
    return (isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv1d)) or is_conv1d(module)
            or is_conv_transpose(module) or is_experts(module) or is_mha(module)
            or is_rnn(module) or _plain_embedding(module))


def is_conv_transpose(module: nn.Module) -> bool:
    """An nn.ConvTranspose2d / 1d with groups=1 (grouped transposed convs stay float)."""
    return isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose1d)) and module.groups == 1


for _cfg in (Int8Config, WeightOnlyConfig, LUT2Config, SparqConfig):
    register_quantize_module_handler(_cfg)(_swap)


def _plain(module: nn.Module, base: type) -> bool:
    """``base`` itself, or a subclass that keeps ``base``'s forward and whose parent calls it
    (not torch's NonDynamicallyQuantizableLinear: MultiheadAttention reads its out_proj's
    weight directly)."""
    if type(module) is base:
        return True
    return (isinstance(module, base) and type(module).forward is base.forward
            and not isinstance(module, NonDynamicallyQuantizableLinear))


_CONVERTED_BASES = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d, nn.ConvTranspose1d,
                    nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN)


def _own_forward(module: nn.Module) -> bool:
    """A subclass of a converted layer type (_CONVERTED_BASES) with a forward of its
    own (e.g. a weight-standardized conv): converting it would drop what that forward does."""
    return any(isinstance(module, base) and type(module).forward is not base.forward
               for base in _CONVERTED_BASES)


def every_layer_filter(module: nn.Module, fqn: str) -> bool:
    """Every layer quantize_ can convert: nn.Linear, nn.Conv2d and nn.Conv1d (grouped too),
    nn.ConvTranspose2d / 1d (groups=1: pyquant/nn/conv_transpose.py), nn.MultiheadAttention (its
    four projections: pyquant/nn/attention.py), nn.LSTM / nn.GRU / nn.RNN
    (pyquant/nn/recurrent.py), transformers' Conv1D and MoE experts blocks (3-D expert
    weights: pyquant/nn/experts.py), and subclasses of those torch types that keep their forward
    (already-quantized modules never match). Left float: subclasses with a forward of their own,
    and a MultiheadAttention's out_proj on its own (the attention module converts it); embedding
    tables are ``embedding_filter``'s (pyquant/nn/embedding.py). Pass it as
    ``filter_fn`` to convert the layers ``default_filter`` leaves float because they run faster
    float (accuracy studies, or a CPU where they gain)."""
    return (is_rnn(module) or _plain(module, nn.Linear) or _plain(module, nn.Conv2d)
            or _plain(module, nn.Conv1d) or is_conv1d(module) or is_experts(module)
            or is_mha(module) or (is_conv_transpose(module) and (
                _plain(module, nn.ConvTranspose2d) or _plain(module, nn.ConvTranspose1d)))) \
        and _has_weights(module)


def default_filter(module: nn.Module, fqn: str) -> bool:
    """quantize_'s default: ``every_layer_filter`` less the convs with too few products per
    output pixel to gain (pyquant/nn/conv_gain.py: stems, narrow 1x1 convs, depthwise and
    ResNeXt-style grouped convs stay float, and transposed convs with few products per input
    pixel; a lazy conv matches, and its conversion says it is not initialized). quantize_ also
    leaves narrow LSTMs float under LUT2 "mse" and 2:4 SPARQ (recurrent.MIN_LSTM_HIDDEN).
    quantize_ warns about each layer it leaves float this way."""
    if not every_layer_filter(module, fqn):
        return False
    if is_conv_transpose(module):
        return _lazy(module) or transposed_worth_converting(module)
    is_conv = _plain(module, nn.Conv2d) or _plain(module, nn.Conv1d)
    return not is_conv or _lazy(module) or conv_worth_converting(module)


def _lazy(layer: nn.Module) -> bool:
    """A lazy layer before its first forward (its shape is not known yet)."""
    return isinstance(getattr(layer, "weight", None), nn.parameter.UninitializedParameter)


def _has_weights(layer: nn.Module) -> bool:
    """False for a layer without weights (e.g. nn.Linear(0, n)): nothing to quantize."""
    w = getattr(layer, "weight", None)
    return not isinstance(w, torch.Tensor) or isinstance(w, nn.parameter.UninitializedParameter) \
        or w.numel() > 0


def _default_filter_for(config) -> Callable:
    """default_filter, less the recurrent layers that run faster float under config."""
    def keep(module: nn.Module, fqn: str) -> bool:
        return default_filter(module, fqn) and (not is_rnn(module)
                                                or worth_converting(module, config))
    return keep


def _warn_left_float(model: nn.Module, caller: str = "quantize_", config=None) -> None:
    """quantize_ / gptq_ with the default filter: say which layers it leaves float and why."""
    def names(pred):
        found = [fqn or "(root)" for fqn, m in model.named_modules() if pred(m)]
        return len(found), ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")

    n, listed = names(_own_forward)
    if n:
        warnings.warn(
            f"{caller}: left float {n} nn.Linear/Conv2d/Conv1d/ConvTranspose2d/ConvTranspose1d/"
            f"MultiheadAttention/LSTM/GRU/RNN "
            f"subclass(es) with a forward of their own ({listed}); to convert them anyway "
            f"(their forward's extra work is dropped) pass e.g. filter_fn=lambda m, fqn: "
            f"isinstance(m, nn.Linear) (every_layer_filter leaves them float too)", stacklevel=3)
    n, listed = names(lambda m: "expert" in type(m).__name__.lower() and not is_experts(m)
                      and any(p.dim() >= 3 for p in m.parameters(recurse=False)))
    if n:
        warnings.warn(
            f"{caller}: left float {n} MoE experts block(s) of a layout it does not convert "
            f"({listed}): 3-D expert weights without transformers' @use_experts_implementation "
            "forward (pyquant/nn/experts.py); often most of the model's weights", stacklevel=3)
    n, listed = names(lambda m: is_rnn(m) and not worth_converting(m, config))
    if n:
        warnings.warn(
            f"{caller}: left float {n} LSTM layer(s) with a hidden size below {MIN_LSTM_HIDDEN} "
            f"({listed}): under {config!r} PyTorch's fused fp32 cell runs them faster than "
            "QuantRNN's steps; pass filter_fn to convert them anyway", stacklevel=3)
    def plain_conv(m):  # (a float conv the default filter considers)
        return (_plain(m, nn.Conv2d) or _plain(m, nn.Conv1d)) and not _lazy(m) and _has_weights(m)

    n, listed = names(lambda m: plain_conv(m) and not conv_worth_converting(m))
    if n:
        warnings.warn(
            f"{caller}: left float {n} nn.Conv2d/nn.Conv1d layer(s) with few products per output "
            f"pixel (fewer than {MIN_CONV_OUT} output channels or {MIN_CONV_PRODUCTS} output "
            f"channels x kernel taps x input channels per group, e.g. a stem or depthwise conv: "
            f"{listed}): PyTorch's float conv runs them faster (pyquant/nn/conv_gain.py); pass "
            "filter_fn to convert them anyway", stacklevel=3)
    n, listed = names(lambda m: is_conv_transpose(m) and not _lazy(m) and _has_weights(m)
                      and not transposed_worth_converting(m) and not _own_forward(m))
    if n:
        warnings.warn(
            f"{caller}: left float {n} nn.ConvTranspose2d/1d layer(s) with few products per input "
            f"pixel (fewer than {MIN_CONV_OUT} kernel taps x output channels or "
            f"{MIN_CONV_PRODUCTS} of those x input channels, e.g. an image generator's last "
            f"layer: {listed}): PyTorch's float conv runs them faster (pyquant/nn/conv_gain.py); "
            "pass filter_fn to convert them anyway", stacklevel=3)
    n, listed = names(lambda m: plain_conv(m) and conv_worth_converting(m))
    if n and isinstance(config, LUT2Config) and config.a_scale == "mse":
        warnings.warn(
            f"{caller}: {config!r} searches the activation scale of every output pixel of its "
            f"{n} conv(s) ({listed}), ~1-2 us each (a 56x56 map: ~5 ms), often more than the conv "
            "itself; LUT2Config(a_scale='minmax') runs them 2-6x faster (a cruder scale), or "
            "calibrate() the model for static ranges", stacklevel=3)
    n, listed = names(lambda m: isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)))
    if n:
        warnings.warn(f"{caller}: left float {n} nn.Conv3d/nn.ConvTranspose3d layer(s) "
                      f"({listed}): pyquant converts 1-D and 2-D convs only", stacklevel=3)
    n, listed = names(lambda m: isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose1d))
                      and m.groups > 1)
    if n:
        warnings.warn(f"{caller}: left float {n} grouped nn.ConvTranspose2d/1d layer(s) "
                      f"({listed}): QuantConvTranspose2d/1d take groups=1", stacklevel=3)


def quantize_(model: nn.Module, config, *, filter_fn: Callable | None = None,
              fold_batchnorm: bool | str = True) -> nn.Module:
    """Replaces, in place, every submodule for which ``filter_fn(module, fqn)`` is true by its
    quantized version for ``config``; returns ``model``. ``fqn`` is the dotted name from the root
    ("" for the root itself, which cannot be swapped in place and is returned swapped instead).

    ``fold_batchnorm``: True folds an eval-mode BatchNorm right after a converted conv into it
    (the BN becomes ``nn.Identity``; pyquant/nn/fold_bn.py); ``"all"`` also the BatchNorms of
    the plain convs left float (the float model's own inference speed-up: a MobileNetV2's
    depthwise convs); False keeps the structure of models quantized before the 36th session
    (their state dicts load into it).

    A layer that cannot be converted (a NaN or infinite weight, ...) raises ValueError or
    TypeError naming it (``layer 'fqn': ...``); the layers converted before it stay converted,
    so calling quantize_ again after the fix converts the rest.
    """
    _check_model(model)
    handler = check_config(config)
    check_fold_option(fold_batchnorm)
    check_filter(filter_fn)
    if filter_fn is None:
        _warn_left_float(model, config=config)
        filter_fn = _default_filter_for(config)
    fold_batchnorm_(model, filter_fn, fold_batchnorm)
    before = _quantized_layers(model)
    tables = {id(m.weight): fqn for fqn, m in model.named_modules()
              if isinstance(m, TABLE_TYPES) and filter_fn(m, fqn)}
    model = _convert(model, config, handler, filter_fn)
    _warn_tied_tables(model, tables)
    others = {repr(m.config) for m in before if m.config != config}
    if others and len(_quantized_layers(model)) == len(before):
        warnings.warn(
            f"quantize_: converted no layer: the model's layers are quantized already (with "
            f"{', '.join(sorted(others))}) and quantize_ converts float layers only; to compare "
            f"configs, quantize a copy of the float model each time (copy.deepcopy before the "
            f"first quantize_)", stacklevel=2)
    elif not before and not _quantized_layers(model) and not _has_convertible_type(model):
        warnings.warn(
            f"quantize_: converted no layer: {type(model).__name__} has no float layer that "
            f"filter_fn selects among those quantize_ converts (nn.Linear, nn.Conv1d/2d, "
            f"nn.ConvTranspose1d/2d, nn.MultiheadAttention, nn.LSTM/GRU/RNN, transformers' "
            f"Conv1D and experts blocks; a model quantized by torch.ao.quantization or compiled "
            f"by torch.jit.script has none)", stacklevel=2)
    return model


def _warn_tied_tables(model: nn.Module, tables: dict) -> None:
    """A converted table whose float weight another, float layer still holds (an LM head tied to
    it): the model keeps the float table and gains the codes."""
    held = [(tables[id(p)], name) for name, p in model.named_parameters(remove_duplicate=False)
            if id(p) in tables]
    if held:
        table, name = held[0]
        warnings.warn(f"quantize_: the embedding table {table!r} was quantized, but its float "
                      f"weight stays in memory as {name!r} (tied weights), so the model grew by "
                      "the codes; quantize that layer too (the default filter converts an LM head)",
                      stacklevel=3)


def _quantized_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, _CONVERTED_LAYERS)]


def check_config(config) -> Callable:
    """The handler that swaps modules for ``config``; TypeError for a class or an unknown type."""
    if isinstance(config, type):
        raise TypeError(f"config: expected a config instance such as {config.__name__}(), got the "
                        f"class {config.__name__} itself")
    handler = _HANDLERS.get(type(config))
    if handler is None and isinstance(config, GRUConfig):
        raise TypeError("config: GRUConfig configures pyquant.nn.QuantGRU, which is built from a "
                        "calibrated nn.GRU with QuantGRU.from_gru(gru, config, calib=inputs); "
                        "quantize_ converts nn.GRU under Int8Config, WeightOnlyConfig, LUT2Config "
                        "or SparqConfig (QuantRNN)")
    if handler is None:
        known = ", ".join(sorted(c.__name__ for c in _HANDLERS))
        raise TypeError(f"config: no handler registered for {type(config).__name__} (expected "
                        f"one of {known}, or a type registered with "
                        "register_quantize_module_handler)")
    return handler


def _convert(model: nn.Module, config, handler, filter_fn) -> nn.Module:
    """The swap quantize_ and gptq_ share: ``handler(module, config)`` for every matching module
    (the root itself is returned swapped), then encoder fast paths off where they would read a
    quantized layer's float weight."""
    with empty_weight_cache():
        if not isinstance(model, _CONVERTED_LAYERS) and filter_fn(model, ""):
            return _named_swap(model, config, handler, "(root)")
        # a module under several names is converted if filter_fn selects it under any of them
        selected = {id(m) for fqn, m in model.named_modules(remove_duplicate=False)
                    if fqn and not isinstance(m, _CONVERTED_LAYERS) and filter_fn(m, fqn)}
        _replace(model, config, handler, lambda m, fqn: id(m) in selected, "")
    _no_encoder_fast_path(model)
    _name_layers(model)
    record_for_transformers(model)
    return model


def record_for_transformers(model: nn.Module) -> None:
    """A transformers model records its quantized layers in its config, so save_pretrained's
    config.json says how it was quantized (pyquant/nn/hf.py). (No transformers model can exist
    before its modeling_utils is imported: a torch model costs nothing here.)"""
    if "transformers.modeling_utils" in sys.modules:
        from . import hf  # (imports transformers, and checkpoint, which imports this module)
        hf.record(model)


def _name_layers(model: nn.Module) -> None:
    """Each quantized layer keeps its name in the model, for errors that name it (a backward
    through it: modules.layer_name)."""
    for fqn, m in model.named_modules():
        if fqn and isinstance(m, (*_CONVERTED_LAYERS, QuantRNN)):
            m._pq_name = fqn


def run_batch(model: nn.Module, batch, **extra):
    """One calibration batch: a tensor, a tuple/list of positional arguments, or a mapping of
    keyword arguments (a tokenizer's output). A named tuple is one argument (a PackedSequence).
    ``extra``: keyword arguments added (over the batch's own)."""
    if isinstance(batch, Mapping):
        return model(**{**batch, **extra})
    if isinstance(batch, (tuple, list)) and not hasattr(batch, "_fields"):
        return model(*batch, **extra)
    return model(batch, **extra)


def _no_encoder_fast_path(model: nn.Module) -> None:
    """nn.TransformerEncoderLayer's inference fast path (and nn.TransformerEncoder's nested-tensor
    one) read linear1/linear2's float weights directly (PyTorch's own quantize_dynamic crashes
    there): with a quantized layer inside they keep their module path. The two flags only gate
    those fast paths."""
    for m in model.modules():
        if (isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerEncoder))
                and any(isinstance(sub, _QuantModule) for sub in m.modules())):
            flag = ("activation_relu_or_gelu" if isinstance(m, nn.TransformerEncoderLayer)
                    else "use_nested_tensor")
            m.__dict__.setdefault("_pq_fast_path", (flag, getattr(m, flag)))  # (dequantize_)
            setattr(m, flag, 0 if flag == "activation_relu_or_gelu" else False)


def _swapped(module: nn.Module, config, handler) -> nn.Module:
    """handler's module in ``module``'s mode: a new module starts in training mode, and a
    QuantRNN or QuantMultiheadAttention applies its dropout there, as the float layer would."""
    new = handler(module, config)
    if not isinstance(new, nn.Module):
        return new
    norm = _weight_norm(module)
    if norm is not None:
        new._pq_weight_norm = norm  # (dequantize_ puts it back)
    return new.train(module.training)


def _weight_norm(module: nn.Module) -> tuple | None:
    """("parametrization" | "hook", dim) if ``module.weight`` is weight-normed (the new
    parametrization, or the old forward pre-hook: wav2vec2's positional conv), else None."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.weight_norm import WeightNorm
    if parametrize.is_parametrized(module, "weight"):
        plist = module.parametrizations.weight
        if len(plist) == 1 and type(plist[0]).__name__ == "_WeightNorm":
            return ("parametrization", plist[0].dim)
        return None
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm) and hook.name == "weight":
            return ("hook", hook.dim)
    return None


def _named_swap(module: nn.Module, config, handler, fqn: str) -> nn.Module:
    """_swapped, with a ValueError / TypeError from the conversion prefixed by the layer's name
    (``layer 'fqn': ...``; the layers swapped before it stay swapped)."""
    try:
        return _swapped(module, config, handler)
    except (ValueError, TypeError) as e:
        if type(e) in (ValueError, TypeError) and not str(e).startswith("layer '"):
            raise type(e)(f"layer '{fqn}': {e}") from e
        raise


def _replace(module: nn.Module, config, handler, filter_fn, prefix: str,
             seen: dict | None = None) -> None:
    """Swaps module's matching children, recursing into the others. A module reachable under
    several names (``self.b = self.a``, or also held in a ModuleList) is swapped once and every
    name gets the same quantized module (``seen``: id -> (module, what replaced it))."""
    seen = {} if seen is None else seen
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if id(child) in seen:
            if seen[id(child)][1] is not child:
                setattr(module, name, seen[id(child)][1])
            continue
        fqn = f"{prefix}.{name}" if prefix else name
        if not isinstance(child, _CONVERTED_LAYERS) and filter_fn(child, fqn):
            new = _named_swap(child, config, handler, fqn)
            seen[id(child)] = (child, new)
            setattr(module, name, new)
        else:
            seen[id(child)] = (child, child)
            _replace(child, config, handler, filter_fn, fqn, seen)


def _quant_modules(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, _QuantModule)]


@contextlib.contextmanager
def calibration(model: nn.Module):
    """Within the block, quantized modules record their input ranges; on exit each gets a static
    activation range = mean over the recorded batches of the batch min and of the batch max
    (the SPARQ paper's rule for the max). Modules that saw no (non-empty) batch keep the range
    they had. If the block raises, or a module saw NaN or inf (ValueError), no range changes.
    Meanwhile every module runs with dynamic ranges, so the ranges recorded do not depend on
    those set before (a second calibration on the same batches gives the same ranges)."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, _QuantModule)}
    saved = {m: m.act_range.clone() for m in names}
    for m in names:
        m._observer = []
        m.act_range.fill_(float("nan"))  # (a static range upstream would clip what is recorded)
    ranges, done = {}, False
    try:
        yield model
        for m, name in names.items():
            if m._observer:
                lo = torch.stack([o[0] for o in m._observer]).float().mean()
                hi = torch.stack([o[1] for o in m._observer]).float().mean()
                if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
                    # a NaN or inf in the calibration data: refused, every range left as it was
                    raise ValueError(f"calibrate: module {name or type(m).__name__!r} saw "
                                     f"non-finite inputs (range [{lo.item()}, {hi.item()}]); no "
                                     "static range was set")
                if bool(range_overflows(lo, hi)):  # (refused at load too: _load.py)
                    raise ValueError(f"calibrate: module {name or type(m).__name__!r} saw the "
                                     f"range [{lo.item()}, {hi.item()}], wider than float32 "
                                     "holds (hi - lo overflows); no static range was set")
                ranges[m] = torch.stack([lo, hi])
        done = True
    finally:
        for m in names:
            m._observer = None
            m.act_range.copy_(ranges[m] if done and m in ranges else saved[m])


def _has_convertible_type(model: nn.Module) -> bool:
    """Whether any module is of a type quantize_ converts (whatever a filter decides; the default
    filter warns about those it leaves float)."""
    return any(isinstance(m, (*_CONVERTED_BASES, *TABLE_TYPES)) or is_conv1d(m) or is_experts(m)
               for m in model.modules())


def check_filter(filter_fn) -> None:
    """A callable (module, fqn) -> bool, or None; a class (filter_fn=nn.Linear) would be called
    as a constructor."""
    if isinstance(filter_fn, type):
        raise TypeError(f"filter_fn: expected a function (module, fqn) -> bool, got the class "
                        f"{filter_fn.__name__}; e.g. filter_fn=lambda m, fqn: isinstance(m, "
                        f"{filter_fn.__name__})")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn: expected a callable (module, fqn) -> bool or None, got "
                        f"{type(filter_fn).__name__}")


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")


def calibrate(model: nn.Module, batches: Iterable) -> nn.Module:
    """Runs ``model`` on each batch (a tensor, a tuple of positional args, or a mapping of
    keyword args such as a tokenizer's output) under
    ``torch.no_grad()`` and sets static activation ranges; returns the model. A compiled model
    (``torch.compile``) is calibrated through its eager module: its graph has no observers."""
    _check_model(model)
    try:  # (once: a DataLoader starts its workers per iter; a map-style Dataset iterates too)
        batch_iter = None if isinstance(batches, (str, bytes)) else iter(batches)
    except TypeError:
        batch_iter = None
    if batch_iter is None:
        raise TypeError(f"batches: expected an iterable of batches (e.g. a list of tensors or a "
                        f"DataLoader), got {type(batches).__name__}")
    run = getattr(model, "_orig_mod", model)
    if not _quantized_layers(run):
        raise ValueError("model: has no quantized layer to calibrate; convert it first with "
                         "pyquant.quantize_(model, config)")
    seen = 0
    with torch.no_grad(), calibration(run):
        for batch in batch_iter:
            run_batch(run, batch)
            seen += 1
        if not seen:  # (an exhausted generator, an empty DataLoader: every range stays)
            raise ValueError("batches: got no batch; nothing was calibrated")
    return model


def reset_calibration(model: nn.Module) -> nn.Module:
    """Back to dynamic per-row activation scales."""
    for m in _quant_modules(model):
        m.act_range.fill_(float("nan"))
    return model
