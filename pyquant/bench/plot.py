"""Grouped bar chart shared by both panels of `bench --plot`: one group per problem, one bar
per kernel in the kernel's colour, optional per-bar floor ticks."""
from __future__ import annotations


def grouped_bars(ax, rows: list[dict], key: str, colors: dict, floor_key: str | None = None):
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    kernels = [k for k in colors if any(r["kernel"] == k for r in rows)]
    width = 0.8 / max(1, len(kernels))
    for i, prob in enumerate(problems):
        here = {r["kernel"] for r in rows if r["problem"] == prob}
        present = [k for k in kernels if k in here]
        for j, kern in enumerate(present):
            r = next(r for r in rows if r["problem"] == prob and r["kernel"] == kern)
            x = i - 0.4 + (j + 0.5) * width
            ax.bar(x, r[key], width, color=colors[kern])
            if floor_key and r.get(floor_key):
                ax.hlines(r[floor_key], x - 0.35 * width, x + 0.35 * width, color="black", lw=2.5)
    ax.set_xticks(range(len(problems)))
    # "256x4096x4096 hot 1t" over "LLM prefill": half as wide as one line
    labels = [" ".join(p.split(" ")[:3]) + "\n" + " ".join(p.split(" ")[3:]) for p in problems]
    ax.set_xticklabels(labels, rotation=30 if len(problems) > 6 else 0,
                       ha="right" if len(problems) > 6 else "center", fontsize=7.5)
    ax.set_xlim(-0.6, len(problems) - 0.4)
