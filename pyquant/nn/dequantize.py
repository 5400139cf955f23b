"""dequantize_: a quantized model back to float modules (fine-tuning, export to another runtime,
accuracy checks, transformers' ``model.dequantize()``).

Each quantized layer becomes the float module it was converted from, in the dtype it reports
(``weight_dtype``), holding ``dequantize_weight()``: the exact weights the kernels multiply by.
The result is the float model with those weights, not the original float one (the rounding of
the weights stays; activations are no longer quantized). Structure and state-dict keys are the
float module's (a GPT-2 ``Conv1D`` is a ``Conv1D`` again, an MHA's projections are packed back
into ``in_proj_weight``, an LSTM's gates back in torch's order, a BatchNorm folded into its conv
a BatchNorm again), so the model saves and loads as any float model of its architecture.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .attention import QuantMultiheadAttention
from .conv_transpose import QuantConvTranspose1d, QuantConvTranspose2d
from .embedding import QuantEmbedding, QuantEmbeddingBag
from .experts import QuantExperts, _up_name
from .fold_bn import FoldedIntoConv
from .grouped_conv import QuantGroupedConv1d, QuantGroupedConv2d
from .gru import QuantGRU
from .modules import AwaitsLoad, QuantConv1d, QuantConv2d, QuantLinear
from .recurrent import QuantRNN


def _param(t: torch.Tensor, dtype) -> nn.Parameter:
    return nn.Parameter(t.detach().to(dtype).clone())


def _weight_and_bias(float_module: nn.Module, weight: torch.Tensor, bias, dtype) -> nn.Module:
    """float_module (built on the meta device) with these values, in dtype."""
    float_module = float_module.to_empty(device="cpu")
    float_module.weight = _param(weight, dtype)
    float_module.bias = None if bias is None else _param(bias, dtype)
    return float_module


def _linear(m: QuantLinear, dtype) -> nn.Module:
    w, bias, dtype = m.dequantize_weight(), m.bias, dtype or m.weight_dtype
    if getattr(m, "_from_conv1d", False):  # transformers' Conv1D: y = x @ W + b, W [in, out]
        from transformers.pytorch_utils import Conv1D
        with torch.device("meta"):
            conv1d = Conv1D(m.out_features, m.in_features)
        return _weight_and_bias(conv1d, w.t(), torch.zeros(m.out_features) if bias is None
                                else bias, dtype)
    with torch.device("meta"):
        lin = nn.Linear(m.in_features, m.out_features, bias=bias is not None)
    return _weight_and_bias(lin, w, bias, dtype)


_CONV_ATTRS = ("kernel_size", "stride", "padding", "dilation", "padding_mode")


def _conv(m: nn.Module, float_type: type, dtype, groups: int = 1) -> nn.Module:
    bias = m.bias
    kw = {a: getattr(m, a) for a in _CONV_ATTRS}
    if float_type in (nn.ConvTranspose2d, nn.ConvTranspose1d):
        kw["output_padding"] = m.output_padding
    with torch.device("meta"):
        conv = float_type(m.in_channels, m.out_channels, groups=groups, bias=bias is not None, **kw)
    return _weight_and_bias(conv, m.dequantize_weight(), bias, dtype or _layer_dtype(m))


def _layer_dtype(m: nn.Module) -> torch.dtype:
    """The float dtype a quantized layer (or a group of them) reports."""
    if hasattr(m, "weight_dtype"):
        return m.weight_dtype
    return m.convs[0].weight_dtype  # (grouped convs: every group's layer has the same)


def _mha(m: QuantMultiheadAttention, dtype) -> nn.Module:
    projections = [m.q_proj, m.k_proj, m.v_proj]
    dtype = dtype or m.out_proj.weight_dtype
    with torch.device("meta"):
        mha = nn.MultiheadAttention(m.embed_dim, m.num_heads, dropout=m.dropout,
                                    bias=m.out_proj.bias is not None,
                                    add_bias_kv=m.bias_k is not None,
                                    add_zero_attn=m.add_zero_attn, kdim=m.kdim, vdim=m.vdim,
                                    batch_first=m.batch_first)
    mha = mha.to_empty(device="cpu")
    weights = [p.dequantize_weight() for p in projections]
    if mha._qkv_same_embed_dim:
        mha.in_proj_weight = _param(torch.cat(weights), dtype)
    else:
        for name, w in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), weights):
            setattr(mha, name, _param(w, dtype))
    if mha.in_proj_bias is not None:
        mha.in_proj_bias = _param(torch.cat([p.bias for p in projections]), dtype)
    mha.out_proj = _weight_and_bias(mha.out_proj, m.out_proj.dequantize_weight(),
                                    m.out_proj.bias, dtype)
    for name in ("bias_k", "bias_v"):
        if getattr(m, name) is not None:
            setattr(mha, name, _param(getattr(m, name), dtype))
    return mha


def _torch_gate_rows(w: torch.Tensor) -> torch.Tensor:
    """QuantRNN's LSTM gate rows (i, f, o, g) -> torch's (i, f, g, o)."""
    i, f, o, g = w.chunk(4)
    return torch.cat([i, f, g, o])


def _rnn(m: QuantRNN, dtype) -> nn.Module:
    types = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}
    kw = dict(num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
              bidirectional=m.bidirectional)
    if m.mode == "LSTM":
        kw["proj_size"] = m.proj_size
    elif m.mode.startswith("RNN"):
        kw["nonlinearity"] = m.mode[4:].lower()
    with torch.device("meta"):
        rnn = types[m.mode](m.input_size, m.hidden_size, **kw)
    rnn = rnn.to_empty(device="cpu")
    lstm = m.mode == "LSTM"
    dtype = dtype or m.ih_l0.weight_dtype
    for layer in range(m.num_layers):
        for sfx in m._suffixes():
            ih, hh = getattr(m, f"ih_l{layer}{sfx}"), getattr(m, f"hh_l{layer}{sfx}")
            w_ih, w_hh = ih.dequantize_weight(), hh.dequantize_weight()
            b_ih, b_hh = ih.bias, hh.bias
            if lstm:  # QuantRNN holds the two biases' sum on the input projection
                w_ih, w_hh = _torch_gate_rows(w_ih), _torch_gate_rows(w_hh)
                if b_ih is not None:
                    b_ih, b_hh = _torch_gate_rows(b_ih), torch.zeros_like(b_ih)
            values = {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}
            hr = getattr(m, f"hr_l{layer}{sfx}", None)
            if hr is not None:
                values["weight_hr"] = hr.dequantize_weight()
            for name, value in values.items():
                if value is not None:
                    setattr(rnn, f"{name}_l{layer}{sfx}", _param(value, dtype))
    rnn.flatten_parameters()
    return rnn


def _experts(m: QuantExperts, dtype) -> nn.Module:
    """The original experts block (QuantExperts keeps it without its expert weights) with its
    3-D weights ([E, out, in], or [E, in, out] when ``is_transposed``) and biases back."""
    block = m.block
    dtype = dtype or m.up[0].weight_dtype
    for name, layers in ((_up_name(block), m.up), ("down_proj", m.down)):
        w = torch.stack([layer.dequantize_weight() for layer in layers])
        if block.is_transposed:
            w = w.transpose(1, 2)
        setattr(block, name, _param(w.contiguous(), dtype))
        if block.has_bias:
            setattr(block, name + "_bias", _param(torch.stack([l.bias for l in layers]), dtype))
    return block


def _table(m: QuantEmbedding, dtype) -> nn.Module:
    w = m.dequantize_weight().to(dtype or m.weight_dtype)
    options = getattr(m, "_training_options", {})  # (sparse, scale_grad_by_freq)
    if isinstance(m, QuantEmbeddingBag):
        return nn.EmbeddingBag.from_pretrained(w, freeze=False, mode=m.mode,
                                               include_last_offset=m.include_last_offset,
                                               padding_idx=m.padding_idx, **options)
    return nn.Embedding.from_pretrained(w, freeze=False, padding_idx=m.padding_idx, **options)


def _float_of(m: nn.Module, dtype: torch.dtype | None = None) -> nn.Module | None:
    """The float module of a quantized layer (in dtype, else the layer's; in the layer's
    training mode; weight-normed again if its source was), or None for any other module."""
    new = _float_module(m, dtype)
    if new is None:
        return None
    norm = getattr(m, "_pq_weight_norm", None)
    if norm is not None:
        kind, dim = norm
        if kind == "parametrization":
            nn.utils.parametrizations.weight_norm(new, "weight", dim=dim)
        else:
            with warnings.catch_warnings():  # (torch's deprecation of the hook form)
                warnings.simplefilter("ignore", FutureWarning)
                nn.utils.weight_norm(new, "weight", dim=dim)
    return new.train(m.training)


_GRU_REFUSAL = ("QuantGRU: its integer cell (a bit width per operator, lookup-table gates) has "
                "no float module that computes it; keep the float nn.GRU it was built from "
                "(QuantGRU.from_gru leaves it as it was)")


def _float_module(m: nn.Module, dtype) -> nn.Module | None:
    if isinstance(m, QuantGRU):
        raise TypeError(_GRU_REFUSAL)
    if isinstance(m, QuantLinear):
        return _linear(m, dtype)
    for quant_type, float_type in ((QuantConv1d, nn.Conv1d), (QuantConv2d, nn.Conv2d),
                                   (QuantConvTranspose1d, nn.ConvTranspose1d),
                                   (QuantConvTranspose2d, nn.ConvTranspose2d)):
        if isinstance(m, quant_type):
            return _conv(m, float_type, dtype)
    if isinstance(m, QuantGroupedConv2d):  # (QuantGroupedConv1d too)
        return _conv(m, nn.Conv1d if isinstance(m, QuantGroupedConv1d) else nn.Conv2d, dtype,
                     m.groups)
    if isinstance(m, QuantMultiheadAttention):
        return _mha(m, dtype)
    if isinstance(m, QuantRNN):
        return _rnn(m, dtype)
    if isinstance(m, QuantExperts):
        return _experts(m, dtype)
    if isinstance(m, QuantEmbedding):
        return _table(m, dtype)
    return None


def dequantize_(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replaces every pyquant quantized layer of ``model`` (in place; ``model`` itself too, if it
    is one: use the returned module) with its float module holding the weights the quantized
    layer multiplied by, in ``dtype`` if given, else in the dtype each layer reports. Returns
    the model. ``dtype`` casts the whole model's floating parameters and buffers (a model runs in
    one dtype). BatchNorms folded into convs come back as BatchNorms that add the folded bias
    (the conv keeps the folded weights), so the state dict has the float architecture's keys. A
    transformers model also loses its pyquant quantization config (so it saves as a float
    checkpoint). A QuantGRU (the searched integer GRU) is a TypeError: no float module computes
    its cell. Layers that await their weights (``load_quantized_`` not yet run) are a
    ValueError; the model is left as it was on either error."""
    with torch.inference_mode(False), torch.no_grad():  # (parameters that can train)
        return _dequantized(model, dtype)


