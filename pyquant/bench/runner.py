"""Times benchmark cases side by side: build every case of a problem, warm up, then interleave
rounds (case A, B, C, A, B, C, ...) and keep each case's fastest round, so slow drifts of a noisy
shared machine hit all kernels alike."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .cases import Case, Problem, cases_for

NOMINAL_GHZ = 3.64  # Zen 4 clock under load (cpu.md); MAC/cycle figures assume it


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

    @property
    def gops(self) -> float | None:
        return None if not self.seconds else self.problem.ops / self.seconds / 1e9

    @property
    def mac_per_cycle(self) -> float | None:
        if not self.seconds:
            return None
        return self.problem.m * self.problem.n * self.problem.k / self.seconds / (NOMINAL_GHZ * 1e9)


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


def _time_once(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def run_problem(problem: Problem, rounds: int = 5, min_sample: float = 0.02,
                only: Callable[[Case], bool] | None = None,
                on_case: Callable[[str], None] | None = None) -> list[Result]:
    cases = [c for c in cases_for(problem) if only is None or only(c)]
    built: list[tuple[Case, Callable[[], object] | None, str | None, int, str]] = []
    for case in cases:
        if on_case:
            on_case(f"{problem.name}: {case.kernel}")
        with _ThreadsAndIsa(problem.threads, case.isa) as isa:
            try:
                fn = case.make(problem)
                for _ in range(max(2, problem.layers)):  # warm-up: page faults, one pass over the set
                    fn()
                single = _time_once(fn, 1)
                calls = max(1, min(1000, int(min_sample / max(single, 1e-7))))
                if problem.cold:
                    calls = max(calls, problem.layers)  # a sample covers the whole rotation
                built.append((case, fn, None, calls, isa))
            except Exception as exc:  # a baseline missing on this torch build, an unsupported shape
                built.append((case, None, f"{type(exc).__name__}: {exc}", 0, isa))
    best: dict[int, float] = {}
    for _ in range(rounds):
        for i, (case, fn, err, calls, _isa) in enumerate(built):
            if fn is None:
                continue
            with _ThreadsAndIsa(problem.threads, case.isa):
                t = _time_once(fn, calls)
            best[i] = min(best.get(i, float("inf")), t)
    results = []
    for i, (case, fn, err, calls, isa) in enumerate(built):
        label_isa = isa if case.kind == "pyquant" or case.kernel.startswith("pyquant") else "torch"
        results.append(Result(problem, case.kernel, case.kind, label_isa, best.get(i), err, case.note,
                              case.extra.get("bytes_per_weight", 1.0)))
    del built
    return results
