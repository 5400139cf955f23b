"""QuantGRU speed goals (issue #17 part 2), 1 thread, best of several repeats:

  1. digits shape (batch 64, 8 steps, input 8, hidden 64): native QuantGRU vs the Python-orchestrated
     forward it replaces (backend "python": QuantGRU's default before the native cell); goal >= 10x.
  2. hidden 256, batch 1, 100 steps (input 64): native QuantGRU vs torch.nn.GRU fp32; goal <= 1x.
Widths: uniform 8 (--widths 8), or the mixed NSGA-II point below (--widths mixed).

    python benchmarks/gru_ratios.py [--repeats 7] [--widths 8|4|mixed]
"""
from __future__ import annotations

import argparse

import torch

import pyquant
from pyquant.nn import QuantGRU
from pyquant.search.latency import time_call

# the mixed point NSGA-II found on digits (seed 0, docs/notes/search.md): matmuls at <= 4 bits
MIXED = dict(w_ir=2, w_iz=4, w_in=4, w_hr=4, w_hz=4, w_hn=4, add_r=6, add_z=4, add_n=7, sig_r=5,
             sig_z=7, tanh_n=4, mul_rn=8, one_minus_z=3, mul_zn=7, mul_zh=7, add_h=7)
SHAPES = {"digits": dict(batch=64, steps=8, inp=8, hidden=64),
          "h256": dict(batch=1, steps=100, inp=64, hidden=256)}


def best_time(fn, repeats: int, min_time: float = 0.2) -> float:
    return time_call(fn, repeats, min_time)  # warm-up, then the best of `repeats` loops


def models(batch, steps, inp, hidden, widths=8, seed=0):
    torch.manual_seed(seed)
    gru = torch.nn.GRU(inp, hidden, batch_first=True)
    x = torch.randn(batch, steps, inp)
    q = QuantGRU.from_gru(gru, widths, calib=x)
    return gru, q, x


def run(repeats: int = 7, widths=8) -> dict:
    pyquant.set_num_threads(1)
    torch.set_num_threads(1)
    out = {}
    for name, shp in SHAPES.items():
        gru, q, x = models(**shp, widths=widths)
        times = {}
        with torch.no_grad():
            times["nn.GRU fp32"] = best_time(lambda: gru(x), repeats)
            for be in ("kernels", "python", "torch"):
                if be != "kernels" and name == "h256" and repeats < 3:
                    continue
                q.backend = be
                times[f"QuantGRU {be}"] = best_time(lambda: q(x), repeats)
        q.backend = "kernels"
        out[name] = times
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--widths", default="8", help="uniform width of every operator, or 'mixed'")
    args = ap.parse_args()
    widths = MIXED if args.widths == "mixed" else int(args.widths)
    res = run(args.repeats, widths)
    print(f"CPU ISA path: {pyquant.cpu_info()['isa']}, 1 thread, best of {args.repeats}, "
          f"widths {args.widths}")
    for name, times in res.items():
        print(f"{name} {SHAPES[name]}")
        for k, v in times.items():
            print(f"  {k:22s} {v * 1e3:9.3f} ms")
    d, h = res["digits"], res["h256"]
    print(f"goal 1: python / native on digits = {d['QuantGRU python'] / d['QuantGRU kernels']:.1f}x "
          f"(goal >= 10x)")
    print(f"goal 2: native / nn.GRU at hidden 256 = {h['QuantGRU kernels'] / h['nn.GRU fp32']:.2f} "
          f"(goal <= 1)")


if __name__ == "__main__":
    main()
