"""Checks of quantized-module buffers that arrive from outside (load_state_dict, unpickling).

A state dict may come from a file anyone wrote. Every buffer it replaces must keep its dtype and
shape, and every packed weight must pass the kernels' own validator (``_C.validate_packed``) for
this module's op, shape and config, so an edited or damaged weight is a ValueError at load time
and never reaches a kernel. Reference-backend modules hold raw codes (no header): dtype and shape
only.
"""
from __future__ import annotations

import torch

from pyquant import _C
from pyquant.packed import check_replacement, header_op

from .schemes import config_for_op, range_overflows

_FLT_MAX = float(torch.finfo(torch.float32).max)


def _flat(t: torch.Tensor):
    return t.detach().cpu().contiguous().numpy()


def _packed_parts(bufs: dict, where: str) -> list:
    """The packed weights in a module's buffers: ``packed``, or its K-group slices when the
    module uses the per-group layout (``packed_offsets``)."""
    packed = _flat(bufs["packed"])
    if "packed_offsets" not in bufs:
        return [packed]
    off = bufs["packed_offsets"].tolist()
    if (not off or off[0] != 0 or off[-1] != packed.size
            or any(a > b for a, b in zip(off, off[1:]))):
        raise ValueError(f"{where}packed_offsets: expected increasing offsets from 0 to "
                         f"{packed.size} (the size of {where}packed), got {off}")
    return [packed[a:b] for a, b in zip(off, off[1:])]


def check_state_dict(module, state_dict, prefix: str) -> None:
    """Raises TypeError/ValueError (naming the key and the expected value) unless every entry of
    ``state_dict`` that replaces one of ``module``'s buffers is a safe replacement."""
    own = {n: t for n, t in module._buffers.items() if t is not None}
    new = {n: state_dict[prefix + n] for n in own if prefix + n in state_dict}
    if prefix + "weight" in state_dict and "packed" in own and "packed" not in new:
        raise ValueError(f"{prefix}weight: a float weight for the quantized layer "
                         f"{prefix.rstrip('.') or type(module).__name__!r} (a float checkpoint?): "
                         "load it into the float model (model.load_state_dict), then "
                         "pyquant.quantize_(model, config)")
    _check_tensor_kinds(new, prefix)
    _check_same_config(module, new, prefix)
    for name, t in new.items():
        if t.dtype != own[name].dtype:
            raise ValueError(f"{prefix}{name}: expected dtype {own[name].dtype}, got {t.dtype}")
    for name in ("packed", "packed_offsets"):
        if name in new and new[name].dim() != 1:
            raise ValueError(f"{prefix}{name}: expected a 1-D tensor, got shape "
                             f"{list(new[name].shape)}")
    if not module.reference and "packed" in new:
        if "packed_offsets" in own and "packed_offsets" in new:
            if new["packed_offsets"].shape != own["packed_offsets"].shape:
                raise ValueError(f"{prefix}packed_offsets: expected shape "
                                 f"{list(own['packed_offsets'].shape)}, got "
                                 f"{list(new['packed_offsets'].shape)}")
        mine = _packed_parts(own, prefix)
        theirs = _packed_parts({**own, **new}, prefix)
        for a, b in zip(theirs, mine):  # same count: the offsets shapes match
            check_replacement(a, b, f"{prefix}packed")
    _check_side_tensors(module, {n: t.shape for n, t in own.items()}, new, prefix)


def _check_side_tensors(module, shapes: dict, new: dict, prefix: str) -> None:
    """The side tensors (scales, sums, bias, range) of ``new`` against the expected ``shapes``:
    the shape, finite values, the scale bound and a valid activation range."""
    for name, t in new.items():
        if t.shape != shapes[name]:
            raise ValueError(f"{prefix}{name}: expected shape {list(shapes[name])}, "
                             f"got {list(t.shape)}")
    for name, t in new.items():  # scales, offsets, level sums, bias: finite values only
        if name != "act_range" and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{prefix}{name}: expected finite values, got NaN or inf (every "
                             "output it touches would be NaN or inf)")
    _check_scale_bound(module, new, prefix)
    if "act_range" in new:  # checked here, not at the first forward
        lo, hi = new["act_range"].tolist()
        dynamic = lo != lo and hi != hi
        finite = abs(lo) < float("inf") and abs(hi) < float("inf")
        # (a width hi - lo past float32 gave an infinite scale: NaN outputs)
        if not (dynamic or (finite and lo <= hi and not range_overflows(*new["act_range"]))):
            raise ValueError(f"{prefix}act_range: expected [nan, nan] (dynamic) or a finite "
                             f"[lo, hi] with lo <= hi and hi - lo <= {_FLT_MAX:.6g} (static: "
                             f"the width must fit float32), got {[lo, hi]}")


def check_float_buffers(module, state_dict, prefix: str, names) -> None:
    """Float buffers beside the packed layers (an attention block's bias_k / bias_v, in the
    float model's dtype): each entry of ``state_dict`` that replaces one must be a dense
    floating-point tensor of the buffer's shape, finite in the buffer's dtype (load_state_dict
    converts it, as for the float module), else TypeError / ValueError naming the key."""
    own = {n: module._buffers[n] for n in names if module._buffers.get(n) is not None}
    new = {n: state_dict[prefix + n] for n in own if prefix + n in state_dict}
    _check_tensor_kinds(new, prefix)
    for name, t in new.items():
        if not t.is_floating_point():
            raise ValueError(f"{prefix}{name}: expected a floating-point tensor, got {t.dtype}")
        if t.shape != own[name].shape:
            raise ValueError(f"{prefix}{name}: expected shape {list(own[name].shape)}, "
                             f"got {list(t.shape)}")
        if not bool(torch.isfinite(t.detach().to(own[name].dtype)).all()):
            raise ValueError(f"{prefix}{name}: expected finite values (in {own[name].dtype}), "
                             "got NaN or inf")


