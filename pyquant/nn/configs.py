"""Quantization configs (frozen dataclasses, torchao style): what each swapped module computes.

Every Linear/Conv2d config maps to a scheme in ``pyquant/nn/schemes.py`` through ``pyquant.nn.api``'s
registry; ``GRUConfig`` holds ``QuantGRU``'s per-operator widths (``pyquant/nn/gru.py``).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np


def _is_int(v) -> bool:
    """An integer, not a bool nor a float that happens to be whole (4.0 would reach the kernels'
    shape arithmetic as a float)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass(frozen=True)
class Int8Config:
    """W8A8: int8 symmetric per-output-channel weights, activations quantized dynamically per row.

    Activations are asymmetric uint8 per row (``x ~= scale * (q - zero_point)``, ``q`` in
    0..2**act_bits - 1, the range always includes 0). The zero point is removed exactly in int32
    with the weight row sums precomputed at conversion (``acc - zp * sum_k w[n, k]``), so the
    u8 x s8 kernel needs no signed-activation trick and skewed inputs (GELU outputs) keep every
    level.

    ``act_bits``: 8, 7, or ``"auto"`` (the default), resolved when the config is made (and
    again where a pickled model or a ``save_quantized`` file is loaded: ``act_bits_asked``
    keeps "auto"): 7 where
    the int8 kernel this CPU runs needs 7-bit activations for full speed (AVX2 without VNNI,
    whose ``vpmaddubsw`` pair sums are exact only below 2**15; PyTorch's x86 dynamic int8 makes
    the same choice, ``reduce_range``), 8 elsewhere (VNNI, NEON, scalar). Every ISA gives the same
    bits for a given ``act_bits``; it shows in the config's repr. On AVX2 without VNNI
    ``act_bits=8`` runs at about the 7-bit speed on non-negative inputs (after a ReLU: a CNN's
    convs), whose rows the kernel splits exactly into 7-bit-safe pairs and a few fixes, and at
    0.5-0.7x of it on signed inputs (transformers).
    """

    act_bits: int | str = "auto"
    # what was asked: "auto" is resolved again on the CPU that loads the config (pickle, files)
    act_bits_asked: int | str = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        bits = self.act_bits
        object.__setattr__(self, "act_bits_asked", bits)
        if bits == "auto":
            from pyquant._native import _C

            bits = int(_C.int8_full_speed_act_bits())
        if not _is_int(bits) or bits not in (7, 8):
            raise ValueError(f"act_bits: expected 7, 8 or 'auto', got {self.act_bits!r}")
        object.__setattr__(self, "act_bits", int(bits))
        if bits == self.act_bits_asked:
            object.__setattr__(self, "act_bits_asked", int(bits))

    def __reduce__(self):  # (pickle, deepcopy: "auto" resolved where it is loaded)
        return (type(self), (self.act_bits_asked,))


@dataclass(frozen=True)
class WeightOnlyConfig:
    """Low-bit group-wise weights (``bits`` in {4, 2}, one float scale per ``group_size`` inputs
    along K, symmetric signed codes), int8 dynamic activations as in :class:`Int8Config`.

    Scales are chosen per group by a small clipping search minimising the weight MSE. The
    forward is one native call (activation quantization, the grouped low-bit kernel with the
    group scales applied inside it: exact int32 per group, float32 sum over the groups in order,
    then the shared epilogue); a build without the grouped kernels runs ``lowbit_gemm`` per
    group with the same arithmetic.
    """

    bits: int = 4
    group_size: int = 64

    def __post_init__(self):
        if not _is_int(self.bits) or self.bits not in (2, 4):
            raise ValueError(f"bits: expected 2 or 4, got {self.bits!r}")
        if not _is_int(self.group_size) or self.group_size not in (32, 64, 128):
            raise ValueError(f"group_size: expected 32, 64 or 128, got {self.group_size!r}")
        object.__setattr__(self, "bits", int(self.bits))  # (np.int64(4) -> 4: a plain repr)
        object.__setattr__(self, "group_size", int(self.group_size))


