"""Loading a quantized LLM: quantize_ from the float model (what a user without a quantized file
runs at every start) against pyquant.load_quantized_ of the file pyquant.save_quantized wrote,
into a model built without its weights (accelerate.init_empty_weights). Each path in a fresh process: seconds
and peak resident memory; the two models' logits must be identical. A Llama-architecture decoder
at a real model's shapes, random weights (pyquant.studies.llm presets).
Usage (from the repository root):
  PYTHONPATH=. python benchmarks/load_quantized.py [PRESET [CONFIG,...]]
  PRESET: tinyllama-1.1b (default), mid, quick; CONFIG: int8, w4g32, w2g32, lut2, sparq24"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

from script_args import import_transformers, parsed_args

CONFIGS = ("int8", "w4g32", "w2g32", "lut2", "sparq24")


def parse(argv):
    preset = argv[0] if argv else "tinyllama-1.1b"
    names = argv[1].split(",") if len(argv) > 1 else ["int8", "w4g32"]
    if any(n not in CONFIGS for n in names):
        raise ValueError(f"configs: expected some of {CONFIGS}, got {names}")
    return preset, names


def config_of(name):
    import pyquant
    return {"int8": pyquant.Int8Config(), "w4g32": pyquant.WeightOnlyConfig(4, 32),
            "w2g32": pyquant.WeightOnlyConfig(2, 32), "lut2": pyquant.LUT2Config(),
            "sparq24": pyquant.SparqConfig(sparse24=True)}[name]


def child(mode, preset, name, path):
    """One path in this process; prints a JSON line."""
    import torch

    import pyquant
    from pyquant.studies.llm_model import PRESETS
    warnings.filterwarnings("ignore")
    T = import_transformers()
    cfg = T.LlamaConfig(**PRESETS[preset])
    ids = (torch.arange(16).view(1, 16) * 997) % cfg.vocab_size
    t0 = time.perf_counter()
    if mode == "quantize":
        torch.manual_seed(0)
        model = T.LlamaForCausalLM(cfg).eval()  # (random init: a checkpoint would be read here)
        t1 = time.perf_counter()
        pyquant.quantize_(model, config_of(name))
    else:
        import accelerate
        with accelerate.init_empty_weights():
            model = T.LlamaForCausalLM(cfg).eval()
        t1 = time.perf_counter()
        pyquant.load_quantized_(model, path)  # (the config from the file's metadata)
    t2 = time.perf_counter()
    with torch.no_grad():
        logits = model(ids).logits
    if mode == "quantize":
        pyquant.save_quantized(model, path)
        torch.save(logits, path + ".logits")
        same = True
    else:
        same = bool(torch.equal(logits, torch.load(path + ".logits")))
    print(json.dumps({"build": t1 - t0, "convert": t2 - t1, "same": same,
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def main():
    preset, names = parsed_args(__doc__, parse)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    print(f"{preset}: build = float model (random init) or empty model; convert = quantize_ or "
          "load_quantized_ (s); peak resident GB")
    print("| config | file MB | float + quantize_: build / convert / peak | load_quantized_: "
          "build / load / peak | same logits |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = os.path.join(tmp, f"{name}.safetensors")
            rows = []
            for mode in ("quantize", "load"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, preset, name, path],
                                     env=env, capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            q, lo = rows
            mb = os.path.getsize(path) / 1e6
            print(f"| {name} | {mb:.0f} | {q['build']:.1f} / {q['convert']:.1f} / "
                  f"{q['peak_gb']:.2f} | {lo['build']:.1f} / {lo['convert']:.1f} / "
                  f"{lo['peak_gb']:.2f} | {lo['same']} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
