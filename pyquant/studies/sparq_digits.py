"""SPARQ accuracy study on sklearn's digits (ships offline): one command,

    python -m pyquant.studies.sparq_digits [--seeds 3] [--epochs 30] [--out docs/notes/sparq_study.md]

Trains a small ReLU CNN in torch (seeded, CPU, well under 2 minutes), then post-training
quantizes it as in the SPARQ paper (algorithms.md section 5): weights 8-bit symmetric per output
channel; activations unsigned per tensor with the scale from the mean over calibration images of
each image's max; the first conv and the last FC stay float. The quantized layers (conv2, conv3,
fc1) run through pyquant's kernels: im2col with K ordered channel-fastest (ky, kx, c), so a
vSPARQ pair is two adjacent input channels at one tap, then int8_gemm / sparq_gemm.

Methods: fp32, A8W8, naive 4-bit activations (own 4-bit scale: mean max / 15), and SPARQ
{5, 3, 2}opt x {round, trunc} x {vSPARQ on, off} on the 8-bit codes (plus 3- and 2-bit SPARQ
against naive 3/2-bit). 2:4 rows (the paper's sparse-tensor-core mode): each layer's float
weight pruned 2:4 by magnitude along its K (post-training, no fine-tuning), int8 per channel,
as pruned A8W8 (int8_gemm) and pruned + SPARQ (sparq_gemm(..., sparse24=True): each output
channel pairs the activations at its own two kept weights); and the same with SparseGPT's 2:4
pruning (pyquant.nn.gptq.sparsegpt_24) from each layer's im2col rows of the calibration images. Reported: test accuracy (clean, and a harder noisy test set where
differences show), prediction agreement with fp32 and logit SQNR vs fp32, averaged over seeds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pyquant

N_CALIB = 256


# ---- model --------------------------------------------------------------------------------

def build_model(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),          # conv1: float
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),         # conv2: quantized
        nn.MaxPool2d(2),                                     # 8x8 -> 4x4
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),         # conv3: quantized
        nn.MaxPool2d(2),                                     # 4x4 -> 2x2
        nn.Flatten(),
        nn.Linear(256, 64), nn.ReLU(),                      # fc1: quantized
        nn.Linear(64, 10),                                   # fc2: float
    )


def load_digits(seed):
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # [1797, 1, 8, 8] in [0, 1]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_train = 1200
    tr, te = order[:n_train], order[n_train:]
    return x[tr], y[tr], x[te], y[te]


def train(torch, x, y, seed, epochs):
    torch.manual_seed(seed)
    model = build_model(torch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.eval()


# ---- quantized execution through pyquant -------------------------------------------------

def im2col_nhwc(codes, kh, kw, pad):
    """[B, C, H, W] (codes or floats) -> [B*H*W, kh*kw*C], K ordered (ky, kx, c): channels fastest."""
    b, c, h, w = codes.shape
    x = np.pad(codes.transpose(0, 2, 3, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # [B,H,W,C,kh,kw]
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(b * h * w, kh * kw * c)


class QLayer:
    """A conv (3x3, pad 1) or linear layer with int8 per-channel weights and uint8 activations."""

    def __init__(self, module, in_scale8, hessian):
        import torch

        from pyquant.nn.gptq import sparsegpt_24

        wt = module.weight.detach().numpy().astype(np.float64)
        self.is_conv = isinstance(module, torch.nn.Conv2d)
        if self.is_conv:
            wt = wt.transpose(0, 2, 3, 1)  # [O, kh, kw, C]: the im2col order
        w2 = wt.reshape(wt.shape[0], -1)
        self.w_scale = np.maximum(np.abs(w2).max(axis=1), 1e-12) / 127.0
        self.w = np.clip(np.round(w2 / self.w_scale[:, None]), -127, 127).astype(np.int8)
        # 2:4 along K (im2col order: 4 adjacent channels at a tap), by magnitude ("a8_24",
        # "sparq24") and by SparseGPT ("a8_24s", "sparq24s"): int8 per channel, and its scales
        self.w24 = {}
        for kind, w24 in (("", pyquant.prune_24(w2)),
                          ("s", sparsegpt_24(torch.from_numpy(w2), hessian).double().numpy())):
            scale = np.maximum(np.abs(w24).max(axis=1), 1e-12) / 127.0
            self.w24[kind] = np.clip(np.round(w24 / scale[:, None]), -127, 127).astype(np.int8), scale
        self.bias = module.bias.detach().numpy().astype(np.float64)
        self.mean_max = in_scale8  # mean over calibration images of each image's max input
        self.packed = {}
        self.pair_stats = None  # (zero fraction, fraction of nonzero with a zero partner)

    def codes(self, x, levels):
        scale = self.mean_max / levels
        return np.clip(np.round(x / scale), 0, levels).astype(np.uint8), scale

    def __call__(self, x, method):
        kind = method[0]
        pruned = kind in ("a8_24", "sparq24", "a8_24s", "sparq24s")  # 2:4 ("s": SparseGPT's)
        levels = 255 if kind in ("a8", "sparq") or pruned else (1 << method[1]) - 1
        q, a_scale = self.codes(x, levels)
        b = x.shape[0]
        if self.is_conv:
            _, _, h, w_ = x.shape
            a = im2col_nhwc(q, 3, 3, 1)
        else:
            a = q.reshape(b, -1)
        if kind == "a8" and self.pair_stats is None:
            k = a.shape[1] - a.shape[1] % 2
            x0, x1 = a[:, 0:k:2], a[:, 1:k:2]
            nz = np.count_nonzero(a[:, :k])
            lone = np.count_nonzero((x0 != 0) ^ (x1 != 0))
            self.pair_stats = (1 - nz / max(a[:, :k].size, 1), lone / max(nz, 1))
        w24, w_scale = (None, self.w_scale)
        if pruned:
            w24, w_scale = self.w24["s" if kind.endswith("24s") else ""]
        if kind.startswith("sparq24"):
            _, bits, options, rounding, pairs = method
            if method not in self.packed:
                self.packed[method] = pyquant.prepack(w24, "sparq24_gemm", bits=bits,
                                                      options=options, rounding=rounding, pairs=pairs)
            acc = pyquant.sparq_gemm(a, self.packed[method], bits=bits, options=options,
                                     rounding=rounding, pairs=pairs, sparse24=True)
        elif kind.startswith("a8_24"):
            if kind not in self.packed:
                self.packed[kind] = pyquant.prepack(w24, "int8_gemm")
            acc = pyquant.int8_gemm(a, self.packed[kind])
        elif kind == "sparq":
            _, bits, options, rounding, pairs = method
            key = method
            if key not in self.packed:
                self.packed[key] = pyquant.prepack(self.w, "sparq_gemm", bits=bits, options=options,
                                                   rounding=rounding, pairs=pairs)
            acc = pyquant.sparq_gemm(a, self.packed[key], bits=bits, options=options,
                                     rounding=rounding, pairs=pairs)
        else:
            if "int8" not in self.packed:
                self.packed["int8"] = pyquant.prepack(self.w, "int8_gemm")
            acc = pyquant.int8_gemm(a, self.packed["int8"])
        out = acc.astype(np.float64) * (a_scale * w_scale)[None, :] + self.bias[None, :]
        if self.is_conv:
            out = out.reshape(b, h, w_, -1).transpose(0, 3, 1, 2)
        return out.astype(np.float32)


def quantized_forward(torch, model, layers, x, method):
    m = list(model)
    with torch.no_grad():
        h = m[1](m[0](torch.from_numpy(x))).numpy()          # conv1 float + ReLU
        if method is None:
            return model(torch.from_numpy(x)).numpy()
        h = np.maximum(layers[0](h, method), 0)                # conv2
        h = m[4](torch.from_numpy(h)).numpy()                  # pool
        h = np.maximum(layers[1](h, method), 0)                # conv3
        h = m[7](torch.from_numpy(h)).numpy().reshape(len(x), -1)  # pool
        h = np.maximum(layers[2](h, method), 0)                # fc1
        return m[11](torch.from_numpy(h)).numpy()             # fc2 float


def calibrate(torch, model, x_cal):
    """Mean over calibration images of each image's max, at the input of conv2, conv3, fc1."""
    m = list(model)
    stats = []
    with torch.no_grad():
        h = torch.from_numpy(x_cal)
        for i, layer in enumerate(m):
            if i in (2, 5, 9):
                stats.append(float(h.reshape(len(h), -1).max(dim=1).values.mean()))
            h = layer(h)
    return stats


