"""QuantLinear vs the raw integer op of its config (4096 -> 14336), min CPU time per call.
Usage (from the repository root): PYTHONPATH=. python benchmarks/nn_forward_ratio.py 1,8,512 THREADS"""
import sys, time, torch, numpy as np, pyquant
from pyquant.nn import QuantLinear
torch.manual_seed(0)
K, N = 4096, 14336
from script_args import parsed_args
Ms, thr = parsed_args(__doc__, lambda a: ([int(v) for v in a[0].split(",")] if a else [1, 8],
                                          int(a[1]) if len(a) > 1 else 2))
torch.set_num_threads(thr); pyquant.set_num_threads(thr)
lin = torch.nn.Linear(K, N)
cfgs = [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32), pyquant.WeightOnlyConfig(4, 64), pyquant.WeightOnlyConfig(4, 128),
        pyquant.WeightOnlyConfig(2, 32), pyquant.LUT2Config(a_scale="minmax"), pyquant.LUT2Config(), pyquant.SparqConfig()]
mods = [(c, QuantLinear.from_linear(lin, c)) for c in cfgs]
def best(f, n):
    f(); ts = []
    for _ in range(n):
        t0 = time.process_time(); f(); ts.append(time.process_time() - t0)
    return min(ts) * 1e3
rng = np.random.default_rng(0)
for M in Ms:
    x = torch.randn(M, K)
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    a_signed = np.where(rng.random((M, K)) < 0.5, -a.astype(np.int16), a)
    reps = 20 if M < 100 else 3
    raw = {}
    with torch.no_grad():
        for c, m in mods:
            name = type(c).__name__
            if isinstance(c, pyquant.Int8Config):
                a7 = np.ascontiguousarray(a >> (8 - c.act_bits))  # the module's activation width
                pw = pyquant.PackedWeight(m.packed.numpy(), "int8_gemm"); rf = lambda: pyquant.int8_gemm(a7, pw)
            elif isinstance(c, pyquant.WeightOnlyConfig):
                pw = pyquant.PackedWeight(m.packed.numpy(), "lowbit_gemm", {"bits": c.bits}); rf = lambda: pyquant.lowbit_gemm(a, pw, bits=c.bits)
            elif isinstance(c, pyquant.LUT2Config):
                codes = (a % 4).astype(np.uint8)
                pw = pyquant.PackedWeight(m.packed.numpy(), "lut_gemm", {"w_levels": c.w_levels}); rf = lambda: pyquant.lut_gemm(codes, pw, a_levels=c.a_levels, w_levels=c.w_levels)
            else:  # signed rows like the module's input (x has negative values): int16 sign-magnitude
                kw = c.op_kwargs(); pw = pyquant.PackedWeight(m.packed.numpy(), "sparq_gemm", kw)
                rf = lambda: pyquant.sparq_gemm(a_signed, pw, **kw)
            tr = best(rf, reps); tm = best(lambda: m(x), reps)
            print(f"M={M:4d} {thr}t {c!r:55s} raw {tr:8.3f} ms  module {tm:8.3f} ms  ratio {tm/tr:5.2f}", flush=True)