@dataclass(frozen=True)
class LUT2Config:
    """W2A2 through ``pyquant.lut_gemm`` (the DeepGEMM lookup-table operator).

    Weights: 2-bit codes per element into ``w_levels`` times a per-output-channel scale (chosen by
    a clipping search minimising the MSE). Activations: 2-bit codes into ``a_levels`` per row:
    ``x ~= offset + scale * a_levels[code]`` (asymmetric; the offset is folded back exactly with
    the weight level sums). ``a_scale``: ``"minmax"`` (row range) or ``"mse"`` (per-row clipping
    search, slower, much more accurate at 2 bits). Levels are any 4 integers whose pairwise
    products fit int8.
    """

    w_levels: tuple = (-3, -1, 1, 3)
    a_levels: tuple = (0, 1, 2, 3)
    a_scale: str = "mse"

    def __post_init__(self):
        for name in ("w_levels", "a_levels"):
            given = getattr(self, name)
            try:  # (once: an iterator is read a single time)
                values = None if isinstance(given, (str, bytes)) else tuple(given)
            except TypeError:  # (not iterable: an int, None)
                values = None
            if values is None or not all(_is_int(v) for v in values):
                raise ValueError(f"{name}: expected 4 distinct integers, got {given!r}")
            lv = tuple(int(v) for v in values)
            if len(lv) != 4 or len(set(lv)) != 4:
                raise ValueError(f"{name}: expected 4 distinct integers, got {given!r}")
            object.__setattr__(self, name, lv)
        if any(abs(a * w) > 127 for a in self.a_levels for w in self.w_levels):
            raise ValueError("w_levels, a_levels: every pairwise product must fit int8")
        if self.a_scale not in ("minmax", "mse"):
            raise ValueError(f"a_scale: expected 'minmax' or 'mse', got {self.a_scale!r}")


