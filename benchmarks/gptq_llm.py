"""GPTQ on a decoder LLM: `pyquant.nn.gptq_` of a Llama-architecture model at a real model's
shapes (pyquant.studies.llm presets; random weights, random token ids as calibration data: the
time and memory do not depend on the values), seconds and peak resident memory, beside
`quantize_` (round-to-nearest) of the same model: gptq_'s default (decoder layer after decoder
layer, on the layers before as quantized) and its one-pass form (`sequential=False`).
Usage (from the repository root):
  PYTHONPATH=. python benchmarks/gptq_llm.py [PRESET [CONFIG [SEQUENCES [TOKENS [HESSIAN_GB]]]]]
  PRESET: tinyllama-1.1b (default), mid, quick; CONFIG: w4g32 (default), w2g32, sparq24;
  SEQUENCES x TOKENS calibration tokens (default 4 x 512); HESSIAN_GB: gptq_'s hessian_memory
  in GiB (default: none, every layer in one pass)"""
import json
import resource
import subprocess
import sys
import time
import warnings

from script_args import import_transformers, parsed_args

CONFIGS = ("w4g32", "w2g32", "sparq24")


def parse(argv):
    from pyquant.studies.llm_model import PRESETS
    preset = argv[0] if argv else "tinyllama-1.1b"
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    name = argv[1] if len(argv) > 1 else "w4g32"
    if name not in CONFIGS:
        raise ValueError(f"config: expected one of {CONFIGS}, got {name!r}")
    seqs = int(argv[2]) if len(argv) > 2 else 4
    tokens = int(argv[3]) if len(argv) > 3 else 512
    gib = float(argv[4]) if len(argv) > 4 else 0.0
    if seqs < 1 or tokens < 1 or len(argv) > 5 or not gib >= 0:
        raise ValueError("expected at most 5 arguments, at least one sequence of one token, and "
                         "HESSIAN_GB >= 0")
    return preset, name, seqs, tokens, gib


def child(mode, preset, name, seqs, tokens, gib):
    """One conversion in this process; prints a JSON line."""
    import torch

    import pyquant
    from pyquant.studies.llm_model import PRESETS
    warnings.filterwarnings("ignore")
    T = import_transformers()
    cfg = T.LlamaConfig(**PRESETS[preset])
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(cfg).eval()
    config = {"w4g32": pyquant.WeightOnlyConfig(4, 32), "w2g32": pyquant.WeightOnlyConfig(2, 32),
              "sparq24": pyquant.SparqConfig(sparse24=True)}[name]
    batches = [torch.randint(0, cfg.vocab_size, (1, int(tokens))) for _ in range(int(seqs))]
    t0 = time.perf_counter()
    if mode.startswith("gptq"):
        limit = int(float(gib) * 2**30) or None
        pyquant.nn.gptq_(model, config, batches, hessian_memory=limit, sequential=mode == "gptq")
    else:
        pyquant.quantize_(model, config)
    print(json.dumps({"seconds": time.perf_counter() - t0,
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def main():
    preset, name, seqs, tokens, gib = parsed_args(__doc__, parse)
    print(f"{preset}, {name}, {seqs} x {tokens} calibration tokens, hessian_memory "
          f"{f'{gib} GiB' if gib else 'None'}: seconds / peak resident GB (each in a fresh process)")
    labels = {"quantize": "quantize_", "gptq": "gptq_ (sequential)", "gptq-one-pass": "gptq_ (sequential=False)"}
    for mode, label in labels.items():
        out = subprocess.run([sys.executable, __file__, "--child", mode, preset, name, str(seqs),
                              str(tokens), str(gib)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label}: {r['seconds']:.1f} s, {r['peak_gb']:.2f} GB", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:8])
    else:
        main()
