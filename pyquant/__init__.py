"""pyquant: ultra-low-bit neural-network inference kernels for CPUs.

Public API (README.md; the design notes' api.md): introspection (cpu_info, set_num_threads,
get_num_threads), canonical packing (pack, unpack), exact integer GEMMs (int8_gemm, ...),
prepack / PackedWeight.
"""
from __future__ import annotations

from . import _native  # noqa: F401  (applies PYQUANT_ISA before any kernel runs)
from ._native import _C  # noqa: E402
from ._threads import get_num_threads, set_num_threads
from .int8 import int8_gemm
from .lut import lut_gemm
from .lowbit import lowbit_gemm, lowbit_gemm_grouped
from .packed import PackedWeight, prepack
from .packing import pack, unpack
from .sparq import (prune_24, sparq_decode, sparq_encode, sparq_gemm, sparq_gemm_encoded,
                    sparq_quantize)

__version__ = "0.1.0"


def cpu_info() -> dict:
    """The CPU, the active kernel path and the paths this CPU can run."""
    features = _C.cpu_features()
    return {
        "isa": _C.active_isa(),
        "available": list(_C.available_isas()),
        "threads": get_num_threads(),
        "vendor": features.pop("vendor"),
        "brand": features.pop("brand"),
        "family": features.pop("family"),  # x86 display family (0 elsewhere)
        "features": features,
    }


_NN_NAMES = ("quantize_", "dequantize_", "load_quantized_", "save_quantized", "calibrate",
             "Int8Config", "WeightOnlyConfig", "LUT2Config", "SparqConfig")


def __getattr__(name):
    # The PyTorch front end (pyquant.nn) is imported on first use, so `import pyquant` stays light.
    if name in _NN_NAMES or name == "nn":
        import importlib

        nn = importlib.import_module(".nn", __name__)
        return nn if name == "nn" else getattr(nn, name)
    raise AttributeError(f"module 'pyquant' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_NN_NAMES, "nn"})  # (the lazy names too: completion, dir())


__all__ = [
    *_NN_NAMES, "cpu_info", "get_num_threads", "set_num_threads", "pack", "unpack", "int8_gemm",
    "lut_gemm", "lowbit_gemm", "lowbit_gemm_grouped",
    "prepack", "PackedWeight", "__version__",
    "sparq_quantize", "sparq_gemm", "sparq_encode", "sparq_decode", "sparq_gemm_encoded",
    "prune_24",
]


def _register_with_transformers() -> None:
    """transformers' from_pretrained skips a quant method it does not know (with a warning: the
    float skeleton, random weights), so pyquant's is registered as soon as both are imported:
    now if transformers' quantizers are, else right after they are (an import hook that removes
    itself), without importing transformers here (seconds)."""
    import importlib.abc
    import importlib.util
    import sys

    target = "transformers.quantizers.auto"

    def registered():
        hf = sys.modules.get(__name__ + ".nn.hf")
        if hf is not None and not hasattr(hf, "register"):
            return  # (pyquant.nn.hf itself is importing transformers: it registers when done)
        from .nn import hf
        hf.register()

    if target in sys.modules:
        registered()
        return

    class AfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target_module=None):
            if name != target:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                registered()
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, AfterImport())


_register_with_transformers()