@dataclass(frozen=True)
class SparqConfig:
    """int8 per-channel weights, SPARQ-trimmed uint8 activations via ``pyquant.sparq_gemm``.

    Activations are quantized to uint8 magnitudes (per row, scale ``max|x| / 255``; or per tensor
    after :func:`pyquant.calibrate`, scale = mean over batches of the batch max, the paper's rule).
    Non-negative inputs (post-ReLU, the paper's setting) take one ``sparq_gemm``. Inputs with
    negative values use our sign-magnitude extension (``negative="sign_magnitude"``): SPARQ trims
    the magnitudes (pairs judged on magnitudes), then the positive and negative parts are two
    exact ``sparq_gemm`` calls subtracted (SPARQ is idempotent on trimmed values), so it costs
    two GEMMs. ``negative="error"`` raises instead.

    ``sparse24=True``: the paper's sparse-tensor-core mode. At conversion the float weight is
    pruned 2:4 by magnitude (:func:`pyquant.prune_24`: the two largest ``|w|`` of every aligned
    group of 4 inputs, per output channel), or with calibration data by SparseGPT
    (``pyquant.nn.gptq_(model, SparqConfig(sparse24=True), batches)``: far closer to the float
    model, e.g. all-MiniLM-L6-v2's mean cosine 0.83 against 0.66), then the kept values are quantized to int8 per
    channel and packed in the 2:4 format (5 bits per weight); activations are paired per output
    channel at its non-zero weights (``sparq_gemm(..., sparse24=True)``; pairs judged on the
    magnitudes). Negative inputs take the same sign-magnitude extension: each row's selector
    tables are split by sign into a positive and a negative part (the AVX2 and AVX-VNNI kernels
    subtract the parts' activations before multiplying; the others run both parts, only for
    blocks of rows with a negative value). The forward is one native call
    (``_C.forward_sparq24``: activation quantization, the 2:4 kernel, the shared epilogue).

    ``options`` defaults to the paper's choice for ``bits``: 5 for 4 bits, 6 for 3, 7 for 2.
    """

    bits: int = 4
    options: int | None = None
    rounding: str = "round"
    pairs: bool = True
    negative: str | None = None
    sparse24: bool = False

    def __post_init__(self):
        for flag in ("sparse24", "pairs"):
            value = getattr(self, flag)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{flag}: expected a bool, got {value!r}")
            object.__setattr__(self, flag, bool(value))
        allowed = {4: (5, 3, 2), 3: (6,), 2: (7,)}
        if not _is_int(self.bits) or self.bits not in allowed:
            raise ValueError(f"bits: expected 4, 3 or 2, got {self.bits!r}")
        if self.options is None:
            object.__setattr__(self, "options", allowed[self.bits][0])
        if not _is_int(self.options) or self.options not in allowed[self.bits]:
            raise ValueError(f"options: bits={self.bits} takes {allowed[self.bits]}, got {self.options!r}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "options", int(self.options))
        if self.rounding not in ("round", "trunc"):
            raise ValueError(f"rounding: expected 'round' or 'trunc', got {self.rounding!r}")
        if self.negative is None:
            object.__setattr__(self, "negative", "sign_magnitude")
        if self.negative not in ("sign_magnitude", "error"):
            raise ValueError(f"negative: expected 'sign_magnitude' or 'error', got {self.negative!r}")

    def op_kwargs(self) -> dict:
        return {"bits": self.bits, "options": self.options, "rounding": self.rounding, "pairs": self.pairs}


# QuantGRU's operators, in gene order (Miccini et al.): the six matmuls' weights, the gate adds,
# the lookup-table outputs, the elementwise products and the new state. See pyquant/nn/gru.py.
GRU_OPS = ("w_ir", "w_iz", "w_in", "w_hr", "w_hz", "w_hn", "add_r", "add_z", "add_n",
           "sig_r", "sig_z", "tanh_n", "mul_rn", "one_minus_z", "mul_zn", "mul_zh", "add_h")
GRU_MATMUL_OPS = GRU_OPS[:6]


@dataclass(frozen=True)
class GRUConfig:
    """:class:`pyquant.nn.QuantGRU`'s bit width per operator (17 widths, each an int in 2..8).

    The six matmul weights (``w_*``) take the kernels' widths 2, 4 or 8; the other 11 any width
    in 2..8. ``GRUConfig.uniform(b)`` sets every width to ``b`` (so ``b`` is 2, 4 or 8);
    ``GRUConfig.from_widths(w)`` takes such an int, a ``{op: bits}`` dict with every op, or a
    GRUConfig. ``widths()`` is the ``{op: bits}`` dict in ``GRU_OPS`` order. A QuantGRU is
    built with ``QuantGRU.from_gru(gru, config, calib=...)`` (its ranges come from calibration
    inputs), not by ``quantize_``, which converts ``nn.GRU`` to a QuantRNN under the other
    configs.
    """

    w_ir: int = 8
    w_iz: int = 8
    w_in: int = 8
    w_hr: int = 8
    w_hz: int = 8
    w_hn: int = 8
    add_r: int = 8
    add_z: int = 8
    add_n: int = 8
    sig_r: int = 8
    sig_z: int = 8
    tanh_n: int = 8
    mul_rn: int = 8
    one_minus_z: int = 8
    mul_zn: int = 8
    mul_zh: int = 8
    add_h: int = 8

    def __post_init__(self):
        for op in GRU_OPS:
            b = getattr(self, op)
            if isinstance(b, bool) or not isinstance(b, numbers.Integral) or not 2 <= int(b) <= 8:
                raise ValueError(f"widths[{op!r}]: expected an int in 2..8, got {b!r}")
            if op in GRU_MATMUL_OPS and int(b) not in (2, 4, 8):
                raise ValueError(f"widths[{op!r}]: matmul widths must be 2, 4 or 8 (the kernels), got {b}")
            object.__setattr__(self, op, int(b))

    @classmethod
    def uniform(cls, bits: int) -> "GRUConfig":
        if bits not in (2, 4, 8) or isinstance(bits, bool):
            raise ValueError(f"bits: a uniform width must be 2, 4 or 8 (the matmul widths), got "
                             f"{bits!r}; other widths per operator: GRUConfig(add_h=6, ...) or "
                             "from_widths({op: bits})")
        return cls(**{op: bits for op in GRU_OPS})

    @classmethod
    def from_widths(cls, widths) -> "GRUConfig":
        if isinstance(widths, cls):
            return widths
        if isinstance(widths, numbers.Integral):
            return cls.uniform(widths)
        widths = dict(widths)
        missing = [op for op in GRU_OPS if op not in widths]
        extra = [op for op in widths if op not in GRU_OPS]
        if missing or extra:
            raise ValueError(f"widths: missing {missing}, unknown {extra}")
        return cls(**widths)

    def widths(self) -> dict:
        return {op: getattr(self, op) for op in GRU_OPS}
