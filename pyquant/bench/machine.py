"""The machine, measured at run time rather than assumed: the core clock (MAC/cycle figures divide
by it) and a DRAM read reference (one float32 stream; a decode GEMV reading several streams with
prefetches can pass it)."""
from __future__ import annotations

import functools
import time

from .cases import l3_bytes


def clock_ghz() -> float | None:
    """The calling core's clock from a dependent-add chain (csrc/core/clock.cc), or None where it
    cannot be measured (an architecture without the chain, an old build): report GOP/s only."""
    try:
        from pyquant import _C

        ghz = float(_C.measure_clock_ghz())
    except (ImportError, AttributeError):
        return None
    return ghz if 0.2 < ghz < 10.0 else None


@functools.lru_cache(maxsize=None)
def session_clock_ghz() -> float | None:
    """clock_ghz() measured once per process (the pytest-benchmark front end)."""
    return clock_ghz()


def mac_per_cycle(macs: int, seconds: float | None, ghz: float | None) -> float | None:
    if not seconds or not ghz:
        return None
    return macs / seconds / (ghz * 1e9)


def dram_read_gbps(threads: int = 1, nbytes: int | None = None, rounds: int = 5) -> float:
    """Best-of-`rounds` read bandwidth of a float32 sum over `nbytes` (default 8x L3) on `threads`
    threads: one read stream per thread, a reference rather than the machine's ceiling (kernels
    that read two or four streams with prefetches measured up to 1.5x it on an Intel Xeon).
    The sum is far from compute-bound (it runs several times faster from cache), so its time is
    the time to stream the buffer from DRAM. One thread: timed with the thread's CPU clock (the
    sum runs on the caller), so time slices taken by other processes do not count; more threads:
    wall clock, best of the rounds."""
    import torch

    nbytes = nbytes or 8 * l3_bytes()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.ones(nbytes // 4, dtype=torch.float32)
        x.sum()
        clock = time.thread_time if threads == 1 else time.perf_counter
        best = float("inf")
        for _ in range(rounds):
            t0 = clock()
            x.sum()
            best = min(best, clock() - t0)
    finally:
        torch.set_num_threads(old)
    return nbytes / best / 1e9