def layer_hessians(torch, model, x_cal):
    """H = A^T A of each quantized layer's float input rows over the calibration images (im2col
    rows in the (ky, kx, c) K order for the convs), for SparseGPT."""
    m = list(model)
    seen = {}
    hooks = [m[i].register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0]))
             for i in (2, 5, 9)]
    try:
        with torch.no_grad():
            model(torch.from_numpy(x_cal))
    finally:
        for h in hooks:
            h.remove()
    out = []
    for i in (2, 5, 9):
        x = seen[i].numpy().astype(np.float64)
        a = im2col_nhwc(x, 3, 3, 1) if i != 9 else x.reshape(len(x), -1)
        out.append(torch.from_numpy(a.T @ a))
    return out


def methods():
    out = [("fp32", None), ("A8W8", ("a8",)), ("naive A4W8", ("naive", 4))]
    for options in (5, 3, 2):
        for rounding in ("round", "trunc"):
            for pairs in (True, False):
                name = f"SPARQ 4b {options}opt {rounding} {'vSPARQ' if pairs else 'bSPARQ only'}"
                out.append((name, ("sparq", 4, options, rounding, pairs)))
    out.append(("naive A3W8", ("naive", 3)))
    out.append(("SPARQ 3b 6opt round vSPARQ", ("sparq", 3, 6, "round", True)))
    out.append(("SPARQ 3b 6opt round bSPARQ only", ("sparq", 3, 6, "round", False)))
    out.append(("naive A2W8", ("naive", 2)))
    out.append(("SPARQ 2b 7opt round vSPARQ", ("sparq", 2, 7, "round", True)))
    out.append(("SPARQ 2b 7opt round bSPARQ only", ("sparq", 2, 7, "round", False)))
    out.append(("2:4 pruned A8W8", ("a8_24",)))
    out.append(("2:4 pruned + SPARQ 4b 5opt round vSPARQ", ("sparq24", 4, 5, "round", True)))
    out.append(("2:4 pruned + SPARQ 4b 3opt round vSPARQ", ("sparq24", 4, 3, "round", True)))
    out.append(("2:4 pruned + SPARQ 4b 5opt round bSPARQ only", ("sparq24", 4, 5, "round", False)))
    out.append(("2:4 SparseGPT A8W8", ("a8_24s",)))
    out.append(("2:4 SparseGPT + SPARQ 4b 5opt round vSPARQ", ("sparq24s", 4, 5, "round", True)))
    return out


