"""PyTorch oracles for GPTQ's and SparseGPT's column sweeps (csrc/quantize/gptq_sweep.h), one
column of the whole weight at a time, written from the algorithm text: float32 operations in
the documented order (PyTorch runs no fused multiply-add on these ops)."""
from __future__ import annotations

import torch


def lane_sum(e):
    """float32 sum of e * e over the last axis as the native searches add it: 8 lanes (column
    mod 8), each summed in column order, then ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))."""
    e2 = torch.nn.functional.pad(e * e, (0, -e.shape[-1] % 8))
    blocks = e2.view(*e2.shape[:-1], -1, 8)
    acc = torch.zeros(blocks.shape[:-2] + (8,))
    for b in range(blocks.shape[-2]):
        acc = acc + blocks[..., b, :]
    l = acc.unbind(-1)
    return (((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))).unsqueeze(-1)


def ratios_for(bits):
    return torch.linspace(1.0, 0.5 if bits == 4 else 0.3, 11).tolist()


def group_scale(wg, ratios, qmin, qmax):
    """[N, 1]: per row of the group wg [N, len], the first candidate with the smallest error."""
    amax = wg.abs().amax(1, keepdim=True).clamp(min=1e-12)
    best_s = best_err = None
    for r in ratios:
        s = (amax * r / max(qmax, 1)).to(torch.bfloat16).float()
        err = lane_sum(torch.round(wg * (1.0 / s)).clamp(qmin, qmax) * s - wg)
        if best_s is None:
            best_s, best_err = s, err
            continue
        better = err < best_err
        best_s, best_err = torch.where(better, s, best_s), torch.where(better, err, best_err)
    return best_s


def gptq_block_ref(w, h, gs, ratios, qmin, qmax):
    """(codes int8 [N, b], scales [N, groups], err [N, b]) for a block w [N, b], factor block h."""
    x = w.clone()
    n, b = x.shape
    codes = torch.empty(n, b, dtype=torch.int8)
    scales = torch.empty(n, -(-b // gs))
    err = torch.empty(n, b)
    for i in range(b):
        if i % gs == 0:
            s = group_scale(x[:, i:i + gs], ratios, qmin, qmax)[:, 0]
            scales[:, i // gs] = s
        col = x[:, i].clone()
        y = torch.round(col * (1.0 / s)).clamp(qmin, qmax)
        codes[:, i] = y.to(torch.int8)
        e = (col - y * s) / h[i, i]
        x[:, i + 1:] -= e[:, None] * h[i, i + 1:][None, :]
        err[:, i] = e
    return codes, scales, err


def sparsegpt24_block_ref(w, h):
    """(values [N, b], err [N, b]): in each group of 4 the two most salient kept (ties: the lower
    column), the pruned ones' errors spread over the later columns."""
    x = w.clone()
    n, b = x.shape
    values = torch.empty(n, b)
    err = torch.empty(n, b)
    d = torch.diag(h)
    for i in range(b):
        if i % 4 == 0:
            j = min(i + 4, b)
            sal = (x[:, i:j] * x[:, i:j]) / (d[i:j] * d[i:j])
            other, this = sal[:, None, :], sal[:, :, None]  # [N, a, o]: does column o beat a?
            cols = torch.arange(j - i)
            lower = (cols[None, :] < cols[:, None])[None]
            beats = (other > this) | ((other == this) & lower)
            pruned = (beats.sum(2) >= 2) & (j - i > 2)  # [N, L]
        col = x[:, i].clone()
        kept = torch.where(pruned[:, i % 4], torch.zeros(()), col)
        e = (col - kept) / h[i, i]
        x[:, i + 1:] -= e[:, None] * h[i, i + 1:][None, :]
        values[:, i], err[:, i] = kept, e
    return values, err