def _dequantized(model: nn.Module, dtype) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating-point torch.dtype or None, got {dtype!r}")
    modules = list(model.modules())
    for module in modules:  # (every refusal before the first swap)
        if isinstance(module, AwaitsLoad):
            module._check_loaded()
        if isinstance(module, QuantGRU):
            raise TypeError(_GRU_REFUSAL)
    top = _float_of(model, dtype)
    if top is not None:
        return top.to(dtype) if dtype is not None else top
    done = {}  # id(quantized layer) -> its float module (a layer shared twice stays shared)
    folds = []  # (the folded BN's parent, its name, its record, the ancestors above the parent)

    def swap_children(parent: nn.Module, ancestors: list) -> None:
        for name, child in list(parent._modules.items()):  # (named_children skips repeats)
            if child is None:
                continue
            if isinstance(child, FoldedIntoConv) and getattr(child, "unfold", None):
                folds.append((parent, name, child.unfold, ancestors))
                continue
            new = done.get(id(child))
            if new is None:
                new = _float_of(child, dtype)
                if new is None:
                    swap_children(child, [*ancestors, parent])
                    continue
                done[id(child)] = new
            setattr(parent, name, new)
    swap_children(model, [])
    for parent, name, record, ancestors in folds:  # (the convs are float by now)
        _unfold(parent, name, record, ancestors)
    for m in model.modules():  # encoder fast paths quantize_ turned off (api._no_encoder_fast_path)
        flag = m.__dict__.pop("_pq_fast_path", None)
        if flag is not None:
            setattr(m, *flag)
    _forget_quantization(model)
    return model.to(dtype) if dtype is not None else model


