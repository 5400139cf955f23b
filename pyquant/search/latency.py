"""A cost table measured from our own kernels on this CPU (replaces HGQ's EBOPs for CPUs).

For each GEMM shape (M, N, K) and weight width in {2, 4, 8}: the best-of-`repeats` time of
`pyquant.lowbit_gemm` (2/4 bits, when the package has it) or `pyquant.int8_gemm` on prepacked
weights. Without lowbit_gemm every width runs int8_gemm, so the table is flat in the width (said
in the table's "meta"). Cached as JSON keyed by shape and the kernel set.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

import pyquant

from .deploy import kernel_for

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pyquant", "latency_table.json")


def shape_key(m: int, n: int, k: int) -> str:
    return f"{m}x{n}x{k}"


def _time_one(m: int, n: int, k: int, bits: int, repeats: int, min_time: float) -> float:
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
    w = rng.integers(lo, hi, size=(n, k), dtype=np.int8)
    op = kernel_for(bits)
    if op == "lowbit_gemm":
        pw = pyquant.prepack(w, "lowbit_gemm", bits=bits)
        call = lambda: pyquant.lowbit_gemm(a, pw, bits=bits)  # noqa: E731
    else:
        pw = pyquant.prepack(w, "int8_gemm")
        call = lambda: pyquant.int8_gemm(a, pw)  # noqa: E731
    return time_call(call, repeats, min_time)


def measure_latency_table(shapes, widths=(2, 4, 8), cache: str | None = DEFAULT_CACHE,
                          repeats: int = 5, min_time: float = 0.002, refresh: bool = False) -> dict:
    """{"meta": {...}, "entries": {"MxNxK": {"2": seconds, "4": ..., "8": ...}}}.

    shapes: iterable of (M, N, K). Entries already in the cache (same kernel set and thread
    count) are reused unless refresh=True."""
    meta = {"isa": pyquant.cpu_info()["isa"], "threads": pyquant.get_num_threads(),
            "kernels": {str(b): kernel_for(b) for b in widths}}
    table = {"meta": meta, "entries": {}}
    if cache and os.path.exists(cache) and not refresh:
        try:
            with open(cache) as fh:
                old = json.load(fh)
            if old.get("meta") == meta:
                table = old
        except (OSError, ValueError):
            pass
    changed = False
    for m, n, k in shapes:
        key = shape_key(m, n, k)
        entry = table["entries"].setdefault(key, {})
        for b in widths:
            if str(b) not in entry:
                entry[str(b)] = _time_one(m, n, k, b, repeats, min_time)
                changed = True
    if cache and changed:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        with open(cache, "w") as fh:
            json.dump(table, fh, indent=1)
    return table


def lookup(table: dict, m: int, n: int, k: int, bits: int) -> float:
    return table["entries"][shape_key(m, n, k)][str(int(bits))]


# --------------------------------------------------------------------------------------------
# The GRU search's cost: the deployed module itself, not a per-GEMM proxy
# --------------------------------------------------------------------------------------------
def gru_latency_key(widths: dict) -> str:
    """What the deployed GRU's time depends on: the six matmul widths (kernel per gate group),
    the head's width, and whether the state fits 7 bits (the int8 groups' single-multiply route
    on AVX2). The other elementwise widths change constants, not work."""
    ops = ("w_ir", "w_iz", "w_in", "w_hr", "w_hz", "w_hn")
    key = "-".join(str(int(widths[op])) for op in ops)
    return f"{key}/head{int(widths.get('head', 8))}/h{'7' if int(widths['add_h']) <= 7 else '8'}"


def time_call(call, repeats: int = 5, min_time: float = 0.002) -> float:
    """Best-of-`repeats` seconds per call, each repeat looping for at least `min_time`."""
    call()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        reps, t0 = 0, time.perf_counter()
        while True:
            call()
            reps += 1
            el = time.perf_counter() - t0
            if el >= min_time:
                break
        best = min(best, el / reps)
    return best


class GRULatency:
    """Seconds per single-sequence inference of the deployed QuantGRU (native forward) + its
    QuantHead, measured per `gru_latency_key` and cached (JSON, keyed like the GEMM table by the
    ISA, thread count and sequence shape)."""

    def __init__(self, gru, head, ranges: dict, steps: int, cache: str | None = None,
                 repeats: int = 5, min_time: float = 0.002):
        self.gru, self.head, self.ranges, self.steps = gru, head, ranges, steps
        self.cache, self.repeats, self.min_time = cache, repeats, min_time
        self.meta = {"isa": pyquant.cpu_info()["isa"], "threads": pyquant.get_num_threads(),
                     "what": "QuantGRU native forward + QuantHead", "steps": steps,
                     "input": gru.input_size, "hidden": gru.hidden_size}
        self.entries: dict = {}
        if cache and os.path.exists(cache):
            try:
                with open(cache) as fh:
                    old = json.load(fh)
                if old.get("meta") == self.meta:
                    self.entries = old["entries"]
            except (OSError, ValueError, KeyError):
                pass

    def measure(self, widths: dict) -> float:
        import torch

        from ..nn.gru import GRU_OPS, QuantGRU
        from .deploy import QuantHead

        q = QuantGRU.from_gru(self.gru, {op: widths[op] for op in GRU_OPS}, ranges=self.ranges)
        head = QuantHead(self.head, int(widths.get("head", 8)))
        x = torch.zeros(1, self.steps, self.gru.input_size)

        def call():
            codes = q.forward_codes(x)
            head(codes[:, -1].numpy(), q.s_h)

        return time_call(call, self.repeats, self.min_time)

    def __call__(self, widths: dict) -> float:
        key = gru_latency_key(widths)
        if key not in self.entries:
            self.entries[key] = self.measure(widths)
            if self.cache:
                os.makedirs(os.path.dirname(os.path.abspath(self.cache)), exist_ok=True)
                with open(self.cache, "w") as fh:
                    json.dump({"meta": self.meta, "entries": self.entries}, fh, indent=1)
        return self.entries[key]
