"""Timing shared by the studies."""
from __future__ import annotations

import time
from typing import Callable


def best_interleaved(models: dict, repeats: int, run: Callable) -> dict:
    """Best-of-``repeats`` time of ``run(model)`` per model, after a warm-up, the models taking
    turns in each round so that load from other processes on a shared machine hits them alike."""
    best = {name: float("inf") for name in models}
    for model in models.values():
        run(model)
    for _ in range(repeats):
        for name, model in models.items():
            t = time.perf_counter()
            run(model)
            best[name] = min(best[name], time.perf_counter() - t)
    return best
