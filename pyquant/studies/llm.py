"""LLM decode end to end: Llama and MoE decoders on pyquant, tokens per second (issue 15).

    pip install '.[llm]'                          # transformers, tqdm, matplotlib
    python -m pyquant.studies.llm --quick         # small model, every config, in well under a minute
    python -m pyquant.studies.llm --model tinyllama-1.1b --threads 1,2 --json llm.json --plot llm.png
    python -m pyquant.studies.llm --model olmoe-1b-7b-4l   # mixture of experts

Builds a ``LlamaForCausalLM`` (an ``OlmoeForCausalLM`` for the olmoe presets) at a real model's
shapes with random weights (no download; speed does not depend on the values), converts every
``nn.Linear`` (the LM head too) and MoE experts block per config, and
reports per config and thread count: prefill tokens/s for the prompt, decode tokens/s for greedy
generation with the KV cache, model bytes in memory, and the decode roofline: bytes read per
token (weights + KV cache) / DRAM read bandwidth measured here with the same thread count, and
the fraction of it reached. ``--profile`` adds the per-token split between pyquant's kernels,
their Python wrappers and the rest of the model.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import torch

from pyquant._cli import nonneg_int, positive_float, writable_file
from pyquant.studies import llm_model as lm

QUICK = {"model": "quick", "tokens": 16, "prompt_len": 32}


# ------------------------------------------------------------------------------------ bandwidth
def dram_read_bandwidth(threads: int, gib: float = 1.0, repeats: int = 3) -> float:
    """Bytes/s of a streaming read: ``torch.sum`` over a float32 tensor of ``gib`` GiB (far beyond
    any cache), best of ``repeats``, with ``threads`` threads. A decode step is a streaming read
    of the weights, so this is its ceiling."""
    lm.set_threads(threads)
    x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32)
    x.sum()  # page in / warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    nbytes = x.numel() * 4
    del x
    return nbytes / best


# ------------------------------------------------------------------------------------ one row
def measure(model, name: str, threads: int, prompt, tokens: int, bandwidth: float, repeats: int) -> dict:
    lm.set_threads(threads)
    lm.greedy(model, prompt[:, :8], 3)  # warm-up: first-call allocations, thread pools
    runs = [lm.greedy(model, prompt, tokens) for _ in range(repeats)]
    prefill_s = min(r["prefill_s"] for r in runs)
    decode_s = min(r["decode_s"] for r in runs)
    steps = tokens - 1
    # mean cached context over the decode steps: prompt + 1 .. prompt + steps
    per_tok = lm.decode_bytes_per_token(model, prompt.shape[1] + (steps + 1) / 2)
    decode_tok_s = steps / decode_s
    roofline_tok_s = bandwidth / per_tok["total"]
    return {
        "config": name, "threads": threads,
        "prefill_tok_s": prompt.shape[1] / prefill_s, "decode_tok_s": decode_tok_s,
        "model_bytes": lm.model_bytes(model), "roofline_fraction": decode_tok_s / roofline_tok_s,
        # extras
        "roofline_tok_s": roofline_tok_s, "bytes_per_token": per_tok["total"],
        "weight_bytes_per_token": per_tok["weights"], "kv_bytes_per_token": per_tok["kv"],
        "dram_read_gbs": bandwidth / 1e9, "tokens": runs[0]["tokens"],
    }


def run(args, progress=True) -> dict:
    """All rows for ``args`` (see ``parse_args``); returns the JSON document."""
    lm.require_transformers()
    configs = args.configs
    bf16_ok, bf16_why = lm.bf16_native()
    skipped = []
    if "bf16" in configs and not bf16_ok and not args.configs_explicit:
        configs = [c for c in configs if c != "bf16"]
        skipped.append({"config": "bf16", "reason": "n/a: " + bf16_why})

    bandwidth = {t: dram_read_bandwidth(t, args.bandwidth_gib) for t in args.threads}
    base = lm.build_model(args.model, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    prompt = torch.randint(0, base.config.vocab_size, (1, args.prompt_len), generator=gen)

    bar = _progress(len(configs) * len(args.threads), progress)
    rows, convert_s = [], {}
    for name in configs:
        bar.set_description(f"{name}: converting")
        t = time.perf_counter()
        model = lm.make_variant(base, name, args.embeddings)
        convert_s[name] = time.perf_counter() - t
        for threads in args.threads:
            bar.set_description(f"{name} @ {threads} thread{'s' * (threads > 1)}")
            row = measure(model, name, threads, prompt, args.tokens, bandwidth[threads], args.repeats)
            row["convert_s"] = convert_s[name]
            if args.profile:
                row["profile"] = lm.profile_decode(model, prompt, args.tokens)
            rows.append(row)
            bar.update(1)
        del model
    bar.close()
    return {"rows": rows, "skipped": skipped, "meta": _meta(args, base, bandwidth)}


def _progress(total, enabled):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience; the study runs without it
        tqdm = None
    if tqdm is None or not enabled:
        class _Null:
            def set_description(self, *a): pass
            def update(self, *a): pass
            def close(self): pass
        return _Null()
    return tqdm(total=total, unit="run", file=sys.stderr)


def _meta(args, base, bandwidth) -> dict:
    import pyquant
    import transformers

    info = pyquant.cpu_info()
    return {
        "model": args.model, "shape": lm.PRESETS[args.model],
        "parameters": sum(p.numel() for p in base.parameters()),
        "prompt_len": args.prompt_len, "new_tokens": args.tokens, "repeats": args.repeats,
        "embeddings": args.embeddings,
        "cpu": info["brand"], "pyquant_isa": info["isa"],
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "dram_read_gbs": {str(t): b / 1e9 for t, b in bandwidth.items()},
    }


# ------------------------------------------------------------------------------------ output
def format_table(doc: dict) -> str:
    head = (f"{'config':<11} {'thr':>3} {'prefill tok/s':>13} {'decode tok/s':>12} {'MB':>8} "
            f"{'MB/token':>8} {'roofline tok/s':>14} {'fraction':>8}")
    lines = [head, "-" * len(head)]
    for r in doc["rows"]:
        lines.append(f"{r['config']:<11} {r['threads']:>3} {r['prefill_tok_s']:>13.1f} "
                     f"{r['decode_tok_s']:>12.2f} {r['model_bytes'] / 1e6:>8.1f} "
                     f"{r['bytes_per_token'] / 1e6:>8.1f} {r['roofline_tok_s']:>14.2f} "
                     f"{r['roofline_fraction']:>8.0%}")
    for s in doc.get("skipped", []):
        lines.append(f"{s['config']:<11} {s['reason']}")
    base = {r["threads"]: r["decode_tok_s"] for r in doc["rows"] if r["config"] == "torch-int8"}
    if base:
        lines.append("decode vs torch-int8: " + ", ".join(
            f"{r['config']}@{r['threads']} {r['decode_tok_s'] / base[r['threads']]:.2f}x"
            for r in doc["rows"] if r["threads"] in base and r["config"] != "torch-int8"))
    prof = [r for r in doc["rows"] if "profile" in r]
    if prof:
        lines += ["", "per decode token (ms): total = linear + rest (linear: Linear layers and MoE experts "
                  "blocks; calls: theirs); pyquant linear = kernels + wrappers",
                  f"{'config':<11} {'thr':>3} {'total':>8} {'linear':>8} {'kernels':>8} {'wrappers':>8} "
                  f"{'rest':>8} {'calls':>6}"]
        for r in prof:
            p = r["profile"]
            f = lambda v: f"{v:>8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
            lines.append(f"{r['config']:<11} {r['threads']:>3} {f(p['total_ms'])} {f(p['linear_ms'])} "
                         f"{f(p['kernels_ms'])} {f(p['wrappers_ms'])} {f(p['rest_ms'])} "
                         f"{p['linear_calls_per_token']:>6.0f}")
    return "\n".join(lines)


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    width = 0.8 / len(threads)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in ((axes[0], "decode_tok_s", "decode tokens/s (dots: DRAM roofline)"),
                           (axes[1], "prefill_tok_s", f"prefill tokens/s ({doc['meta']['prompt_len']}-token prompt)")):
        for j, t in enumerate(threads):
            by = {r["config"]: r for r in rows if r["threads"] == t}
            xs = [i + (j - (len(threads) - 1) / 2) * width for i in range(len(configs))]
            ax.bar(xs, [by[c][key] if c in by else 0 for c in configs], width, label=f"{t} thread(s)")
            if key == "decode_tok_s":
                ax.plot(xs, [by[c]["roofline_tok_s"] if c in by else float("nan") for c in configs],
                        "k.", markersize=8)
        if key == "decode_tok_s":
            ax.set_yscale("log")  # the roofline of the 2-bit configs is far above everything else
        ax.set_xticks(range(len(configs)), configs, rotation=30, ha="right")
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"{doc['meta']['model']} (random weights), {doc['meta']['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ CLI
def _int_list(s: str) -> list[int]:
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {s!r}")
    return vals


def _config_list(s: str) -> list[str]:
    names = [v.strip() for v in s.split(",") if v.strip()]
    bad = [n for n in names if n not in lm.CONFIGS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown config(s) {bad}; choose from {','.join(lm.CONFIGS)}")
    return list(dict.fromkeys(names))  # each config once, in the given order


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pyquant.studies.llm",
                                 description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="configs:\n" + "\n".join(f"  {k:<11} {v}" for k, v in lm.CONFIGS.items()))
    ap.add_argument("--model", choices=sorted(lm.PRESETS), default="tinyllama-1.1b")
    ap.add_argument("--quick", action="store_true",
                    help=f"the small model: --model quick --tokens {QUICK['tokens']} --prompt-len {QUICK['prompt_len']}")
    ap.add_argument("--threads", type=_int_list, default=None,
                    help="comma-separated thread counts (default: 1 and all cores)")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per generation (default 32; quick 16)")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 128; quick 32)")
    ap.add_argument("--configs", type=_config_list, default=None,
                    help="comma-separated subset (default: all; bf16 only where the CPU has it unless named)")
    ap.add_argument("--embeddings", choices=list(lm.EMBEDDINGS), default="float",
                    help="the pyquant rows' embedding table: float (default), int8 or w4g32 "
                         "(pyquant.nn.QuantEmbedding; the MB column shows the memory it saves)")
    ap.add_argument("--repeats", type=int, default=1, help="generations per row, best kept (default 1)")
    ap.add_argument("--seed", type=nonneg_int, default=0)
    ap.add_argument("--bandwidth-gib", type=positive_float, default=1.0, help="size of the bandwidth probe (GiB)")
    ap.add_argument("--profile", action="store_true",
                    help="also split each decode token between pyquant kernels, wrappers and the rest")
    ap.add_argument("--json", metavar="PATH", type=writable_file, help="write the rows as JSON")
    ap.add_argument("--plot", metavar="PATH", type=writable_file, help="write a bar chart (matplotlib)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.model = QUICK["model"]
    quickish = args.model == "quick"
    args.tokens = args.tokens if args.tokens is not None else (QUICK["tokens"] if quickish else 32)
    args.prompt_len = args.prompt_len if args.prompt_len is not None else (QUICK["prompt_len"] if quickish else 128)
    if args.tokens < 2:
        ap.error("--tokens: expected >= 2 (the prefill produces the first token)")
    if args.prompt_len < 1 or args.repeats < 1:
        ap.error("--prompt-len and --repeats: expected >= 1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    args.threads = args.threads or sorted({1, cores})
    args.configs_explicit = args.configs is not None
    args.configs = args.configs or list(lm.CONFIGS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        lm.require_transformers()
        if args.plot and importlib.util.find_spec("matplotlib") is None:  # fail before the runs
            raise ImportError(f"--plot needs matplotlib: {lm.EXTRA_HINT}")
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc = run(args, progress=not args.no_progress)
    m = doc["meta"]
    print(f"{m['model']}: {m['parameters'] / 1e6:.0f} M parameters, prompt {m['prompt_len']}, "
          f"{m['new_tokens']} new tokens; {m['cpu']} ({m['pyquant_isa']}), torch {m['torch']}, "
          f"transformers {m['transformers']}; DRAM read "
          + ", ".join(f"{v:.1f} GB/s @{t}" for t, v in m["dram_read_gbs"].items()))
    print(format_table(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    if args.plot:
        plot(doc, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
