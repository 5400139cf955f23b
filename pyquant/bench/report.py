"""Table, JSON and plot of benchmark results."""
from __future__ import annotations

import json
import platform
import time

from .runner import NOMINAL_GHZ, Result

DRAM_GBPS_1CORE = 26.0  # measured single-core streaming read on this CPU (cpu.md)


def _ref_time(results: list[Result], kernel: str) -> dict:
    out = {}
    for r in results:
        if r.kernel == kernel and r.seconds:
            out[r.problem.name] = r.seconds
    return out


def speedups(results: list[Result]) -> list[dict]:
    int8 = _ref_time(results, "pyquant.int8_gemm")
    fp32 = _ref_time(results, "fp32 F.linear")
    rows = []
    for r in results:
        row = {
            "problem": r.problem.name, "m": r.problem.m, "n": r.problem.n, "k": r.problem.k,
            "threads": r.problem.threads, "cold": r.problem.cold, "kernel": r.kernel,
            "kind": r.kind, "isa": r.isa, "seconds": r.seconds, "gops": r.gops,
            "mac_per_cycle": r.mac_per_cycle, "error": r.error, "note": r.note,
            "bytes_per_weight": r.bytes_per_weight,
            "speedup_vs_int8": None, "speedup_vs_fp32": None,
        }
        if r.seconds:
            if r.problem.name in int8:
                row["speedup_vs_int8"] = int8[r.problem.name] / r.seconds
            if r.problem.name in fp32:
                row["speedup_vs_fp32"] = fp32[r.problem.name] / r.seconds
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    header = ["problem", "kernel", "isa", "time", "GOP/s", f"MAC/cyc", "x int8", "x fp32"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r["seconds"] is None:
            cells = [r["problem"], r["kernel"], r["isa"], "n/a", "", "", "", ""]
            if r["error"]:
                cells[3] = "error: " + r["error"][:60]
        else:
            t = r["seconds"]
            time_s = f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.2f} s"
            cells = [
                r["problem"], r["kernel"], r["isa"], time_s, f"{r['gops']:.1f}",
                f"{r['mac_per_cycle']:.1f}",
                f"{r['speedup_vs_int8']:.2f}x" if r["speedup_vs_int8"] else "",
                f"{r['speedup_vs_fp32']:.2f}x" if r["speedup_vs_fp32"] else "",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> dict:
    import numpy
    import torch

    import pyquant

    info = pyquant.cpu_info()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": info["brand"], "isa": info["isa"],
        "available": info["available"], "python": platform.python_version(),
        "torch": torch.__version__, "numpy": numpy.__version__, "pyquant": pyquant.__version__,
        "mac_per_cycle_assumes_ghz": NOMINAL_GHZ,
    }


def save_json(rows: list[dict], path: str) -> None:
    with open(path, "w") as f:
        json.dump({"environment": environment(), "results": rows}, f, indent=2)


def save_plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["speedup_vs_int8"]]
    problems = list(dict.fromkeys(r["problem"] for r in ok))
    kernels = list(dict.fromkeys(r["kernel"] for r in ok))
    decode = [r for r in ok if r["m"] == 1 and r["cold"]]
    fig, axes = plt.subplots(1, 2 if decode else 1, figsize=(15 if decode else 10, 6),
                             gridspec_kw={"width_ratios": [3, 2]} if decode else None)
    ax = axes[0] if decode else axes
    width = 0.8 / max(1, len(kernels))
    colors = plt.get_cmap("tab20").colors
    for j, kern in enumerate(kernels):
        xs, ys = [], []
        for i, prob in enumerate(problems):
            for r in ok:
                if r["problem"] == prob and r["kernel"] == kern:
                    xs.append(i + j * width)
                    ys.append(r["speedup_vs_int8"])
        ax.bar(xs, ys, width, label=kern, color=colors[j % len(colors)])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(problems))])
    ax.set_xticklabels(problems, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("speedup over pyquant.int8_gemm (same problem, same run)")
    ax.set_title("pyquant kernels vs int8 and fp32 baselines")
    ax.legend(fontsize=7)
    if decode:
        ax2 = axes[1]
        for r in decode:
            # weight bytes streamed per call: what bounds a decode GEMV
            bytes_per_weight = r["bytes_per_weight"]
            gbps = r["n"] * r["k"] * bytes_per_weight / r["seconds"] / 1e9
            ax2.bar(f"{r['kernel']}\n{r['n']}x{r['k']} {r['threads']}t", gbps)
        ax2.axhline(DRAM_GBPS_1CORE, color="red", ls="--", label="DRAM read roofline, 1 core (26 GB/s)")
        ax2.set_ylabel("weight bytes streamed, GB/s")
        ax2.set_title("decode GEMV (cold weights): bandwidth roofline")
        ax2.tick_params(axis="x", labelsize=6, rotation=60)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
