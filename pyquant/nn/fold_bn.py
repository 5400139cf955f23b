"""BatchNorm folding: an eval-mode BatchNorm that takes a converted conv's or transposed conv's
output (with ``fold_batchnorm="all"``: any plain one's), and nothing else does, becomes part of its
weights and bias (``torch.nn.utils.fusion``, in place: the conv stays the same module object, so
a filter_fn that picks modules still matches it) and the BN module an ``nn.Identity``
(``FoldedIntoConv``, which names it). The quantized conv's epilogue then applies it for free
(its per-channel scale and bias), where a float BatchNorm is a pass of its own over the
activations (docs/notes/nn.md has the measured gain). With per-output-channel float scales (Int8,
LUT2, SPARQ) the codes are the unfolded conv's but for float-rounding ties; WeightOnly's bfloat16
group scales round differently once folded (the values move by the scale's rounding, a few codes
at ties: as accurate against fp32).

A pair is found in the model's torch.fx graph (the conv's only user is the BN; each module is
called once and not otherwise used); in a model that does not trace whole, in the graphs of its
submodules that do (a forward with boolean flags, such as a transformers encoder's
``output_hidden_states=False``, traced with them at their defaults and with each flipped: pairs
found in every variant), and as neighbours in an ``nn.Sequential``. Modules with hooks or
parametrizations, and uninitialized (lazy) tensors, are left alone; on the meta device (a model
built to load a quantized state dict) the fold is made in shapes only, so the structure matches
the saved model's (pyquant/nn/checkpoint.py). Tracing runs the forwards
with proxies (the modules' attributes are restored after it; global side effects are not). Not
seen, so not folded: a block whose forward runs Python on shapes (transformers' MobileNetV2 with
``tf_padding``). Not seen either, so the ways folding can change a result: an untraceable
parent that also calls a traceable child's conv or BN on its own, a flag combination no variant
traced, and a Conv1d + BatchNorm1d pair run on an unbatched 2-D input (the BN then normalizes
over its other axis).
"""
from __future__ import annotations

import copy
import inspect
import warnings
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights

_BN_OF = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d,
          nn.ConvTranspose1d: nn.BatchNorm1d, nn.ConvTranspose2d: nn.BatchNorm2d}
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d)


def _foldable_pair(conv: nn.Module, bn: nn.Module) -> bool:
    """conv's output feeds bn exactly as a float conv + BatchNorm: the BN kind of the conv's
    dimension, one BN channel per conv output channel (a transposed conv: groups=1, the only
    kind quantize_ converts)."""
    return (type(conv) in _BN_OF and type(bn) is _BN_OF[type(conv)]
            and bn.num_features == conv.out_channels
            and not (isinstance(conv, _TRANSPOSED) and conv.groups != 1))


