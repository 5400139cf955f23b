"""QuantLinear (one fused native call per forward) against the raw integer op of its config, on
the "nn forward" problems (4096 -> 14336 at M = 1, 8, 512): the module's float-in/float-out
forward includes activation quantization and the epilogue, the raw op takes ready codes and
returns int32; "QuantLinear[W4 gXX]" against "raw lowbit_gemm[W4]" is also the grouped GEMV
(group scales inside the kernel) against the ungrouped one. Weights are hot (one layer): the ratio, not the streaming rate, is the point.
"""
from __future__ import annotations

import numpy as np

from .cases import OWN_CASES_ONLY, Case, Problem, random_u8, register

CONFIGS = {
    "Int8": ("Int8Config()", "int8"),
    "W4 g32": ("WeightOnlyConfig(4, 32)", "w4"),
    "W4 g64": ("WeightOnlyConfig(4, 64)", "w4"),
    "W4 g128": ("WeightOnlyConfig(4, 128)", "w4"),
    "W2 g32": ("WeightOnlyConfig(2, 32)", "w2"),
    "LUT2 minmax": ("LUT2Config(a_scale='minmax')", "lut"),
    "LUT2 mse": ("LUT2Config(a_scale='mse')", "lut"),
    "SPARQ": ("SparqConfig()", "sparq"),
}
_MODULES: dict = {}


def _module(p: Problem, name: str):
    """One converted layer per (shape, config), shared by the module case and the raw case."""
    key = (p.n, p.k, name)
    if key not in _MODULES:
        import torch

        from pyquant.nn import QuantLinear, configs

        lin = torch.nn.Linear(p.k, p.n)
        torch.nn.init.normal_(lin.weight, std=0.02, generator=torch.Generator().manual_seed(7))
        config = eval(CONFIGS[name][0], {k: getattr(configs, k) for k in dir(configs)})
        _MODULES[key] = QuantLinear.from_linear(lin, config)
    return _MODULES[key]


def _make_module(name: str):
    def make(p: Problem):
        import torch

        m = _module(p, name)
        x = torch.randn(p.m, p.k, generator=torch.Generator().manual_seed(1))

        def run():
            with torch.inference_mode():
                return m(x)
        return run
    return make


def _make_raw(name: str):
    def make(p: Problem):
        import pyquant
        from pyquant.packed import PackedWeight

        m = _module(p, name)
        a = random_u8(p)
        c = m.config
        kind = CONFIGS[name][1]
        buf = m.packed.numpy()
        if kind == "int8":  # codes of the module's activation width (7 bits on AVX2: "auto")
            a = np.ascontiguousarray(a >> (8 - c.act_bits))
            pw = PackedWeight(buf, "int8_gemm")
            return lambda: pyquant.int8_gemm(a, pw)
        if kind in ("w4", "w2"):
            pw = PackedWeight(buf, "lowbit_gemm", {"bits": c.bits})
            return lambda: pyquant.lowbit_gemm(a, pw, bits=c.bits)
        if kind == "lut":
            codes = np.ascontiguousarray(a & 3)
            pw = PackedWeight(buf, "lut_gemm", {"w_levels": c.w_levels})
            return lambda: pyquant.lut_gemm(codes, pw, a_levels=c.a_levels, w_levels=c.w_levels)
        pw = PackedWeight(buf, "sparq_gemm", c.op_kwargs())
        return lambda: pyquant.sparq_gemm(a, pw, **c.op_kwargs())
    return make


