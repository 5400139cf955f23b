"""PyTorch front end: quantized modules, configs and quantize_ (torchao's API shape).

    import pyquant
    pyquant.quantize_(model, pyquant.Int8Config())          # swaps nn.Linear / nn.Conv2d / ... in place
    pyquant.calibrate(model, batches)                        # optional: static activation ranges
"""
from ._backend import use_reference
from .api import (calibrate, calibration, default_filter, every_layer_filter, quantize_,
                  register_quantize_module_handler, reset_calibration)
from .gptq import gptq_
from .dequantize import dequantize_  # back to float modules (transformers' model.dequantize())
from .checkpoint import load_quantized_, save_quantized  # no float weights at load
from .configs import GRUConfig, Int8Config, LUT2Config, SparqConfig, WeightOnlyConfig
from .gru import QuantGRU  # integer-only GRU with a bit width per operator (GRUConfig)
from .experts import QuantExperts  # transformers' MoE experts blocks (3-D expert weights)
from .attention import QuantMultiheadAttention  # nn.MultiheadAttention's four projections
from .recurrent import QuantRNN  # nn.LSTM / nn.GRU / nn.RNN
from .modules import QuantConv1d, QuantConv2d, QuantLinear
from .grouped_conv import QuantGroupedConv1d, QuantGroupedConv2d  # nn.Conv2d/1d, groups > 1
from .conv_transpose import QuantConvTranspose1d, QuantConvTranspose2d  # GEMM + col2im
from .embedding import QuantEmbedding, QuantEmbeddingBag, embedding_filter  # quantized tables
from .weight_view import QuantizedWeight  # what QuantLinear.weight / QuantConv2d.weight return

__all__ = [
    "QuantLinear", "QuantConv2d", "QuantConv1d", "QuantGroupedConv2d", "QuantGroupedConv1d",
    "QuantConvTranspose2d", "QuantConvTranspose1d",
    "QuantGRU", "QuantExperts",
    "QuantMultiheadAttention", "QuantRNN", "QuantizedWeight", "quantize_", "dequantize_", "gptq_",
    "calibrate",
    "calibration", "reset_calibration",
    "load_quantized_", "save_quantized", "register_quantize_module_handler", "default_filter",
    "every_layer_filter", "embedding_filter", "QuantEmbedding", "QuantEmbeddingBag",
    "use_reference",
    "Int8Config", "WeightOnlyConfig", "LUT2Config", "SparqConfig", "GRUConfig",
]


def __getattr__(name):
    # pyquant.nn.hf (transformers' save_pretrained / from_pretrained) imports transformers: only
    # on use, e.g. pyquant.nn.hf.PyquantConfig(...)
    if name == "hf":
        import importlib
        return importlib.import_module(".hf", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