def _graph_pairs(module: nn.Module, graph: torch.fx.Graph) -> list[tuple[str, str]]:
    """(conv, bn) names in ``module``'s fx graph: the conv's only user is the BN, and each of the
    two modules has this one call site and no other use (a shared module, one handed to a
    function, which may call it, or one whose parameters are read elsewhere cannot fold)."""
    modules = dict(module.named_modules())
    calls: dict[int, int] = {}  # module id -> call sites, and other uses: the module passed
    for node in graph.nodes:    # along, or a parameter of it read ("bn.weight")
        if node.op not in ("call_module", "get_attr"):
            continue
        name = node.target
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        if name in modules:
            key = id(modules[name])
            calls[key] = calls.get(key, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if (user.op == "call_module" and user.args == (node,) and not user.kwargs
                and _foldable_pair(modules[node.target], modules[user.target])
                and calls[id(modules[node.target])] == 1 and calls[id(modules[user.target])] == 1):
            pairs.append((node.target, user.target))
    return pairs


def _pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    """(conv, bn) names under ``module``: from its fx graph when it traces, else from its own
    children if it is a plain nn.Sequential (whose forward feeds each child's output to the next
    child only) and from each child that holds a BatchNorm, traced the same way (a transformers
    model does not trace whole, but its conv blocks do)."""
    graphs = _traced_with_flags(module)
    if graphs is not None:  # (with flags: the pairs of every variant)
        found = [set(_graph_pairs(module, g)) for g in graphs]
        return [(prefix + c, prefix + b) for c, b in sorted(set.intersection(*found))]
    pairs = []
    names = list(module._modules)
    if type(module) is nn.Sequential:
        pairs += [(prefix + a, prefix + b) for a, b in zip(names, names[1:])
                  if _foldable_pair(module._modules[a], module._modules[b])]
    for name in names:
        child = module._modules[name]
        if child is not None and _has_batchnorm(child):
            pairs += _pairs(child, f"{prefix}{name}.")
    return pairs


def _trace(module: nn.Module, concrete: dict | None = None) -> torch.fx.Graph | None:
    """One symbolic trace, the modules' attributes restored afterwards (a forward that counts its
    calls or keeps its last input would otherwise keep the trace's proxies): the same objects
    (a hook's RemovableHandle refers to its module's hook dict), lists, dicts and sets with their
    contents as before."""
    saved = []
    for m in module.modules():
        attrs = dict(m.__dict__)
        contents = {k: copy.copy(v) for k, v in attrs.items() if isinstance(v, (list, dict, set))}
        saved.append((m, attrs, contents))
    try:
        return torch.fx.Tracer().trace(module, concrete)
    except Exception:  # data-dependent control flow, Python on shapes, ...
        return None
    finally:
        for m, attrs, contents in saved:
            m.__dict__.clear()
            m.__dict__.update(attrs)
            for k, c in contents.items():
                attrs[k].clear()
                attrs[k].extend(c) if isinstance(c, list) else attrs[k].update(c)


def _traced_with_flags(module: nn.Module) -> list[torch.fx.Graph] | None:
    """[graph] of a plain trace, or the graphs with module.forward's boolean flags at their
    defaults and with each flipped in turn; None if any of them does not trace."""
    graph = _trace(module)
    if graph is not None:
        return [graph]
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    flags = {p.name: p.default for p in params if isinstance(p.default, bool)}
    if not flags:
        return None
    graphs = []
    for flipped in (None, *flags):
        graph = _trace(module, {k: v != (k == flipped) for k, v in flags.items()})
        if graph is None:
            return None
        graphs.append(graph)
    return graphs


def _fold_into(conv: nn.Module, bn: nn.Module) -> None:
    """conv computes conv then bn (eval mode): new weight and bias parameters, same module."""
    with torch.no_grad():
        if any(t.is_meta for t in (*conv.parameters(), *bn.parameters(), *bn.buffers())):
            conv.to("meta")  # (no values on one side: the folded layer has none either)
            bn = copy.deepcopy(bn).to("meta")
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias,
            transpose=isinstance(conv, _TRANSPOSED))  # (its output channels: weight dim 1)


def _has_batchnorm(module: nn.Module) -> bool:
    return any(type(m) in _BN_OF.values() for m in module.modules())


def _plain_state(module: nn.Module) -> bool:
    """Nothing that runs around forward: no hooks (a hook on the BN would be lost, one on the
    conv see the BN's output; old-style weight_norm is a pre-hook), no parametrization, no
    uninitialized (lazy) tensors (quantize_ refuses those later)."""
    if module._forward_hooks or module._forward_pre_hooks or parametrize.is_parametrized(module):
        return False
    return not any(isinstance(t, nn.parameter.UninitializedTensorMixin)
                   for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)))


def _registered_once(model: nn.Module) -> Callable[[nn.Module], bool]:
    seen: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    return lambda m: seen.get(id(m)) == 1


def _set(model: nn.Module, fqn: str, module: nn.Module) -> None:
    parent, _, name = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