def _check_scale_bound(module, new: dict, prefix: str) -> None:
    """A loaded w_scale times the largest weight code times K must fit float32: a larger scale
    dequantizes to weights whose row sums overflow (w_off = w_scale * w_sum became inf, and inf
    * a zero point of 0 NaN), and a float32 layer with such weights overflows as well."""
    t = new.get("w_scale")
    if t is None or t.numel() == 0:
        return
    code, k = module.scheme.code_max, max(module.in_features_k, 1)
    limit = _FLT_MAX / (code * k)
    amax = float(t.detach().float().abs().max())
    if amax > limit:
        raise ValueError(f"{prefix}w_scale: expected |values| <= {limit:.6g} (float32's max / "
                         f"(largest weight code {code} x K = {k})), got {amax:.6g}")


def _check_tensor_kinds(new: dict, prefix: str) -> None:
    """Every entry is a dense (strided) tensor holding data: a meta tensor has none and a sparse
    one no flat memory, and both failed later inside torch with messages naming neither."""
    for name, t in new.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{prefix}{name}: expected a tensor, got {type(t).__name__}")
        if t.is_meta or t.layout != torch.strided:
            kind = "a tensor on the meta device" if t.is_meta else f"layout {t.layout}"
            raise TypeError(f"{prefix}{name}: expected a dense tensor with data, got {kind}")


def _check_same_config(module, new: dict, prefix: str) -> None:
    """A weight saved from a module of another config (its packed header names another op) is
    refused as such, before any buffer-by-buffer check could name a mere dtype or shape."""
    packed = new.get("packed")
    if module.reference or not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        return
    theirs = header_op(_flat(packed).reshape(-1))  # (None: the full header check names it)
    mine = module.scheme.packed_op
    if theirs is not None and theirs != mine:
        raise ValueError(f"{prefix}packed: this state dict's weight was packed for {theirs!r} "
                         f"(saved with {config_for_op(theirs)}), but this module holds {mine!r} "
                         f"({module.config!r}); quantize the model with the config it was saved "
                         "with before loading")


def as_plain_buffers(module, state_dict, prefix: str) -> None:
    """Entries that will replace buffers become plain, contiguous, normal (not inference)
    tensors without grad: with ``assign=True`` torch installs the given object itself, and a
    Parameter would turn the buffer into a parameter, a strided one would fail in the kernels.
    Values are unchanged."""
    for name, t in module._buffers.items():
        key = prefix + name
        if t is None or key not in state_dict:
            continue
        v = state_dict[key]
        if v.is_inference():  # (made under inference_mode: calibrate could not update it)
            with torch.inference_mode(False):
                state_dict[key] = v.clone(memory_format=torch.contiguous_format)
        elif isinstance(v, torch.nn.Parameter) or v.requires_grad or not v.is_contiguous():
            state_dict[key] = v.detach().contiguous()


def check_own_buffers(module) -> None:
    """After unpickling a whole module (torch.load with weights_only=False: the file is untrusted
    too): every buffer a layer of its config has, with its dtype and shape (those of a one-column
    layer's fresh buffers, widened to out_features columns), the state-dict path's value checks,
    and packed weights valid for its op and shape."""
    if module.reference:  # (raw codes: its op may not be in this build, and empty_weight packs)
        return
    n, k = module.out_features, module.in_features_k
    where = f"{type(module).__name__} [{n} x {k}, {module.config!r}]: "
    with torch.inference_mode(False), torch.no_grad():
        fresh = module.scheme.empty_weight(1, max(k, 1))
    specs = {name: (t.dtype, (n,) + tuple(t.shape[1:])) for name, t in fresh.items()
             if name not in ("packed", "packed_offsets")}
    specs["act_range"] = (torch.float32, (2,))
    if module._buffers.get("bias") is not None:
        specs["bias"] = (torch.float32, (module._bias_features(),))
    bufs = {name: module._buffers.get(name) for name in specs}
    for name, t in bufs.items():
        if t is None:
            raise ValueError(f"{where}{name}: missing (every such layer has it)")
    _check_tensor_kinds(bufs, where)
    for name, t in bufs.items():
        if t.dtype != specs[name][0]:
            raise ValueError(f"{where}{name}: expected dtype {specs[name][0]}, got {t.dtype}")
    _check_side_tensors(module, {name: torch.Size(s) for name, (_, s) in specs.items()}, bufs,
                        where)
    op = module.scheme.packed_op
    parts = _packed_parts(dict(module._buffers), "")
    ks = []
    for part in parts:
        info = _C.validate_packed(part, op, "packed")
        if info["n"] != module.out_features:
            raise ValueError(f"packed: header field n is {info['n']}, expected "
                             f"{module.out_features} (the module's out_features)")
        ks.append(info["k"])
    if sum(ks) != module.in_features_k:
        raise ValueError(f"packed: header field k is {sum(ks)}, expected "
                         f"{module.in_features_k} (the module's input size)")
