"""Cold decode of QuantLinear as converted vs after a torch.save / torch.load round trip of the
whole module (4 layers of 4096 -> 14336 cycled so the weights come from DRAM, M = 1, 1 thread),
the two sets alternating per round; per call min / median ms. Reloaded weights arrive in torch's
4 KiB pages and are copied into numpy (huge-page) memory at load (docs/notes/nn_forward.md).
Usage: python benchmarks/reload_decode.py"""
import io, time, torch, pyquant
from script_args import no_args
no_args(__doc__)
from pyquant.nn import QuantLinear
torch.manual_seed(0); pyquant.set_num_threads(1); torch.set_num_threads(1)
K, N, L = 4096, 14336, 4
cfgs = {"W4g32": pyquant.WeightOnlyConfig(4, 32), "Int8": pyquant.Int8Config()}
x = torch.randn(1, K)
for name, cfg in cfgs.items():
    conv = [QuantLinear.from_linear(torch.nn.Linear(K, N), cfg) for _ in range(L)]
    def rt(m):
        f = io.BytesIO(); torch.save(m, f); f.seek(0); return torch.load(f, weights_only=False)
    sets = {"converted": conv, "reloaded": [rt(m) for m in conv]}
    ts = {s: [] for s in sets}
    with torch.no_grad():
        for rnd in range(15):
            for s, ms in sets.items():
                for m in ms:
                    t0 = time.perf_counter(); m(x); ts[s].append(time.perf_counter() - t0)
    print(name, " | ".join(f"{s} min {min(v[L:])*1e3:.3f} med {sorted(v[L:])[len(v[L:])//2]*1e3:.3f} ms" for s, v in ts.items()), flush=True)
