"""Offline data sets and float models for the searches (no downloads: sklearn ships `digits`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Split:
    xtr: torch.Tensor
    ytr: torch.Tensor
    xval: torch.Tensor
    yval: torch.Tensor
    xte: torch.Tensor
    yte: torch.Tensor


def digits(seed: int = 0, as_sequence: bool = False) -> Split:
    """sklearn digits (1797 8x8 images, 10 classes) scaled to [0, 1]; 60/20/20 split.
    as_sequence: read row by row, [N, 8 steps, 8 features]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    if as_sequence:
        x = x.reshape(-1, 8, 8)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    return Split(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


class GRUClassifier(nn.Module):
    """nn.GRU (batch_first) + a Linear head on the last hidden state."""

    def __init__(self, n_in: int = 8, hidden: int = 32, n_out: int = 10):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def make_mlp(sizes=(64, 128, 64, 10)) -> nn.Sequential:
    mods = []
    for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(a, b))
        if j < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def train_float(model: nn.Module, s: Split, epochs: int = 60, lr: float = 3e-3, batch: int = 64,
                seed: int = 0, progress=None) -> float:
    """Adam on cross-entropy; returns validation accuracy."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(s.xtr), generator=g)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(s.xtr[idx]), s.ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if progress is not None:
            progress(ep)
    model.eval()
    with torch.no_grad():
        return (model(s.xval).argmax(1) == s.yval).float().mean().item()


def synthetic_tabular(seed: int = 0, n: int = 12000) -> Split:
    """Generated 16-feature, 5-class data (sklearn make_classification, several clusters per
    class), a stand-in for HGQ's jet-tagging MLP task; features scaled to [-1, 1] on the
    training split; 60/20/20 split."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=16, n_informative=12, n_redundant=2,
                               n_classes=5, n_clusters_per_class=3, class_sep=1.2, flip_y=0.02,
                               random_state=seed)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    a, b = int(0.6 * n), int(0.8 * n)
    x = x / x[:a].abs().amax(0)
    return Split(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])
