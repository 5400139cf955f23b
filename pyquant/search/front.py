"""front.json (schema below) and front.png.

{"task": str, "method": str, "budget": str, "seed": int, ...,
 "points": [{"config": {...}, "size_bits": int, "accuracy": float, "deployed_accuracy": float,
             "search_accuracy": float, "uniform": 2 | 4 | 8 | null}, ...]}
accuracy is measured on the held-out test split with the search's own evaluation (integer
emulation / fake quantization); deployed_accuracy runs the frozen integer model on pyquant's GEMM
kernels; search_accuracy is on the split the search selected on (validation, or train+val for
the GRU's post-training quantization). Uniform points are the same model with every width set to
2, 4 or 8.
"""
from __future__ import annotations

import json
import os

POINT_KEYS = {"config": dict, "size_bits": int, "accuracy": float, "uniform": (int, type(None))}


def validate_front(doc: dict) -> None:
    """ValueError unless doc follows the schema above."""
    if not isinstance(doc, dict) or not isinstance(doc.get("points"), list):
        raise ValueError("front: expected {'points': [...]}")
    for j, p in enumerate(doc["points"]):
        for k, t in POINT_KEYS.items():
            if k not in p or not isinstance(p[k], t) or isinstance(p[k], bool):
                raise ValueError(f"points[{j}].{k}: missing or not {t}")
        if p["uniform"] not in (None, 2, 4, 8):
            raise ValueError(f"points[{j}].uniform: expected 2, 4, 8 or null")
        if "deployed_accuracy" in p and not isinstance(p["deployed_accuracy"], float):
            raise ValueError(f"points[{j}].deployed_accuracy: not a float")
    if {p["uniform"] for p in doc["points"]} < {2, 4, 8}:
        raise ValueError("front: the uniform 2/4/8 reference points are missing")


def write_front(doc: dict, out_dir: str) -> tuple[str, str]:
    validate_front(doc)
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, "front.json")
    with open(jpath, "w") as fh:
        json.dump(doc, fh, indent=1)
    ppath = os.path.join(out_dir, "front.png")
    plot_front(doc, ppath)
    return jpath, ppath


def plot_front(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = doc["points"]
    ref8 = next(p["size_bits"] for p in pts if p["uniform"] == 8)
    mixed = sorted((p for p in pts if p["uniform"] is None), key=lambda p: p["size_bits"])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    if mixed:
        xs = [p["size_bits"] / ref8 for p in mixed]
        ax.plot(xs, [100 * p["accuracy"] for p in mixed], "-", color="tab:blue", alpha=.3)
        ax.plot(xs, [100 * p["accuracy"] for p in mixed], "o", color="tab:blue",
                label=f"{doc.get('method', '')} front (test, searched)")
        dep = [(x, p["deployed_accuracy"]) for x, p in zip(xs, mixed) if "deployed_accuracy" in p]
        if dep:
            ax.plot([d[0] for d in dep], [100 * d[1] for d in dep], "x", color="tab:green",
                    label="deployed on pyquant kernels")
    for p in pts:
        if p["uniform"] is not None:
            ax.plot(p["size_bits"] / ref8, 100 * p["accuracy"], "s", color="tab:red", ms=8)
            ax.annotate(f"uniform {p['uniform']}", (p["size_bits"] / ref8, 100 * p["accuracy"]),
                        textcoords="offset points", xytext=(6, -12), fontsize=8, color="tab:red")
    acc8 = next(100 * p["accuracy"] for p in pts if p["uniform"] == 8)
    ax.axhline(acc8 - 1, color="gray", ls=":", lw=1, label="uniform-8 accuracy - 1 point")
    ax.set_xlabel("model size / uniform-8 size")
    ax.set_ylabel("test accuracy (%)")
    lo = min(100 * p["accuracy"] for p in pts)
    ax.set_ylim(max(lo - 2, min(acc8 - 15, lo - 2)), 100.5)
    ax.set_title(f"{doc.get('task', '')}: {doc.get('method', '')} ({doc.get('budget', '')})")
    ax.grid(alpha=.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
