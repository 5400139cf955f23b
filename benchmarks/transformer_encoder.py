"""nn.TransformerEncoder (batch_first, post-norm, random weights): ms per forward in fp32 (torch's
fused encoder fast path), PyTorch's dynamic int8 (it converts nn.Linear only: every
MultiheadAttention stays float, and its fast path is off), pyquant with the attention left float
("linears only", what quantize_ did before QuantMultiheadAttention) and pyquant as quantize_
converts it now (every projection). Alternating runs, median of the best half.
Shapes: base = 6 layers, width 512, 8 heads, FFN 2048, 1 x 128 tokens; vit = 12 layers, 768, 12
heads, FFN 3072, 1 x 197 tokens (ViT-B/16); short = base at 1 x 8 tokens.
Usage (from the repository root): PYTHONPATH=. python benchmarks/transformer_encoder.py [THREADS]
[int8|w4g32|w4g64] [base|vit|short]"""
import copy
import statistics
import time
import warnings

import torch
from torch import nn

import pyquant
from script_args import parsed_args

CONFIGS = {"int8": pyquant.Int8Config(), "w4g32": pyquant.WeightOnlyConfig(4, 32),
           "w4g64": pyquant.WeightOnlyConfig(4, 64)}
SHAPES = {"base": (6, 512, 8, 2048, 128), "vit": (12, 768, 12, 3072, 197),
          "short": (6, 512, 8, 2048, 8)}


def parse(a):
    threads = int(a[0]) if a else 1
    name = a[1] if len(a) > 1 else "int8"
    shape = a[2] if len(a) > 2 else "base"
    CONFIGS[name], SHAPES[shape]  # (KeyError: refused with the usage)
    if len(a) > 3:
        raise ValueError("at most three arguments")
    return threads, name, shape


threads, name, shape = parsed_args(__doc__, parse)
warnings.filterwarnings("ignore")
torch.set_num_threads(threads)
pyquant.set_num_threads(threads)
layers, width, heads, ffn, tokens = SHAPES[shape]
torch.manual_seed(0)
layer = nn.TransformerEncoderLayer(width, heads, ffn, dropout=0.0, batch_first=True)
fp32 = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
x = torch.randn(1, tokens, width)

dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {nn.Linear}, torch.qint8)
linears_only = pyquant.quantize_(
    copy.deepcopy(fp32), CONFIGS[name],
    filter_fn=lambda m, fqn: type(m) is nn.Linear)
converted = pyquant.quantize_(copy.deepcopy(fp32), CONFIGS[name])
models = {"fp32 (fast path)": (fp32, True), "torch dynamic int8": (dynamic, False),
          f"pyquant {name}, linears only": (linears_only, True),
          f"pyquant {name}, all projections": (converted, True)}
with torch.no_grad():
    want = fp32(x)
    for label, (model, fast) in models.items():
        torch.backends.mha.set_fastpath_enabled(fast)
        got = model(x)
        cos = nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item()
        models[label] = (model, fast, cos, [])
    for _ in range(15):
        for label, (model, fast, _, times) in models.items():
            torch.backends.mha.set_fastpath_enabled(fast)
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
base = None
print(f"{shape} ({layers} layers, width {width}, {heads} heads, FFN {ffn}, 1 x {tokens} tokens), "
      f"{threads} thread(s):")
for label, (_, _, cos, times) in models.items():
    ms = 1e3 * statistics.median(sorted(times)[:len(times) // 2 + 1])
    base = base or ms
    print(f"  {label:36s} {ms:8.2f} ms  ({base / ms:4.2f}x fp32, cosine to fp32 {cos:.4f})")
