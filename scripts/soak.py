"""Soak: many forward calls of a quantized layer per config; resident memory must stay flat.

    python scripts/soak.py [--calls 100000]

For each config a small QuantLinear (256 -> 128, batch 4) runs `--calls` forwards; resident set
size (from /proc/self/statm) is read after a warm-up of 10% of the calls and at the end. Growth
beyond --max-growth-mib (allocator noise) fails the run: a leak of even 16 bytes per call would
show as 1.5 MiB over 100,000 calls.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import pyquant
from pyquant.nn import QuantLinear


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--max-growth-mib", type=float, default=1.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    configs = [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32), pyquant.WeightOnlyConfig(2, 64),
               pyquant.LUT2Config(), pyquant.SparqConfig()]
    failed = 0
    for config in configs:
        layer = QuantLinear.from_linear(torch.nn.Linear(256, 128), config)
        x = torch.randn(4, 256)
        warm = max(1, args.calls // 10)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(warm):
                layer(x)
            before = rss_mib()
            for _ in range(args.calls - warm):
                layer(x)
        after = rss_mib()
        growth = after - before
        ok = growth <= args.max_growth_mib
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {config!r}: {args.calls} calls in "
              f"{time.perf_counter() - t0:.1f} s, RSS {before:.1f} -> {after:.1f} MiB "
              f"(growth {growth:+.2f} MiB, limit {args.max_growth_mib})")
    print(f"soak: {len(configs) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