def _unfold(parent: nn.Module, name: str, record: dict, ancestors: list) -> None:
    """A BatchNorm again where parent.<name> was folded into its conv, the conv's folded bias c
    moved into it (the conv's bias dropped, or zero if it had one of its own). In eval mode it
    adds c: weight |gamma|, bias beta, running variance gamma^2 - eps (so the division and the
    weight cancel), running mean beta - c. In training mode it normalizes by the batch and
    scales by gamma as the original did (the conv's weights carry gamma / sigma). gamma = 1,
    beta = 0 where the record has none (folded at a quantized checkpoint's load: the file
    holds the folded weights only) or gamma^2 <= eps; a BN without affine: mean -c, variance
    1 - eps."""
    chain = [*ancestors, parent]
    if record["up"] >= len(chain):  # (dequantize_ was given a part of the model: leave it)
        return
    try:
        conv = chain[-1 - record["up"]].get_submodule(record["down"])
    except AttributeError:
        return
    bias = getattr(conv, "bias", None)
    if not isinstance(bias, torch.Tensor) or bias.shape != (record["num_features"],):
        return
    n, eps, dtype = record["num_features"], record["eps"], conv.weight.dtype
    c = bias.detach().float()
    gamma = record.get("weight")
    gamma = torch.ones(n) if gamma is None else gamma
    beta = record.get("bias")
    beta = torch.zeros(n) if beta is None or not record["affine"] else beta
    usable = gamma * gamma > eps
    var = torch.where(usable, gamma * gamma - eps, torch.full_like(gamma, 1.0 - eps))
    bn = getattr(nn, record["type"])(n, eps=eps, momentum=record["momentum"],
                                     affine=record["affine"], dtype=dtype)
    bn.running_var.copy_(var)
    bn.running_mean.copy_(beta - c)
    if record["affine"]:
        bn.weight.copy_(torch.where(usable, gamma.abs(), torch.ones_like(gamma)))
        bn.bias.copy_(beta)
    conv.bias = nn.Parameter(torch.zeros_like(bias)) if record["conv_bias"] else None
    bn.train(parent.training)
    setattr(parent, name, bn)


def _forget_quantization(model: nn.Module) -> None:
    """transformers models in ``model``: no pyquant quantization config or quantizer left."""
    import sys
    if "transformers.modeling_utils" not in sys.modules:  # (no transformers model inside)
        return
    from .hf import PyquantConfig, PyquantHfQuantizer, retie_dropped
    retie_dropped(model)
    for m in model.modules():
        quantizer = getattr(m, "hf_quantizer", None)
        if isinstance(quantizer, PyquantHfQuantizer):
            quantizer.remove_quantization_config(m)
        config = getattr(m, "config", None)
        q = getattr(config, "quantization_config", None)
        # (a config that lists layers outside m is an outer model's, shared: its
        # save_pretrained records it again)
        if isinstance(q, PyquantConfig) and set(q.layers) <= set(dict(m.named_modules())):
            del config.quantization_config
