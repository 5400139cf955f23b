"""Table, JSON and plot of benchmark results."""
from __future__ import annotations

import json
import platform
import time

from .machine import mac_per_cycle
from .runner import Result


def _ref_time(results: list[Result], kernel: str) -> dict:
    out = {}
    for r in results:
        if r.kernel == kernel and r.seconds:
            out[r.problem.name] = r.seconds
    return out


def speedups(results: list[Result], ghz: float | None) -> list[dict]:
    """One row per result; MAC/cycle at the measured clock `ghz` (None: not measured)."""
    int8 = _ref_time(results, "pyquant.int8_gemm")
    # the float layer the problem stands for: nn.Conv2d (or a whole layer's own, e.g. nn.LSTM)
    # where the problem has it, else F.linear
    fp32 = _ref_time(results, "fp32 F.linear")
    for r in results:
        if r.seconds and r.kind == "fp32" and r.kernel != "fp32 F.linear":
            fp32[r.problem.name] = r.seconds
        # a whole-layer problem has no raw int8_gemm row: PyTorch's int8 layer where it has one
        if r.seconds and r.kind == "int8-baseline" and r.kernel.startswith("nn."):
            int8.setdefault(r.problem.name, r.seconds)
    rows = []
    for r in results:
        p = r.problem
        row = {
            "problem": p.name, "m": p.m, "n": p.n, "k": p.k,
            "threads": p.threads, "cold": p.cold, "kernel": r.kernel,
            "kind": r.kind, "isa": r.isa, "seconds": r.seconds, "rounds": r.rounds,
            "gops": r.gops, "mac_per_cycle": mac_per_cycle(p.m * p.n * p.k, r.seconds, ghz),
            "error": r.error, "skipped": r.skipped, "note": r.note, "once": r.once,
            "kernel_ran": r.ran,
            "bytes_per_weight": r.bytes_per_weight,
            "speedup_vs_int8": None, "speedup_vs_fp32": None,
        }
        if r.seconds:
            if p.name in int8:
                row["speedup_vs_int8"] = int8[p.name] / r.seconds
            if p.name in fp32:
                row["speedup_vs_fp32"] = fp32[p.name] / r.seconds
        rows.append(row)
    return rows


def _time_cell(r: dict) -> str:
    if r["skipped"]:
        return f"n/a ({r['skipped']})"
    if r["seconds"] is None:
        return "error: " + (r["error"] or "not timed")[:60]
    t = r["seconds"]
    cell = f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.2f} s"
    return cell + (" (1 round)" if r.get("once") else "")


def format_table(rows: list[dict], with_cycles: bool = True) -> str:
    """Markdown table; `with_cycles=False` (clock not measured) leaves out MAC/cycle."""
    header = ["problem", "kernel", "isa", "time", "GOP/s"] + (["MAC/cyc"] if with_cycles else [])
    header += ["x int8", "x fp32"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        timed = r["seconds"] is not None
        isa = f"{r['isa']}: {r['kernel_ran']}" if r.get("kernel_ran") else r["isa"]
        cells = [r["problem"], r["kernel"], isa, _time_cell(r),
                 f"{r['gops']:.1f}" if timed else ""]
        if with_cycles:
            cells.append(f"{r['mac_per_cycle']:.1f}" if r["mac_per_cycle"] else "")
        cells += [f"{r['speedup_vs_int8']:.2f}x" if r["speedup_vs_int8"] else "",
                  f"{r['speedup_vs_fp32']:.2f}x" if r["speedup_vs_fp32"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(measured: dict | None = None) -> dict:
    """Software and CPU, plus what was measured on it (clock, DRAM bandwidth)."""
    import numpy
    import torch

    import pyquant

    info = pyquant.cpu_info()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": info["brand"], "isa": info["isa"],
        "available": info["available"], "python": platform.python_version(),
        "torch": torch.__version__, "numpy": numpy.__version__, "pyquant": pyquant.__version__,
        **(measured or {}),
    }


def save_json(rows: list[dict], path: str, measured: dict | None = None) -> None:
    with open(path, "w") as f:
        json.dump({"environment": environment(measured), "results": rows}, f, indent=2)


def save_plot(rows: list[dict], path: str, dram_gbps: dict | None = None) -> None:
    """Left: speedup over int8 per problem. Right (cold decode problems, if any): time per call
    against each kernel's own DRAM reference, its weight bytes / the one-stream read rate
    measured here (multi-stream kernels can pass it).
    One colour per kernel in both panels, one legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import grouped_bars

    ok = [r for r in rows if r["speedup_vs_int8"]]
    decode = [r for r in ok if r["m"] == 1 and r["cold"]]
    kernels = list(dict.fromkeys(r["kernel"] for r in ok))
    cmap = plt.get_cmap("tab20").colors
    colors = {kern: cmap[j % len(cmap)] for j, kern in enumerate(kernels)}
    two = bool(decode)
    n_left = len({r["problem"] for r in ok})
    n_right = len({r["problem"] for r in decode})
    left_w = max(8.0, 0.9 * n_left)  # inches: room for each problem's label
    right_w = max(5.0, 1.6 * n_right) if two else 0.0
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(left_w + right_w + 1, 7.5),
                             gridspec_kw={"width_ratios": [left_w, right_w]} if two else None)
    ax = axes[0] if two else axes
    grouped_bars(ax, ok, "speedup_vs_int8", colors)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylabel("speedup over pyquant.int8_gemm (same problem, same run)")
    ax.set_title("pyquant kernels vs int8 and fp32 baselines (higher is better)")
    if two:
        ax2 = axes[1]
        for r in decode:
            r["ms"] = r["seconds"] * 1e3
            bw = (dram_gbps or {}).get(r["threads"])
            weight_bytes = r["n"] * r["k"] * r["bytes_per_weight"]
            r["dram_ref_ms"] = weight_bytes / (bw * 1e9) * 1e3 if bw else None
        grouped_bars(ax2, decode, "ms", colors, floor_key="dram_ref_ms")
        ax2.set_yscale("log")
        ax2.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax2.set_ylabel("ms per call (log scale, lower is better)")
        bws = ", ".join(f"{t}t {g:.1f} GB/s" for t, g in sorted((dram_gbps or {}).items()))
        ax2.set_title("decode GEMV, cold weights: time per call\nblack tick: weight bytes / "
                      f"one-stream DRAM read\n(measured: {bws or 'not measured'})", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in kernels]
    labels = list(kernels)
    if two:
        handles.append(matplotlib.lines.Line2D([], [], color="black", lw=2.5))
        labels.append("weight bytes / one-stream DRAM read (x.sum(); a reference, not a floor)")
    missing = sorted({f"{r['kernel']} ({r['skipped']})" for r in rows if r["skipped"]})
    below = 0.03 if missing else 0.0  # room for the n/a line under the legend
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, below))
    if missing:
        fig.text(0.5, 0.008, "not run: " + "; ".join(missing), fontsize=8, ha="center")
    rows_of_legend = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, below + 0.03 + 0.03 * rows_of_legend, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
