"""int8_gemm (8-bit and 7-bit activations), QuantLinear(Int8Config()) (float in/out, like PyTorch's
module) and W2A2 lut_gemm beside PyTorch's dynamic int8 Linear.

    [T=2] [EXTRA=lut] [COPIES=3] python benchmarks/int8_vs_fbgemm.py 256x4096x4096,8x4096x4096

Ratios are PyTorch's time / ours (> 1: pyquant faster); the W2A2 cell gives its time over our
int8 and over fbgemm. Environment variables: T = threads (1: process CPU time, robust on a
shared machine; 2+: wall time; best of rounds); EXTRA=lut adds W2A2 lut_gemm; COPIES=3: the
int8 methods cycle through three copies of the weights, so a large matrix really comes from DRAM
(one copy of 4096 x 14336 stays partly in a large L3, which favours fbgemm); W2A2 stays on one.
"""
import time, os, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch, pyquant
T=int(os.environ.get("T","1")); torch.set_num_threads(T); pyquant.set_num_threads(T)
clock = time.process_time if T == 1 else time.perf_counter
rng=np.random.default_rng(0)
COPIES=int(os.environ.get("COPIES","1"))
def cycled(items, fn):
    """A call of fn on the next of items each time."""
    at=[0]
    def call():
        at[0]=(at[0]+1)%len(items)
        return fn(items[at[0]])
    return call
def best(fn, reps):
    fn(); b=1e9
    for _ in range(reps):
        t0=clock(); fn(); b=min(b,clock()-t0)
    return b
def fb(N,K):
    return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(K,N,bias=False)),{torch.nn.Linear},dtype=torch.qint8)
from script_args import parsed_args
def _shapes(a):
    out=[tuple(int(v) for v in s.split("x")) for s in a[0].split(",")]
    if any(len(s)!=3 for s in out): raise ValueError("shapes are MxNxK")
    return out
shapes=parsed_args(__doc__,_shapes)
for (M,N,K) in shapes:
    pws=[pyquant.prepack(rng.integers(-127,128,(N,K),dtype=np.int8),"int8_gemm") for _ in range(COPIES)]
    a8=rng.integers(0,256,(M,K),dtype=np.uint8); a7=a8>>1
    qs=[fb(N,K) for _ in range(COPIES)]; x=torch.randn(M,K)
    qls=[pyquant.nn.QuantLinear.from_linear(torch.nn.Linear(K,N,bias=False),pyquant.Int8Config()) for _ in range(COPIES)]
    ql=qls[0]
    reps=3 if M*N*K>5e9 else 7 if M>=64 else 30
    row=f"| {M}x{N}x{K} | T={T} |"
    with torch.no_grad(): tq=best(cycled(qs, lambda q: q(x)), reps)
    t8=best(cycled(pws, lambda pw: pyquant.int8_gemm(a8,pw)), reps)
    t7=best(cycled(pws, lambda pw: pyquant.int8_gemm(a7,pw)), reps)
    with torch.inference_mode(): tm=best(cycled(qls, lambda q: q(x)), reps)
    row+=f" fbgemm {tq*1e3:.3f} ms | int8 8-bit {t8*1e3:.3f} ms ({tq/t8:.2f}x) | int8 7-bit {t7*1e3:.3f} ms ({tq/t7:.2f}x) |"
    row+=f" QuantLinear {ql.config!r} {tm*1e3:.3f} ms ({tq/tm:.2f}x) |"
    if "lut" in os.environ.get("EXTRA",""):
        wl=rng.integers(0,4,(N,K),dtype=np.uint8); al=rng.integers(0,4,(M,K),dtype=np.uint8)
        pl=pyquant.prepack(wl,"lut_gemm",w_levels=(-2,-1,0,1))
        tl=best(lambda: pyquant.lut_gemm(al,pl), reps)
        row+=f" W2A2 {tl*1e3:.3f} ms ({t7/tl:.2f}x int8-7bit, {t8/tl:.2f}x int8-8bit, {tq/tl:.2f}x fbgemm) |"
    print(row, flush=True)
