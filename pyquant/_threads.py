"""Thread count used by every kernel call.

Default: torch.get_num_threads() when torch has been imported, else the core count.
set_num_threads(n) pins it for the process (a forked child starts from the default again);
set_num_threads(None) restores the default.
"""
from __future__ import annotations

import numbers
import os
import sys

_pinned: int | None = None


def set_num_threads(n: int | None) -> None:
    global _pinned
    if n is None:
        _pinned = None
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n: expected an int >= 1 or None, got {type(n).__name__}")
    n = int(n)
    if n < 1 or n > 1024:
        raise ValueError(f"n: expected 1 <= n <= 1024, got {n}")
    _pinned = n


def _after_fork_in_child() -> None:
    # A forked child (DataLoader workers) cannot run the OpenMP threads its parent started
    # (libgomp hangs): it follows torch's count again, which such workers set to 1.
    global _pinned
    _pinned = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_num_threads() -> int:
    if _pinned is not None:
        return _pinned
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, int(torch.get_num_threads()))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
