"""Cold decode of the grouped low-bit forward: QuantLinear(WeightOnlyConfig(bits, g)) at M = 1 vs
the raw ungrouped lowbit_gemm on a copy of the same codes (its own copy: reading the grouped
call's buffer right after it would find it in a large L3), 4 layers of 4096 -> 14336 cycled so
the weights come from DRAM; per call median / min in ms, the configs alternating per round
(machine drift hits all alike).
Usage: python benchmarks/grouped_decode_cold.py [THREADS] [BITS/GROUP,...]"""
import sys, time, torch, numpy as np, pyquant
from pyquant.nn import QuantLinear
torch.manual_seed(0)
K, N, L = 4096, 14336, 4
from script_args import parsed_args
thr, specs = parsed_args(__doc__, lambda a: (int(a[0]) if a else 1,
                                             a[1].split(",") if len(a) > 1 else ["4/32", "2/32"]))
[tuple(int(v) for v in s.split("/")) for s in specs]  # (a malformed spec: the usage, above)
torch.set_num_threads(thr); pyquant.set_num_threads(thr)
lins = [torch.nn.Linear(K, N) for _ in range(L)]
x = torch.randn(1, K); a = np.random.default_rng(0).integers(0, 256, (1, K), dtype=np.uint8)
fns = {}
for s in specs:
    b, g = (int(v) for v in s.split("/"))
    ms = [QuantLinear.from_linear(l, pyquant.WeightOnlyConfig(b, g)) for l in lins]
    fns[f"W{b}g{g}"] = [(lambda m=m: m(x)) for m in ms]
    pws = [pyquant.PackedWeight(m.packed.numpy().copy(), "lowbit_gemm", {"bits": b}) for m in ms]
    fns[f"W{b}raw"] = [(lambda p=p, b=b: pyquant.lowbit_gemm(a, p, bits=b)) for p in pws]
ts = {s: [] for s in fns}
with torch.no_grad():
    for rnd in range(12):
        for s, fl in fns.items():
            for f in fl:
                t0 = time.perf_counter(); f(); ts[s].append(time.perf_counter() - t0)
best = {}
for s in fns:
    v = sorted(ts[s][L:]); best[s] = v[0]
    print(f"{s} {v[len(v)//2]*1e3:.3f}/{v[0]*1e3:.3f}", end=" | ")
print()
print("grouped / raw (min):", ", ".join(f"{s} {best[s] / best[s.split('g')[0] + 'raw']:.2f}"
                                       for s in fns if not s.endswith("raw")))
