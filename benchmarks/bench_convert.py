"""Conversion time: `quantize_` of one float nn.Linear at a decoder MLP's shape (2048 -> 5632,
tinyllama-1.1b's gate/up projection) per config, beside PyTorch's own dynamic int8 conversion
(`torch.ao.quantization.quantize_dynamic`). A fresh float layer per round (made outside the
timing). The whole model: `PYTHONPATH=. python benchmarks/load_quantized.py` (its quantize_ column).
GPTQ / SparseGPT (`pyquant.nn.gptq_`) of the same layer from 2048 calibration rows; the whole
model: `PYTHONPATH=. python benchmarks/gptq_llm.py`.
"""
import copy

import pytest
import torch

import pyquant

CONFIGS = {
    "int8": pyquant.Int8Config(),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "w2g32": pyquant.WeightOnlyConfig(2, 32),
    "lut2": pyquant.LUT2Config(),
    "sparq": pyquant.SparqConfig(),
    "sparq24": pyquant.SparqConfig(sparse24=True),
}


def _float_layer():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2048, 5632)).eval()


@pytest.mark.parametrize("name", ["torch-int8", *CONFIGS])
def test_convert_linear(benchmark, name):
    template = _float_layer()

    def setup():
        return (copy.deepcopy(template),), {}

    if name == "torch-int8":
        def convert(model):
            torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    else:
        def convert(model):
            pyquant.quantize_(model, CONFIGS[name])
    benchmark.extra_info["weights"] = 2048 * 5632
    benchmark.pedantic(convert, setup=setup, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("name", ["w4g32", "sparq24"])
def test_gptq_linear(benchmark, name):
    template = _float_layer()
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(2048, 2048, generator=g) / 2048 ** 0.5 + torch.eye(2048)
    batches = [torch.randn(512, 2048, generator=g) @ mix for _ in range(4)]  # correlated inputs

    def setup():
        return (copy.deepcopy(template),), {}

    def convert(model):
        pyquant.nn.gptq_(model, CONFIGS[name], batches)
    benchmark.extra_info["weights"] = 2048 * 5632
    benchmark.pedantic(convert, setup=setup, rounds=3, warmup_rounds=1)