def sqnr_db(ref, x):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - x) ** 2.0), 1e-30))


def run(seeds, epochs, noise, noisy_copies=5):
    import torch

    torch.set_num_threads(1)
    results = {name: {"acc": [], "acc_noisy": [], "agree": [], "sqnr": []} for name, _ in methods()}
    fp_acc, pair_stats = [], []
    for seed in range(seeds):
        xtr, ytr, xte, yte = load_digits(seed)
        model = train(torch, xtr, ytr, seed, epochs)
        stats = calibrate(torch, model, xtr[:N_CALIB])
        m = list(model)
        hess = layer_hessians(torch, model, xtr[:N_CALIB])
        layers = [QLayer(m[i], s, h) for i, s, h in zip((2, 5, 9), stats, hess)]
        rng = np.random.default_rng(1000 + seed)
        xn = np.clip(np.repeat(xte, noisy_copies, 0) + rng.normal(0, noise, (len(xte) * noisy_copies,) + xte.shape[1:]), 0, 1).astype(np.float32)
        yn = np.repeat(yte, noisy_copies)
        ref = quantized_forward(torch, model, layers, xte, None)
        ref_n = quantized_forward(torch, model, layers, xn, None)
        for name, method in methods():
            out = quantized_forward(torch, model, layers, xte, method)
            out_n = quantized_forward(torch, model, layers, xn, method)
            r = results[name]
            r["acc"].append(float((out.argmax(1) == yte).mean()))
            r["acc_noisy"].append(float((out_n.argmax(1) == yn).mean()))
            r["agree"].append(float((out_n.argmax(1) == ref_n.argmax(1)).mean()))
            r["sqnr"].append(sqnr_db(np.concatenate([ref, ref_n]), np.concatenate([out, out_n])))
        fp_acc.append(results["fp32"]["acc"][-1])
        pair_stats.append([layer.pair_stats for layer in layers])
    return results, np.mean(np.array(pair_stats), axis=0)


