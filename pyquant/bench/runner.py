"""Times benchmark cases side by side: build every case of a problem, warm up, then interleave
rounds (case A, B, C, A, B, C, ...) and keep each case's fastest round, so slow drifts of a noisy
shared machine hit all kernels alike.

A case this CPU (or the active path) cannot run is not timed: its result carries the reason
("needs AVX-512 VBMI"). A case whose first call takes over SLOW_CALL_SECONDS (the naive
torch._int_mm without VNNI: 3-5 s at 256x4096x4096) is timed by that one call, so that it does
not dominate the run; a first call's one-time costs (page faults of the output, lazy set-up) are
milliseconds, under 1% of it. Its result says so (rounds = 1).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from .cases import Case, Problem, cases_for

SLOW_CALL_SECONDS = 1.0
ISA_FEATURE = {"avx2": "AVX2", "avx512": "AVX-512", "neon": "NEON", "scalar": "a scalar build"}
_ISA_RANK = {"scalar": 0, "avx2": 1, "neon": 1, "avx512": 2}


def isa_cap() -> str | None:
    """The process's PYQUANT_ISA cap (None: the CPU's best path). Cases pinned to a higher path
    are not run under it, though the CPU could."""
    return os.environ.get("PYQUANT_ISA", "").strip().lower() or None


@dataclass
class Result:
    problem: Problem
    kernel: str
    kind: str
    isa: str
    seconds: float | None
    error: str | None = None
    note: str = ""
    bytes_per_weight: float = 1.0
    skipped: str | None = None  # why the case was not run ("needs AVX-512 VBMI", the cap)
    rounds: int = 0             # timed rounds the minimum is over
    once: bool = False          # a call over SLOW_CALL_SECONDS, timed once
    ran: str | None = None      # int8_gemm / lowbit_gemm: the kernel the dispatch picked

    @property
    def gops(self) -> float | None:
        return None if not self.seconds else self.problem.ops / self.seconds / 1e9


class _ThreadsAndIsa:
    def __init__(self, threads: int, isa: str | None):
        self.threads, self.isa = threads, isa

    def __enter__(self):
        import torch

        import pyquant
        from pyquant import _C

        self._torch_threads = torch.get_num_threads()
        self._isa = _C.active_isa()
        torch.set_num_threads(self.threads)
        pyquant.set_num_threads(self.threads)
        if self.isa:
            _C.set_isa(self.isa)
        return _C.active_isa()

    def __exit__(self, *exc):
        import torch

        import pyquant
        from pyquant import _C

        torch.set_num_threads(self._torch_threads)
        pyquant.set_num_threads(None)
        _C.set_isa(self._isa)


def unavailable(case: Case) -> str | None:
    """Why this CPU (or the active path) cannot run `case`, or None if it can."""
    import pyquant

    if case.isa and case.isa not in pyquant.cpu_info()["available"]:
        return f"needs {ISA_FEATURE.get(case.isa, case.isa)}"
    cap = isa_cap()
    if case.isa and cap and _ISA_RANK.get(case.isa, 0) > _ISA_RANK.get(cap, 0):
        return f"excluded by PYQUANT_ISA={cap}"
    if case.requires is None:
        return None
    with _ThreadsAndIsa(case.problem.threads, case.isa):
        return case.requires()


def _time_once(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


@dataclass
class _Built:
    case: Case
    isa: str
    fn: Callable[[], object] | None = None  # None: nothing (more) to time
    calls: int = 0
    error: str | None = None
    skipped: str | None = None
    best: float | None = None
    rounds: int = 0
    ran: str | None = None  # the kernel the family's dispatch picked under the case's path


def _selected_kernel(case: Case) -> str | None:
    """For int8_gemm / lowbit_gemm cases, the kernel that runs (a tier holds several: the AVX2
    tier of an AVX-VNNI CPU runs avxvnni_6x16, an AVX2-only CPU avx2_4x16)."""
    from pyquant._kernels import kernel_table

    family = next((f for f in ("int8_gemm", "lowbit_gemm")
                   if case.kernel.startswith("pyquant." + f)), None)
    return next((e["name"] for e in kernel_table() if e["family"] == family and e["selected"]),
                None) if family else None


def _build(case: Case, problem: Problem, min_sample: float) -> _Built:
    from pyquant import _C

    reason = unavailable(case)
    if reason:
        return _Built(case, case.isa or _C.active_isa(), skipped=reason)
    with _ThreadsAndIsa(problem.threads, case.isa) as isa:
        try:
            fn = case.make(problem)
            ran = _selected_kernel(case)
            first = _time_once(fn, 1)  # also the warm-up: page faults, lazy initialization
            if first >= SLOW_CALL_SECONDS:
                return _Built(case, isa, best=first, rounds=1, ran=ran)
            count = getattr(fn, "count", 1)  # the case's cold set (rotating), else 1
            for _ in range(max(2, count) - 1):  # one pass over a cold set
                fn()
            single = _time_once(fn, 1)
            calls = max(1, min(1000, int(min_sample / max(single, 1e-7))))
            if problem.cold:
                calls = max(calls, count)  # a sample covers the whole rotation
            return _Built(case, isa, fn=fn, calls=calls, ran=ran)
        except Exception as exc:  # a baseline missing on this torch build, an unsupported shape
            return _Built(case, isa, error=f"{type(exc).__name__}: {exc}")


def run_problem(problem: Problem, rounds: int = 5, min_sample: float = 0.02,
                only: Callable[[Case], bool] | None = None,
                on_case: Callable[[str], None] | None = None) -> list[Result]:
    built = []
    for case in cases_for(problem):
        if only is not None and not only(case):
            continue
        if on_case:
            on_case(f"{problem.name}: {case.kernel}")
        built.append(_build(case, problem, min_sample))
    for _ in range(rounds):
        for b in built:
            if b.fn is None:
                continue
            with _ThreadsAndIsa(problem.threads, b.case.isa):
                t = _time_once(b.fn, b.calls)
            b.best = t if b.best is None else min(b.best, t)
            b.rounds += 1
    results = []
    for b in built:
        c = b.case
        label_isa = b.isa if c.kind == "pyquant" or c.kernel.startswith("pyquant") else "torch"
        note = c.note
        once = b.rounds == 1 and b.fn is None and b.best is not None
        if once:
            said = f"timed once (a call takes > {SLOW_CALL_SECONDS:g} s)"
            note = f"{note}; {said}" if note else said
        results.append(Result(problem, c.kernel, c.kind, label_isa, b.best, b.error, note,
                              c.extra.get("bytes_per_weight", 1.0), b.skipped, b.rounds, once,
                              b.ran))
    del built
    return results
