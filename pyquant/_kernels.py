"""Which micro-kernel each op runs on each path (for `python -m pyquant info` and benchmarks)."""
from __future__ import annotations

_TABLE = {
    "int8_gemm": {
        "avx512": "6x64 vpdpbusd (AVX-512 VNNI) register tile, K blocked",
        "avx2": "3x16 vpmaddubsw tile, exact: 7-bit row blocks fast, others split a = 2(a>>1) + (a&1); 1x64 streaming GEMV",
        "neon": "4x16 sdot (+-128 offset) register tile",
        "scalar": "portable loops over the packed panels",
    },
    "pack/unpack": {
        "avx512": "64 codes per step (vpmaddubsw/vpmovwb, mask registers for 1-bit)",
        "avx2": "32 codes per step",
        "neon": "16 codes per step",
        "scalar": "bit loops",
    },
}


def register_kernels(op: str, by_isa: dict) -> None:
    _TABLE[op] = by_isa


def kernel_table(isa: str) -> dict:
    return {op: by_isa.get(isa, by_isa.get("scalar", "?")) for op, by_isa in _TABLE.items()}
