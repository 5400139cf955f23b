"""Benchmark cases: each one builds its data once and returns the callable to time.

A *group* is one problem (shape, threads, hot/cold weights); every case in a group computes the
same product with a different kernel, so their times are directly comparable. Speedups are
reported over the group's `pyquant.int8_gemm` case and its fp32 `F.linear` case.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PAGE = 4096
COLD_SET_BYTES = 512 << 20  # a cold case's weight set at most (Problem.copies)


@functools.lru_cache(maxsize=None)
def l3_bytes() -> int:
    """This CPU's last-level cache (sysconf, then sysfs; 32 MiB if neither says)."""
    try:
        size = os.sysconf("SC_LEVEL3_CACHE_SIZE")
        if size > 0:
            return size
    except (ValueError, OSError):
        pass
    for index in range(8):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{index}/"
        try:
            with open(base + "level") as f, open(base + "size") as g:
                if f.read().strip() == "3":
                    text = g.read().strip().upper()
                    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
                    return int(text.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
    return 32 << 20


@dataclass(frozen=True)
class Problem:
    m: int
    n: int
    k: int
    threads: int = 1
    cold: bool = False  # weights rotated through a set far larger than L3
    label: str = ""

    @property
    def name(self) -> str:
        temp = "cold" if self.cold else "hot"
        tag = f" {self.label}" if self.label else ""
        return f"{self.m}x{self.n}x{self.k} {temp} {self.threads}t{tag}"

    def copies(self, bytes_per_weight: float = 1.0) -> int:
        """How many weight copies a case rotates through: one when hot; when cold, enough that
        the case's own set (at its bytes per weight) is at least 2x this CPU's L3: cycled in
        order, every copy is evicted before its turn comes again, so every kernel, low-bit ones
        too, reads its weights from DRAM (2x, not more: a problem's cases are all built before
        they are timed, about 16 sets at once). At most COLD_SET_BYTES, still past any L3 one
        core reads: a VM reporting a 480 MiB L3 built 16 sets of 960 MB (15 GB, and `bench
        --quick` took 71-84 s, half of it in the kernel)."""
        if not self.cold:
            return 1
        target = min(2 * l3_bytes(), COLD_SET_BYTES)
        return max(2, -(-target // int(self.n * self.k * bytes_per_weight)))

    @property
    def ops(self) -> int:
        return 2 * self.m * self.n * self.k


@dataclass
class Case:
    problem: Problem
    kernel: str
    make: Callable[[Problem], Callable[[], object]]
    isa: str | None = None  # force this pyquant path while timing (None: the active one)
    kind: str = "pyquant"   # "pyquant" | "int8-baseline" | "fp32"
    note: str = ""
    extra: dict = field(default_factory=dict)
    # Called on the case's path before building: why this CPU / path cannot run the kernel
    # (e.g. "needs AVX-512 VBMI"), or None. The report shows such a case as an n/a row.
    requires: Callable[[], str | None] | None = None


_MAKERS: list[Callable[[Problem], list[Case]]] = []


def register(maker: Callable[[Problem], list[Case]]) -> Callable[[Problem], list[Case]]:
    """Ops add their cases for a problem here (see the bottom of this file)."""
    _MAKERS.append(maker)
    return maker


# Problems timed by their own cases only (cases_nn.LAYERS: a whole recurrent or attention layer,
# whose raw GEMM of the same (M, N, K) is not what the layer runs).
OWN_CASES_ONLY: set[str] = set()


def cases_for(problem: Problem) -> list[Case]:
    out: list[Case] = []
    for maker in _MAKERS:
        out.extend(maker(problem))
    if problem.label in OWN_CASES_ONLY:
        out = [c for c in out if c.extra.get("layer")]
    return out


def rotating(fns: list[Callable[[], object]]) -> Callable[[], object]:
    """One call of the next of ``fns`` each time; ``.count`` = how many (a cold set's size)."""
    state = {"i": 0}

    def call():
        i = state["i"]
        state["i"] = (i + 1) % len(fns)
        return fns[i]()

    call.count = len(fns)
    return call


# ---- cold weight sets ----------------------------------------------------------------------
# A cold set is one weight written to `Problem.copies(...)` separate buffers: the kernels' time does not depend
# on the values, only on where they live, and packing 8-32 random layers once took a third of
# `bench --quick`. Every page of each copy is stamped with the copy's index, so no two copies
# share a page: a host that merges identical pages (KSM) would otherwise fold the set into one.

def stamp_pages(buf: np.ndarray, index: int) -> None:
    """Write `index` into one byte of every 4 KiB of `buf` (a contiguous uint8 view)."""
    buf[::PAGE] = index & 0xFF


def packed_copies(pw, count: int) -> list:
    """`count` PackedWeights with pw's header and (page-stamped) data in separate buffers."""
    from pyquant.packed import PackedWeight

    if count == 1:
        return [pw]
    h = pw.header()
    start, stop = int(h["data_offset"]), int(h["aux_offset"]) or None  # aux (sums) kept intact
    out = []
    for i in range(count):
        buf = pw.buffer.copy()
        stamp_pages(buf[start:stop], i)
        out.append(PackedWeight(buf, pw.op, pw.params))
    return out


def tensor_copies(t, count: int) -> list:
    """`count` page-stamped clones of a contiguous int8 torch tensor (one per cold layer)."""
    if count == 1:
        return [t]
    out = []
    for i in range(count):
        c = t.clone()
        stamp_pages(c.numpy().reshape(-1).view(np.uint8), i)  # shares c's memory
        out.append(c)
    return out


def _rng(p: Problem) -> np.random.Generator:
    return np.random.default_rng(p.m * 1_000_003 + p.n * 1009 + p.k)


def random_u8(p: Problem) -> np.ndarray:
    return _rng(p).integers(0, 256, size=(p.m, p.k), dtype=np.uint8)


def random_s8_weights(p: Problem, layer: int = 0) -> np.ndarray:
    g = np.random.default_rng(layer * 7919 + p.n + p.k)
    return g.integers(-128, 128, size=(p.n, p.k), dtype=np.int8)


# ---- baselines ---------------------------------------------------------------------------

def _make_int8_ours(p: Problem, act_bits: int = 8):
    import pyquant

    a = random_u8(p) >> (8 - act_bits)
    packed = packed_copies(pyquant.prepack(random_s8_weights(p), "int8_gemm"), p.copies())
    return rotating([lambda pw=pw: pyquant.int8_gemm(a, pw) for pw in packed])


def _make_torch_int_mm(p: Problem):
    import torch

    a = torch.from_numpy(random_u8(p).view(np.int8))
    # _int_mm takes [K, N]; a transposed view of the [N, K] weight is its fastest layout here
    ws = [w.t() for w in tensor_copies(torch.from_numpy(random_s8_weights(p)), p.copies())]
    return rotating([lambda w=w: torch._int_mm(a, w) for w in ws])


def _make_torch_dynamic(p: Problem):
    import warnings

    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated")
    warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")

    x = torch.randn(p.m, p.k, generator=torch.Generator().manual_seed(p.k))
    w = torch.randn(p.n, p.k, generator=torch.Generator().manual_seed(0)) * 0.02
    layers = []
    for i in range(p.copies()):
        # every value shifted per copy: fbgemm repacks the weight into its own block order, so
        # stamping a few bytes per page of `w` would not reach every page of the packed copy
        qlin = DynLinear(p.k, p.n, bias_=False, dtype=torch.qint8)
        qw = torch.quantize_per_tensor(w + 1e-3 * i, 0.02 * 4 / 127, 0, torch.qint8)
        qlin.set_weight_bias(qw, None)
        layers.append(qlin)

    def run(layer):
        with torch.inference_mode():
            return layer(x)

    return rotating([lambda layer=layer: run(layer) for layer in layers])


def _make_fp32(p: Problem):
    import torch
    import torch.nn.functional as F

    x = torch.randn(p.m, p.k, generator=torch.Generator().manual_seed(p.k))
    w = torch.randn(p.n, p.k, generator=torch.Generator().manual_seed(0))
    ws, copies = [], p.copies(4.0)
    for i in range(copies):
        ws.append(w.clone() if copies > 1 else w)
        if copies > 1:  # whole floats, not bytes: a stamped byte could make a denormal
            ws[-1].view(-1)[::PAGE // 4] = 1e-3 * i

    def run(w):
        with torch.inference_mode():
            return F.linear(x, w)

    return rotating([lambda w=w: run(w) for w in ws])


@register
def _baseline_cases(p: Problem) -> list[Case]:
    return [
        Case(p, "pyquant.int8_gemm", _make_int8_ours, kind="int8-baseline",
             note="activations 0..255"),
        Case(p, "pyquant.int8_gemm (7-bit act.)", lambda q: _make_int8_ours(q, 7),
             kind="int8-baseline",
             note="activations 0..127: the AVX2 fast route, Int8Config's default there"),
        Case(p, "torch._int_mm", _make_torch_int_mm, kind="int8-baseline"),
        Case(p, "torch dynamic int8 Linear", _make_torch_dynamic, kind="int8-baseline",
             note="fbgemm, float in/out"),
        Case(p, "fp32 F.linear", _make_fp32, kind="fp32", extra={"bytes_per_weight": 4.0}),
    ]


# ---- SPARQ (issue 6) ------------------------------------------------------------------------

def _make_sparq(p: Problem):
    import pyquant

    a = random_u8(p)
    a[_rng(p).random(a.shape) < 0.5] = 0  # post-ReLU-like: half the activations zero
    packed = packed_copies(pyquant.prepack(random_s8_weights(p), "sparq_gemm"), p.copies())
    return rotating([lambda pw=pw: pyquant.sparq_gemm(a, pw) for pw in packed])


@register
def _sparq_cases(p: Problem) -> list[Case]:
    return [Case(p, "pyquant.sparq_gemm", _make_sparq,
                 note="4-bit 5opt round vSPARQ, half the activations zero")]


# ---- problem sets ------------------------------------------------------------------------

def problems(quick: bool) -> list[Problem]:
    if quick:
        return [
            Problem(256, 4096, 4096, 1, label="LLM prefill"),
            Problem(1, 4096, 4096, 1, cold=True, label="LLM decode"),
            Problem(128, 1536, 384, 1, label="MiniLM FFN up"),
        ]
    out = []
    for threads in (1, 2):
        out += [
            Problem(256, 4096, 4096, threads, label="LLM prefill"),
            Problem(64, 4096, 4096, threads, label="LLM prefill"),
            Problem(256, 11008, 4096, threads, label="LLM prefill FFN"),
            Problem(1, 4096, 4096, threads, cold=False, label="LLM decode"),
            Problem(1, 4096, 4096, threads, cold=True, label="LLM decode"),
            Problem(1, 11008, 4096, threads, cold=True, label="LLM decode FFN"),
            Problem(128, 1536, 384, threads, label="MiniLM FFN up"),
            Problem(128, 384, 1536, threads, label="MiniLM FFN down"),
        ]
        out += [cases_nn.conv_problem(label, threads) for label in cases_nn.CONV_LAYERS]
        out += [cases_nn.layer_problem(label, threads) for label in cases_nn.LAYERS]
        out += [Problem(m, 14336, 4096, threads, label="nn forward") for m in (1, 8, 512)]
    return out


from . import cases_lowbit, cases_lut, cases_nn  # noqa: E402,F401  (register their cases)