def _make_grouped(bits: int, gs: int):
    def make(p: Problem):
        import pyquant

        g = np.random.default_rng(p.n + p.k + bits)
        half = 1 << (bits - 1)
        w = g.integers(-half, half, size=(p.n, p.k), dtype=np.int8)
        pw = pyquant.prepack(w, "lowbit_gemm", bits=bits)
        a = random_u8(p)
        if gs == 0:
            return lambda: pyquant.lowbit_gemm(a, pw, bits=bits)
        scales = g.random((p.n, -(-p.k // gs)), dtype=np.float32)
        return lambda: pyquant.lowbit_gemm_grouped(a, pw, bits=bits, group_size=gs, scales=scales)
    return make


@register
def _nn_cases(p: Problem) -> list[Case]:
    if not p.label.startswith("nn"):
        return []
    out = []
    for name in CONFIGS:
        out.append(Case(p, f"QuantLinear[{name}]", _make_module(name), note="float in/out, 1 call"))
        if name not in ("W4 g64", "W4 g128", "LUT2 mse"):  # same raw op as another row
            raw = {"Int8": "int8_gemm", "W4 g32": "lowbit_gemm[W4]", "W2 g32": "lowbit_gemm[W2]",
                   "LUT2 minmax": "lut_gemm", "SPARQ": "sparq_gemm"}[name]
            out.append(Case(p, f"raw {raw} (nn layer)", _make_raw(name), note="codes in, int32 out"))
    return out


# ---- QuantConv2d: the whole layer (NCHW float in and out) against nn.Conv2d fp32 --------------
# label -> (in, out, kernel, stride, padding, H = W, batch); the problem's (M, N, K) is its im2col
# GEMM, so the raw int8_gemm row of the same problem is the integer part alone
CONV_LAYERS = {
    "conv ResNet stem 7x7/2 224x224x3": (3, 64, 7, 2, 3, 224, 1),
    "conv ResNet 3x3 56x56x64": (64, 64, 3, 1, 1, 56, 1),
    "conv ResNet 3x3 28x28x128": (128, 128, 3, 1, 1, 28, 1),
    "conv ResNet 3x3 14x14x256": (256, 256, 3, 1, 1, 14, 1),
    "conv ResNet 3x3 56x56x64, batch 8": (64, 64, 3, 1, 1, 56, 8),
}
CONV_CONFIGS = {"Int8": "Int8Config()", "Int8 8-bit": "Int8Config(act_bits=8)",
                "W4 g32": "WeightOnlyConfig(4, 32)", "SPARQ": "SparqConfig()"}


def conv_problem(label: str, threads: int = 1) -> Problem:
    cin, cout, k, s, p, hw, b = CONV_LAYERS[label]
    ho = (hw + 2 * p - k) // s + 1
    return Problem(b * ho * ho, cout, k * k * cin, threads, label=label)


def _conv_layer(p: Problem):
    import torch

    cin, cout, k, s, pad, hw, b = CONV_LAYERS[p.label]
    conv = torch.nn.Conv2d(cin, cout, k, s, pad)
    x = torch.randn(b, cin, hw, hw, generator=torch.Generator().manual_seed(1))
    if "stem" not in p.label:  # a ResNet's 3x3 convs take ReLU outputs (its stem, the image)
        x = x.relu()
    return conv, x


def _make_conv(config_name: str | None):
    def make(p: Problem):
        import torch

        from pyquant.nn import QuantConv2d, configs

        conv, x = _conv_layer(p)
        if config_name is not None:
            config = eval(CONV_CONFIGS[config_name], {k: getattr(configs, k) for k in dir(configs)})
            conv = QuantConv2d.from_conv(conv, config)

        def run():
            with torch.inference_mode():
                return conv(x)
        return run
    return make


@register
def _conv_cases(p: Problem) -> list[Case]:
    if p.label not in CONV_LAYERS:
        return []
    out = [Case(p, f"QuantConv2d[{name}]", _make_conv(name), note="NCHW float in/out, 1 call")
           for name in CONV_CONFIGS]
    out.append(Case(p, "nn.Conv2d fp32", _make_conv(None), kind="fp32",
                    note="oneDNN, NCHW float in/out"))
    return out


# ---- whole layers the model converts beside Linear/Conv2d: attention, recurrent, Conv1d ------
# label -> (kind, width, length): MHA self-attention (8 heads) over `length` tokens, 2-layer
# LSTM / GRU over `length` steps (batch 1), a wav2vec2 feature-encoder Conv1d (512 -> 512, k 3,
# stride 2) over `length` samples, wav2vec2's positional conv (768 channels, 16 groups, kernel
# 128, padding 64) over `length` frames, a ResNet conv 3x3 + BatchNorm (`width` channels, a
# `length` x `length` image; quantize_ folds the BN into the conv, the "BN not folded" row keeps
# it float), a U-Net decoder's upsampling ConvTranspose2d (`width` -> `width` / 2 channels,
# kernel 2, stride 2) on a `length` x `length` image, HiFi-GAN's ConvTranspose1d (`width` ->
# `width` / 2, kernel 16, stride 8, padding 4) over `length` frames. The problem's (M, N, K) is
# the layer's main GEMM (a grouped conv's: N all output channels, K one group's; a transposed
# conv's: M input pixels, N taps x output channels).
LAYERS = {
    "layer MHA 512 x 128 tokens": ("mha", 512, 128),
    "layer MHA 512 x 1 token": ("mha", 512, 1),
    "layer LSTM 512 x 100 steps": ("lstm", 512, 100),
    "layer LSTM 128 x 100 steps": ("lstm", 128, 100),
    "layer GRU 256 x 100 steps": ("gru", 256, 100),
    "layer Conv1d 512 k3/2 x 3199": ("conv1d", 512, 3199),
    "layer grouped Conv1d 768 g16 k128 x 49": ("grouped", 768, 49),
    "layer Conv2d 3x3 + BN 64 x 56x56": ("convbn", 64, 56),
    "layer ConvTranspose2d 512 k2/2 x 28x28": ("convT2d", 512, 28),
    "layer ConvTranspose1d 512 k16/8 x 100": ("convT1d", 512, 100),
}
LAYER_CONFIGS = {"Int8": "Int8Config()", "W4 g32": "WeightOnlyConfig(4, 32)", "LUT2": "LUT2Config()",
                 "SPARQ": "SparqConfig()"}
OWN_CASES_ONLY.update(LAYERS)


def layer_problem(label: str, threads: int = 1) -> Problem:
    kind, width, length = LAYERS[label]
    if kind == "grouped":  # 16 groups of 48 channels, kernel 128 (padding 64: length + 1 out)
        return Problem(length + 1, width, 128 * width // 16, threads, label=label)
    if kind == "convbn":
        return Problem(length * length, width, 9 * width, threads, label=label)
    if kind == "convT2d":
        return Problem(length * length, 4 * width // 2, width, threads, label=label)
    if kind == "convT1d":
        return Problem(length, 16 * width // 2, width, threads, label=label)
    n = {"mha": 3 * width, "lstm": 4 * width, "gru": 3 * width, "conv1d": width}[kind]
    m = (length - 3) // 2 + 1 if kind == "conv1d" else length
    return Problem(m, n, 3 * width if kind == "conv1d" else width, threads, label=label)


def _float_layer(p: Problem):
    import torch

    kind, width, length = LAYERS[p.label]
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(4)
    if kind == "mha":
        layer = torch.nn.MultiheadAttention(width, 8, batch_first=True)
        x = torch.randn(1, length, width, generator=g)
        return layer.eval(), (lambda m: m(x, x, x, need_weights=False))
    if kind in ("lstm", "gru"):
        layer = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(width, width, 2,
                                                                    batch_first=True)
        x = torch.randn(1, length, width, generator=g)
        return layer.eval(), (lambda m: m(x))
    if kind == "convbn":
        bn = torch.nn.BatchNorm2d(width)
        with torch.no_grad():  # (trained-looking statistics: a fresh BN is nearly the identity)
            bn.running_mean.uniform_(-1, 1, generator=g)
            bn.running_var.uniform_(0.5, 2, generator=g)
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.uniform_(-1, 1, generator=g)
        layer = torch.nn.Sequential(torch.nn.Conv2d(width, width, 3, padding=1, bias=False), bn)
        x = torch.randn(1, width, length, length, generator=g)
        return layer.eval(), (lambda m: m(x))
    if kind == "convT2d":
        layer = torch.nn.ConvTranspose2d(width, width // 2, 2, 2)
        x = torch.randn(1, width, length, length, generator=g)
        return layer.eval(), (lambda m: m(x))
    if kind == "convT1d":
        layer = torch.nn.ConvTranspose1d(width, width // 2, 16, 8, 4)
        x = torch.randn(1, width, length, generator=g)
        return layer.eval(), (lambda m: m(x))
    if kind == "grouped":
        layer = torch.nn.Conv1d(width, width, 128, padding=64, groups=16)
    else:
        layer = torch.nn.Conv1d(width, width, 3, 2)
    x = torch.randn(1, width, length, generator=g)
    return layer.eval(), (lambda m: m(x))


def _make_layer(config_name: str | None, fold_batchnorm: bool = True):
    def make(p: Problem):
        import torch

        import pyquant
        from pyquant.nn import configs

        layer, call = _float_layer(p)
        if config_name == "torch dynamic int8":
            layer = torch.ao.quantization.quantize_dynamic(layer, {type(layer)}, torch.qint8)
        elif config_name is not None:
            config = eval(LAYER_CONFIGS[config_name], {k: getattr(configs, k) for k in dir(configs)})
            layer = pyquant.quantize_(torch.nn.Sequential(layer), config,
                                      fold_batchnorm=fold_batchnorm)[0]

        def run():
            with torch.inference_mode():
                return call(layer)
        return run
    return make


@register
def _layer_cases(p: Problem) -> list[Case]:
    if p.label not in LAYERS:
        return []
    kind = LAYERS[p.label][0]
    module = {"mha": "QuantMultiheadAttention", "lstm": "QuantRNN", "gru": "QuantRNN",
              "conv1d": "QuantConv1d", "grouped": "QuantGroupedConv1d",
              "convbn": "QuantConv2d (BN folded)", "convT2d": "QuantConvTranspose2d",
              "convT1d": "QuantConvTranspose1d"}[kind]
    torch_name = {"mha": "nn.MultiheadAttention", "lstm": "nn.LSTM", "gru": "nn.GRU",
                  "conv1d": "nn.Conv1d", "grouped": "nn.Conv1d", "convbn": "nn.Conv2d + BN",
                  "convT2d": "nn.ConvTranspose2d", "convT1d": "nn.ConvTranspose1d"}[kind]
    mark = {"layer": True}
    out = [Case(p, f"{module}[{name}]", _make_layer(name), note="the whole layer, float in/out",
                extra=mark) for name in LAYER_CONFIGS]
    if kind == "convbn":
        out.append(Case(p, "QuantConv2d + BN[Int8]", _make_layer("Int8", fold_batchnorm=False),
                        note="BN not folded (fold_batchnorm=False)", extra=mark))
    out.append(Case(p, f"{torch_name} fp32", _make_layer(None), kind="fp32", extra=mark))
    if kind in ("lstm", "gru"):  # (quantize_dynamic converts these; MHA and Conv1d it leaves)
        out.append(Case(p, f"{torch_name} torch dynamic int8", _make_layer("torch dynamic int8"),
                        kind="int8-baseline", extra=mark))
    return out
