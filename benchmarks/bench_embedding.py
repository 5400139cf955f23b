"""Quantized embedding tables (pyquant.nn.QuantEmbedding / QuantEmbeddingBag) beside the float
ones: lookup time and table bytes. A memory feature: the lookups are a small part of a model's
forward (docs/notes/embedding.md), and this measures what they cost.

    pytest benchmarks/bench_embedding.py --benchmark-only    # pytest-benchmark, per case
    python benchmarks/bench_embedding.py [--repeats 5]       # side by side, 1 thread

Cases: an LLM decode step (one row of a 32000 x 2048 table), a prefill (128 rows), a sentence
encoder's batch (1024 rows of a 30522 x 384 table), and a recommender's bags (2048 bags of 20
indices into a 1M x 64 nn.EmbeddingBag, mode sum).
"""
from __future__ import annotations

import time

import pytest
import torch

import pyquant
from pyquant.nn import QuantEmbedding, QuantEmbeddingBag

TABLES = {"float": None, "int8": pyquant.Int8Config(act_bits=8),
          "w4g32": pyquant.WeightOnlyConfig(4, 32)}
CASES = {  # name: (rows, dim, lookups, bag length or 0)
    "decode 1 of 32000x2048": (32000, 2048, 1, 0),
    "prefill 128 of 32000x2048": (32000, 2048, 128, 0),
    "encoder 1024 of 30522x384": (30522, 384, 1024, 0),
    "bags 2048x20 of 1Mx64": (1_000_000, 64, 2048, 20),
}


def make_case(name: str, seed: int = 0) -> dict:
    """{table kind: (zero-argument lookup, table bytes)} for case ``name``."""
    v, d, n, bag_len = CASES[name]
    g = torch.Generator().manual_seed(seed)
    if bag_len:
        float_table = torch.nn.EmbeddingBag(v, d, mode="sum")
        idx = torch.randint(0, v, (n * bag_len,), generator=g)
        args = (idx, torch.arange(0, n * bag_len, bag_len))
    else:
        float_table = torch.nn.Embedding(v, d)
        args = (torch.randint(0, v, (n,), generator=g),)
    out = {}
    for kind, cfg in TABLES.items():
        if cfg is None:
            module = float_table
        elif bag_len:
            module = QuantEmbeddingBag.from_embedding_bag(float_table, cfg)
        else:
            module = QuantEmbedding.from_embedding(float_table, cfg)
        nbytes = sum(t.numel() * t.element_size()
                     for t in (*module.parameters(), *module.buffers()))
        out[kind] = (lambda m=module: m(*args), nbytes)
    return out


@pytest.fixture(scope="module")
def cases():
    return {name: make_case(name) for name in CASES}


@pytest.mark.parametrize("kind", list(TABLES))
@pytest.mark.parametrize("case", list(CASES))
def test_lookup(benchmark, cases, case, kind):
    torch.set_num_threads(1)
    fn, nbytes = cases[case][kind]
    with torch.no_grad():
        fn()
        benchmark.group = f"embedding {case}"
        benchmark.extra_info["table_mb"] = nbytes / 1e6
        benchmark.pedantic(fn, rounds=20, iterations=5, warmup_rounds=2)


def side_by_side(repeats: int = 5, calls: int = 20) -> list:
    """Rows (case, kind, best us per call, table MB), the kinds alternating in each repeat."""
    torch.set_num_threads(1)
    rows = []
    with torch.no_grad():
        for case in CASES:
            fns = make_case(case)
            best = {kind: float("inf") for kind in fns}
            for _ in range(repeats):
                for kind, (fn, _) in fns.items():
                    fn()
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    best[kind] = min(best[kind], (time.perf_counter() - t0) / calls)
            rows += [(case, kind, best[kind] * 1e6, fns[kind][1] / 1e6) for kind in fns]
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"1 thread, best of {args.repeats} x 20 calls, {pyquant.cpu_info()['brand']}")
    print("| case | table | us per call | table MB |")
    print("|---|---|---|---|")
    for case, kind, us, mb in side_by_side(args.repeats):
        print(f"| {case} | {kind} | {us:.0f} | {mb:.1f} |")
