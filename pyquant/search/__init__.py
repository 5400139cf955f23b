"""Choosing bit widths (issue 8): HGQ-style gradient training, NSGA-II search, an integer-only GRU,
all deployed on pyquant's integer GEMM kernels.

Modules: quantizers (the HGQ quantizer and width projection), hgq (QAT layers, MLP, trainer with a
beta ramp and Pareto checkpoints), nsga (NSGA-II via pymoo with a fitness cache), latency (cost
table measured from our kernels), deploy (integer inference through pyquant.int8_gemm /
lowbit_gemm), tasks (offline data sets), front (front.json and front.png), cli (`python -m pyquant
search`). QuantGRU (17 per-operator widths, GRUConfig) lives in pyquant.nn.gru; the search
imports it from there.
"""
from __future__ import annotations

from ..nn.gru import GRU_OPS, QuantGRU
from .quantizers import KERNEL_WIDTHS, hgq_quantize, project_width, scale_grad

__all__ = ["QuantGRU", "GRU_OPS", "KERNEL_WIDTHS", "hgq_quantize", "project_width", "scale_grad"]