class FoldedIntoConv(nn.Identity):
    """Where a BatchNorm was folded into the conv before it: nothing left to compute, and the
    name of what was folded (a transformers config.json lists them: pyquant/nn/hf.py). (Not
    "BatchNorm" in its name: transformers' weight initialisation takes any such class for one.)
    ``unfold``: what dequantize_ needs to put a BatchNorm back (its type and options, its
    float32 weight and bias where known, whether the conv had a bias of its own, and where the
    conv is: ``up`` levels above this module's parent, then the dotted path ``down``)."""

    _is_hf_initialized = True  # (nothing for transformers to initialise)

    def __init__(self, unfold: dict | None = None):
        super().__init__()
        self.unfold = unfold


def _unfold_record(conv: nn.Module, bn: nn.Module, conv_name: str, bn_name: str,
                   trained: bool) -> dict:
    """FoldedIntoConv.unfold for the pair (conv_name, bn_name) of one model. ``trained``: the
    BN's affine parameters are the model's (not a skeleton's about to load folded weights)."""
    conv_parts, bn_parent = conv_name.split("."), bn_name.split(".")[:-1]
    common = 0
    while (common < min(len(conv_parts) - 1, len(bn_parent))
           and conv_parts[common] == bn_parent[common]):
        common += 1
    known = trained and bn.affine and not bn.weight.is_meta

    def kept(t):
        return t.detach().float().clone() if known else None
    return dict(type=type(bn).__name__, num_features=bn.num_features, eps=bn.eps,
                momentum=bn.momentum, affine=bn.affine, conv_bias=conv.bias is not None,
                weight=kept(bn.weight) if bn.affine else None,
                bias=kept(bn.bias) if bn.affine else None,
                up=len(bn_parent) - common, down=".".join(conv_parts[common:]))


def check_fold_option(which) -> None:
    if not (which is True or which is False or which == "all"):
        raise ValueError(f"fold_batchnorm: expected True, False or 'all', got {which!r}")


def fold_batchnorm_(model: nn.Module, convert: Callable[[nn.Module, str], bool],
                    which: bool | str = True, caller: str = "quantize_",
                    pair_filter: Callable[[str, str], bool] | None = None) -> int:
    """Folds, in place, every BatchNorm that follows a conv which ``convert(conv, fqn)`` says will
    be converted (``which=True``), or any plain conv (``which="all"``; False: none); returns how
    many. A BN in training mode (batch statistics) or without running statistics is left alone,
    with a warning for the former (call ``model.eval()`` first); the conv's own mode does not
    matter (a conv computes the same in both). ``pair_filter(conv_fqn, bn_fqn)``: only the
    pairs it passes, whatever the BN's mode (load_quantized_: the pairs a state dict holds
    folded)."""
    check_fold_option(which)
    if which == "all":  # (_foldable_pair takes plain nn.Conv1d / 2d and ConvTranspose1d / 2d only)
        convert = lambda conv, fqn: True  # noqa: E731
    if which is False or not _has_batchnorm(model):
        return 0  # (no trace for models without BatchNorm: every transformer)
    pairs = _pairs(model)
    once = _registered_once(model)
    folded, training = 0, []
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if not (once(conv) and once(bn) and _plain_state(conv) and _plain_state(bn)
                and convert(conv, conv_name)) or bn.running_mean is None:
            continue
        if pair_filter is not None and not pair_filter(conv_name, bn_name):
            continue
        if bn.training and pair_filter is None:
            training.append(bn_name)
            continue
        unfold = _unfold_record(conv, bn, conv_name, bn_name, pair_filter is None)
        _fold_into(conv, bn)
        _set(model, bn_name, FoldedIntoConv(unfold))
        folded += 1
    if training:
        warnings.warn(
            f"{caller}: left {len(training)} BatchNorm layer(s) after convs unfolded "
            f"({', '.join(training[:4])}{', ...' if len(training) > 4 else ''}): the model is in "
            "training mode (batch statistics); call model.eval() before quantizing to fold them "
            "into the convs' epilogues", stacklevel=3)
    return folded
