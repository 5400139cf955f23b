"""NSGA-II over discrete width choices (pymoo), seeded, with a fitness cache.

Genes are indices into per-gene choice lists (e.g. (2, 4, 8) for a matmul, 2..8 for an elementwise
GRU operator). All objectives are minimized (pass -accuracy). Every evaluated genome is kept in the
cache; the returned front is the non-dominated set of everything evaluated.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def non_dominated(objs: np.ndarray) -> np.ndarray:
    """Indices of the rows not dominated by any other row (minimization)."""
    objs = np.asarray(objs, float)
    keep = []
    for i, o in enumerate(objs):
        dominated = np.any(np.all(objs <= o, axis=1) & np.any(objs < o, axis=1))
        if not dominated:
            keep.append(i)
    return np.array(keep, dtype=int)


class FitnessCache:
    """genome (tuple of chosen values) -> objectives; counts real evaluations."""

    def __init__(self, fn: Callable[[tuple], Sequence[float]]):
        self.fn, self.table, self.calls = fn, {}, 0

    def __call__(self, genome: tuple) -> tuple:
        genome = tuple(int(g) for g in genome)
        if genome not in self.table:
            self.calls += 1
            self.table[genome] = tuple(float(v) for v in self.fn(genome))
        return self.table[genome]

    def front(self) -> list:
        items = list(self.table.items())
        if not items:
            return []
        idx = non_dominated(np.array([o for _, o in items]))
        # one genome per objective vector (the first evaluated), sorted by the last objective
        seen, out = set(), []
        for i in idx:
            if items[i][1] not in seen:
                seen.add(items[i][1])
                out.append(items[i])
        return sorted(out, key=lambda kv: kv[1][::-1])


def nsga2(choices: Sequence[Sequence[int]], evaluate: Callable[[tuple], Sequence[float]],
          n_obj: int, pop: int = 24, gens: int = 20, seed: int = 0, progress=None,
          initial: Sequence[Sequence[int]] = ()) -> FitnessCache:
    """Runs NSGA-II; `evaluate(genome_of_values) -> objectives` (minimized). `initial` genomes (as
    values) are injected into the first population (e.g. the uniform 8-bit model)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    choices = [list(c) for c in choices]
    cache = FitnessCache(evaluate)

    def to_values(row) -> tuple:
        return tuple(choices[j][int(round(v))] for j, v in enumerate(row))

    class _P(Problem):
        def __init__(self):
            super().__init__(n_var=len(choices), n_obj=n_obj, xl=0,
                             xu=np.array([len(c) - 1 for c in choices]), vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            out["F"] = np.array([cache(to_values(row)) for row in X])

    sampling = IntegerRandomSampling()
    if initial:
        rng = np.random.default_rng(seed)
        X = np.array([[rng.integers(0, len(c)) for c in choices] for _ in range(pop)])
        for k, g in enumerate(initial[:pop]):
            X[k] = [choices[j].index(v) for j, v in enumerate(g)]
        sampling = X

    class _CB(Callback):
        def notify(self, algorithm):
            if progress is not None:
                progress(algorithm.n_gen, cache.calls)

    algo = NSGA2(pop_size=pop, sampling=sampling,
                 crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=3.0, vtype=float, repair=RoundingRepair()),
                 eliminate_duplicates=True)
    minimize(_P(), algo, ("n_gen", gens), seed=seed, callback=_CB(), verbose=False)
    return cache
