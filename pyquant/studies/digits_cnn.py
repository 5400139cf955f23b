"""A small CNN on sklearn's 8x8 digits, end to end through QuantConv2d / QuantLinear.

    python -m pyquant.studies.digits_cnn

Trains the float CNN (a few seconds, fixed seed), then quantizes it with each config and reports
test accuracy. Configs whose kernel is not in this build run on the pure-PyTorch reference ops.
SPARQ also runs in the paper's setting: first conv and last FC float, static per-tensor
activation scales calibrated on training batches. Requires scikit-learn.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

import pyquant
from pyquant.nn import _backend
from pyquant.nn.schemes import scheme_for


def digits_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8]
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    return (x[:1347], y[:1347]), (x[1347:], y[1347:])


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))


def train_cnn(epochs: int = 12, seed: int = 0):
    torch.manual_seed(seed)
    (xtr, ytr), test = digits_data()
    model = make_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, len(ytr), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[i:i + 64]), ytr[i:i + 64]).backward()
            opt.step()
    model.eval()
    return model, (xtr, ytr), test


def accuracy(model, x, y) -> float:
    with torch.inference_mode():
        return (model(x).argmax(1) == y).float().mean().item()


def quantized(model, config, *, skip_first_last=False, calib=None):
    built = all(_backend.available(op) for op in scheme_for(config).ops)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    keep_float = {names[0], names[-1]} if skip_first_last else set()
    with _backend.use_reference(not built):
        q = pyquant.quantize_(copy.deepcopy(model), config,
                              filter_fn=lambda m, fqn: isinstance(m, (nn.Conv2d, nn.Linear))
                              and fqn not in keep_float)
    if calib is not None:
        pyquant.calibrate(q, calib)
    return q, built


def main(argv=None):
    import argparse

    from pyquant._cli import nonneg_int, positive_int
    from pyquant._extras import require

    ap = argparse.ArgumentParser(prog="python -m pyquant.studies.digits_cnn",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=positive_int, default=12, help="float training epochs")
    ap.add_argument("--seed", type=nonneg_int, default=0)
    args = ap.parse_args(argv)
    require("python -m pyquant.studies.digits_cnn", {"sklearn": "scikit-learn"}, "search")
    torch.set_num_threads(1)
    model, (xtr, _), (xte, yte) = train_cnn(args.epochs, args.seed)
    print(f"digits CNN (3 conv + 2 FC), {len(yte)} test images, ISA {pyquant.cpu_info()['isa']}")
    print("| config | test accuracy | kernel |\n|---|---|---|")
    print(f"| fp32 | {accuracy(model, xte, yte):.4f} | - |")
    calib = [xtr[i:i + 64] for i in range(0, 512, 64)]
    runs = [(c, {}) for c in (pyquant.Int8Config(), pyquant.WeightOnlyConfig(bits=4, group_size=32),
                              pyquant.SparqConfig(), pyquant.SparqConfig(options=3),
                              pyquant.SparqConfig(options=2), pyquant.LUT2Config())]
    runs += [(pyquant.SparqConfig(), {"skip_first_last": True, "calib": calib}),
             (pyquant.SparqConfig(options=2), {"skip_first_last": True, "calib": calib})]
    for config, kw in runs:
        q, built = quantized(model, config, **kw)
        tag = " (first/last float, calibrated)" if kw else ""
        print(f"| {config!r}{tag} | {accuracy(q, xte, yte):.4f} | {'yes' if built else 'reference ops'} |")


if __name__ == "__main__":
    main()