def pair_table(stats):
    lines = ["| layer (input) | K | zero activations % | nonzero activations with a zero partner % |",
             "|---|---|---|---|"]
    for name, k, (zero, lone) in zip(("conv2", "conv3", "fc1"), (288, 288, 256), stats):
        lines.append(f"| {name} | {k} | {100 * zero:.1f} | {100 * lone:.1f} |")
    return "\n".join(lines)


def table(results, seeds, epochs, noise):
    lines = [
        f"digits, {seeds} seed(s), {epochs} epochs; test = 597 held-out images; noisy = 5 copies "
        f"of the test set + N(0, {noise}) pixel noise. Mean over seeds (min..max for accuracy).",
        "",
        "| method | test acc % | noisy test acc % | agreement with fp32 (noisy) % | logit SQNR vs fp32 dB |",
        "|---|---|---|---|---|",
    ]
    for name, _ in methods():
        r = results[name]
        acc, accn = 100 * np.array(r["acc"]), 100 * np.array(r["acc_noisy"])
        sq = "-" if name == "fp32" else f"{np.mean(r['sqnr']):.1f}"
        lines.append(
            f"| {name} | {acc.mean():.2f} ({acc.min():.1f}..{acc.max():.1f}) | "
            f"{accn.mean():.2f} ({accn.min():.1f}..{accn.max():.1f}) | "
            f"{100 * np.mean(r['agree']):.2f} | {sq} |")
    return "\n".join(lines)


def main(argv=None):
    from pyquant._cli import nonneg_float, positive_int, writable_file

    ap = argparse.ArgumentParser(prog="python -m pyquant.studies.sparq_digits",
                                 description=__doc__.split("\n\n")[0].replace(": one command,", "."))
    ap.add_argument("--seeds", type=positive_int, default=3)
    ap.add_argument("--epochs", type=positive_int, default=30)
    ap.add_argument("--noise", type=nonneg_float, default=0.35,
                    help="pixel noise std of the hard test set")
    ap.add_argument("--out", default=None, type=writable_file,
                    help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    from pyquant._extras import require

    require("python -m pyquant.studies.sparq_digits", {"sklearn": "scikit-learn"}, "search")
    pyquant.set_num_threads(1)
    t0 = time.perf_counter()
    results, stats = run(args.seeds, args.epochs, args.noise)
    text = table(results, args.seeds, args.epochs, args.noise)
    text += "\n\nWhere vSPARQ applies (8-bit codes of the clean test set, mean over seeds):\n\n"
    text += pair_table(stats)
    text += f"\n\n(pyquant path: {pyquant.cpu_info()['isa']}; {time.perf_counter() - t0:.0f} s)\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
