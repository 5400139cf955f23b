"""GPTQ (Frantar et al., arXiv 2210.17323) for WeightOnlyConfig: data-aware rounding of the
group-wise low-bit weights, same packed format and kernels as plain round-to-nearest. For
SparqConfig(sparse24=True) the same calibration drives SparseGPT's 2:4 pruning (Frantar and
Alistarh, arXiv 2301.00774) in place of magnitude pruning: same format and kernels too.

    pyquant.nn.gptq_(model, pyquant.WeightOnlyConfig(bits=4, group_size=64), batches)
    pyquant.nn.gptq_(model, pyquant.SparqConfig(sparse24=True), batches)

Each matching nn.Linear (and transformers' Conv1D, and nn.Conv2d / nn.Conv1d over its im2col
rows in QuantConv2d's K order; a grouped conv per group, over its channel slice, where those
Hessians fit in 1 GiB, else round-to-nearest; nn.ConvTranspose2d / 1d over its input pixels) records ``H = sum x^T x`` over its inputs on the calibration
batches (block after block of a transformer, on the blocks before as quantized: gptq_blocks.py;
or all layers at once on the float model, sequential=False); then its columns are quantized left to right, each
column's rounding error spread over the not-yet-quantized columns through the inverse Hessian's
Cholesky factor. Each group's scale is chosen (quantize_'s MSE clipping search) on the weights as
updated when the sweep reaches the group. The sweep runs natively on blocks of 128 columns
(csrc/quantize/gptq_sweep.h), each block's errors reaching the later columns in one GEMM; the
Hessians (float32) are shared by the layers that read the same input.
"""
from __future__ import annotations

import itertools
import warnings
from contextlib import contextmanager
from typing import Callable, Iterable

import torch
from torch import nn

from .api import (_convert, _default_filter_for, _warn_left_float, check_filter, convertible,
                  is_conv1d, is_conv_transpose)
from .fold_bn import check_fold_option, fold_batchnorm_
from .gptq_blocks import BlockStages, no_kv_cache, repeated_blocks
from .configs import SparqConfig, WeightOnlyConfig
from .attention import QuantMultiheadAttention, is_mha
from .experts import QuantExperts, is_experts
from .recurrent import QuantRNN, is_rnn
from .conv_gain import group_k
from .conv_transpose import QuantConvTranspose1d, QuantConvTranspose2d
from .embedding import TABLE_TYPES, quantized_table
from .grouped_conv import QuantGroupedConv1d, QuantGroupedConv2d
from .modules import QuantConv1d, QuantConv2d, QuantLinear, conv1d_geometry, im2col
from .schemes import clip_ratios
from .. import _C
from .._threads import get_num_threads


# Columns per native sweep (_C.gptq_block, _C.sparsegpt24_block): each block's rounding errors
# reach the later columns in one GEMM (GPTQ's "lazy batch" updates).
BLOCK = 128

# The last factorization, for the next layer of the same Hessian (q, k and v; gate and up):
# (hessian, damp, dead columns, factor); kept only while gptq_ converts (its Hessians are its
# own, never changed), so a direct call with an edited Hessian is factorized again.
_last_factor: tuple | None = None
_keep_factor = False


def _factor(hessian: torch.Tensor, damp: float):
    """(the columns no input reached, R): R upper triangular with R R^T = the damped H, float32
    (H's upper triangle is all that is read: _Hessians sums only that one).
    With P the reversal of the columns, P H P = L L^T (one Cholesky factorization) gives R = P L P;
    U = R^-1 is the upper Cholesky factor of H^-1 (H^-1 = U^T U) that GPTQ's updates use, never
    formed whole (_sweep)."""
    global _last_factor
    if _last_factor is not None and _last_factor[0] is hessian and _last_factor[1] == damp:
        return _last_factor[2], _last_factor[3]
    dead = torch.diag(hessian) == 0
    h = hessian.detach().float().flip(0, 1)  # (a copy: the damping below stays in it)
    h.diagonal()[dead.flip(0)] = 1.0
    h.diagonal().add_(damp * float(h.diagonal().mean()))
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0 or not bool(torch.isfinite(lower.diagonal()).all()):  # (a NaN reaches it)
        if not bool(torch.isfinite(hessian).all()):
            raise ValueError("hessian: expected finite values, found NaN or infinity")
        raise ValueError(f"damp: H + damp * mean(diag H) * I is not positive definite with damp="
                         f"{damp} (a degenerate Hessian: few or repeated calibration inputs); "
                         "use a larger damp")
    del h
    factor = lower.flip(0, 1)
    if _keep_factor:
        _last_factor = (hessian, damp, dead, factor)
    return dead, factor


def _prepared(w: torch.Tensor, hessian: torch.Tensor, damp: float):
    """(w as float32 with the columns no input reached zeroed, R): what both sweeps start from."""
    if hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"hessian: expected [{w.shape[1]}, {w.shape[1]}] (the layer's K), "
                         f"got {list(hessian.shape)}")
    dead, factor = _factor(hessian, damp)
    w = w.detach().float().clone()
    w[:, dead] = 0.0
    return w, factor


def _sweep(w, r, block, run_block):
    """Blocks of columns left to right; ``run_block(i1, updated block, U_bb) -> the block's final
    values`` (codes x scales, or the pruned weights), U_bb = R_bb^-1 the block's part of U.

    A block's weights get the errors of every column before it at once: GPTQ's sweep leaves
    W - Q = E U (E the columns' scaled errors), so the block b as the sweep reaches it is
    W_b - E_<b U_<b,b = W_b + (W - Q)_<b R_<b,b U_bb (from R U = I), one GEMM per block that needs
    only R and the block's U_bb: no inverse of all of R (was a K x K triangular solve per
    Hessian, 22 s of tinyllama-1.1b's GPTQ). ``w`` is overwritten block by block by W - Q."""
    k = w.shape[1]
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        u = torch.linalg.solve_triangular(r[i1:i2, i1:i2], torch.eye(i2 - i1, dtype=r.dtype), upper=True)
        wb = torch.addmm(w[:, i1:i2], w[:, :i1], r[:i1, i1:i2] @ u) if i1 else w[:, :i2]
        values = run_block(i1, wb.contiguous().numpy(), u.contiguous().numpy())
        w[:, i1:i2] -= values


def gptq_weight(w: torch.Tensor, hessian: torch.Tensor, bits: int, gs: int, damp: float = 0.2):
    """(codes int8 [N, K], bf16-exact scales float32 [N, G]) for w [N, K] given H = X^T X [K, K]:
    GPTQ's sweep in blocks of whole groups, each group's scale chosen (quantize_'s MSE clipping
    search, the same candidates) on the weights as updated when the sweep reaches it. With H a
    multiple of the identity it is quantize_'s round-to-nearest, bit for bit."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    w, factor = _prepared(w, hessian, damp)
    n, k = w.shape
    ratios = clip_ratios(bits)
    codes = torch.empty(n, k, dtype=torch.int8)
    scales = torch.empty(n, -(-k // gs))
    threads = get_num_threads()

    def run_block(i1, wb, hb):
        c, s, _ = _C.gptq_block(wb, hb, gs, ratios, qmin, qmax, threads)
        c, s = torch.from_numpy(c), torch.from_numpy(s)
        codes[:, i1:i1 + c.shape[1]] = c
        scales[:, i1 // gs:i1 // gs + s.shape[1]] = s
        return c.float() * s.repeat_interleave(gs, 1)[:, :c.shape[1]]  # (exact products)

    _sweep(w, factor, gs * max(1, BLOCK // gs), run_block)
    if not bool(torch.isfinite(scales).all()):
        raise ValueError("weight: GPTQ's updated weights overflow the bfloat16 group scales")
    return codes, scales


def sparsegpt_24(w: torch.Tensor, hessian: torch.Tensor, damp: float = 0.2, block: int = BLOCK):
    """SparseGPT's 2:4 pruning of w [N, K] given H = X^T X [K, K]: float32 [N, K] with at most two
    non-zeros in every aligned group of 4 along K (a partial last group keeps at most two).

    Columns are visited left to right; at each group's first column the two weights with the
    smallest OBS saliency w^2 / [H^-1]_jj^2 (of the weights as updated so far) are chosen for
    pruning, and each column's pruning error is spread over the columns not yet visited through
    the Cholesky factor of H^-1, as GPTQ spreads rounding errors (_C.sparsegpt24_block, blocks of
    ``block`` columns). With H a multiple of the identity this is magnitude pruning (up to the
    order of exact ties). ``damp`` as in gptq_ (0.2: 0.826 mean cosine on all-MiniLM-L6-v2 with
    32 calibration sentences, against 0.82-0.83 for 0.1-0.5 and 0.660 for magnitude pruning)."""
    if block <= 0 or block % 4:
        raise ValueError(f"block: expected a positive multiple of 4, got {block}")
    w, factor = _prepared(w, hessian, damp)
    threads = get_num_threads()

    out = torch.empty_like(w)

    def run_block(i1, wb, hb):  # (block: a multiple of 4, so groups never straddle blocks)
        values, _ = _C.sparsegpt24_block(wb, hb, threads)
        out[:, i1:i1 + values.shape[1]] = torch.from_numpy(values)
        return out[:, i1:i1 + values.shape[1]]

    _sweep(w, factor, block, run_block)
    return out


class _Hessians:
    """H = sum x^T x (float32) per layer key over its calibration inputs. Keys fed the same
    tensors (q, k and v; gate and up; a self-attention's query, key and value) share one H:
    computed once, factorized once, held once (tinyllama-1.1b: 3.9 GB of Hessians, from 10 GB)."""

    def __init__(self):
        self.history = {}   # key -> id of the sequence of inputs it saw
        self.sequences = {}  # (previous sequence id, input id) -> sequence id
        self.users = {}     # sequence id -> keys at it
        self.sums = {}      # sequence id -> H
        self.last = None    # (the last input, its tag, id, fingerprint): held, so its memory cannot be reused
        self.inputs = 0

    @staticmethod
    def _fingerprint(x):  # (catches a change the version counter misses: x.data, numpy views)
        return torch.stack([x.sum(dtype=torch.float64), torch.linalg.vector_norm(x, dtype=torch.float64)])

    def _input_id(self, x, shared):
        """The same id as the last input's for the same tensor unchanged, else a new one."""
        if not shared or x.is_inference():  # (an im2col result: made for this call alone, and
            self.inputs += 1                 # large; an inference tensor has no version counter)
            return self.inputs
        tag = (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape), x.stride(),
               x.dtype, x._version)
        if self.last is None or self.last[1] != tag or not torch.equal(self.last[3], self._fingerprint(x)):
            self.inputs += 1
            self.last = (x, tag, self.inputs, self._fingerprint(x))
        return self.last[2]

    @staticmethod
    def _add_xtx(h, x):
        """h += x^T x in its upper triangle, float32, in block rows of 512 from the diagonal
        block right (about 0.6x the full product's work at K = 2048-5632); below the diagonal
        only the diagonal blocks are added to (_factor reads the upper triangle only)."""
        k = x.shape[1]
        for r in range(0, x.shape[0], 4096):  # (float32 copies a few rows at a time: im2col rows are many)
            xc = x[r:r + 4096].float()
            for j0 in range(0, k, 512):
                h[j0:j0 + 512, j0:].addmm_(xc[:, j0:j0 + 512].T, xc[:, j0:])
        return h

    def add(self, key, x, shared=True):
        """One input x [rows, K] of the layer ``key`` (``shared``: x may be another layer's too)."""
        old = self.history.get(key)
        new = self.sequences.setdefault((old, self._input_id(x, shared)), len(self.sequences))
        self.history[key] = new
        self.users[new] = self.users.get(new, 0) + 1
        if old is not None:
            self.users[old] -= 1
        if new not in self.sums:  # (else another key already added this input to the same H)
            if old is None:
                h = torch.zeros(x.shape[1], x.shape[1])
            else:  # (a copy while other keys still share the old sum)
                h = self.sums[old].clone() if self.users[old] else self.sums[old]
            self.sums[new] = self._add_xtx(h, x)
        if old is not None and not self.users[old]:
            del self.sums[old]

    def of(self):
        """key -> H, valid in its upper triangle (keys with the same inputs: the same tensor)."""
        return {key: self.sums[seq] for key, seq in self.history.items()}


_MAX_GROUPED_HESSIAN_BYTES = 1 << 30


def _grouped_hessians_fit(conv: nn.Module) -> bool:
    """A grouped conv's per-group float32 Hessians (groups x K^2 x 4 bytes) within 1 GiB in all;
    beyond, the layer is converted round-to-nearest (wav2vec2-base's positional conv would need
    16 x 6144^2 x 4 = 2.4 GB and 16 Cholesky factorizations of 6144 x 6144)."""
    return conv.groups * group_k(conv) ** 2 * 4 <= _MAX_GROUPED_HESSIAN_BYTES


def _hessian_bytes(m: nn.Module) -> int:
    """The float32 Hessians a layer's calibration holds (each layer counted alone: layers that
    share an input share one, so this is an upper bound)."""
    if is_mha(m):
        return 4 * (m.embed_dim ** 2 + m.kdim ** 2 + m.vdim ** 2)
    if isinstance(m, (nn.Conv2d, nn.Conv1d)):
        fits = m.groups == 1 or _grouped_hessians_fit(m)
        return 4 * m.groups * group_k(m) ** 2 if fits else 0
    if is_conv_transpose(m):  # (K: the input channels)
        return 4 * m.in_channels ** 2
    k = m.weight.shape[0] if is_conv1d(m) else m.weight.shape[-1]
    return 4 * k * k


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _calibration_groups(layers: list, hessian_memory: int | None) -> list:
    """Consecutive runs of layers whose Hessians fit in hessian_memory bytes (a larger layer
    alone); one run of all without a limit."""
    if hessian_memory is None:
        return [layers] if layers else []
    groups, size = [], 0
    for m in layers:
        b = _hessian_bytes(m)
        if not groups or size + b > hessian_memory:
            groups.append([])
            size = 0
        groups[-1].append(m)
        size += b
    return groups


@contextmanager
def _recording(layers: list):
    """Calibration hooks on ``layers`` meanwhile: yields the _Hessians they add to (key: a layer,
    or (MultiheadAttention, "q_proj" / "k_proj" / "v_proj"), or (grouped conv, group index))."""
    hessians = _Hessians()
    accumulate = hessians.add

    def hook(mod, args, kwargs):
        if is_mha(mod):  # q, k and v see query, key and value (positional or by keyword)
            for i, name in enumerate(("query", "key", "value")):
                x = (args[i] if i < len(args) else kwargs[name]).detach()
                accumulate((mod, name[0] + "_proj"), x.reshape(-1, x.shape[-1]))
            return
        x = (args[0] if args else next(iter(kwargs.values()))).detach()  # (input by keyword)
        if isinstance(mod, (nn.Conv2d, nn.Conv1d)):  # the GEMM's rows: im2col in QuantConv2d's
            if isinstance(mod, nn.Conv1d):           # K order (Conv1d: on [B, C, 1, L])
                x = (x if x.dim() == 3 else x.unsqueeze(0)).unsqueeze(2)
                geometry = conv1d_geometry(mod)
            else:
                x, geometry = (x if x.dim() == 4 else x.unsqueeze(0)), mod
            cg = mod.in_channels // mod.groups  # a grouped conv: one Hessian per group
            if mod.groups > 1 and not _grouped_hessians_fit(mod):
                return  # (round-to-nearest: see _grouped_hessians_fit)
            for i in range(mod.groups):
                key = mod if mod.groups == 1 else (mod, i)
                accumulate(key, im2col(geometry, x[:, i * cg:(i + 1) * cg])[0], shared=False)
            return
        if is_conv_transpose(mod):  # the GEMM's rows: one per input pixel, K = input channels
            channel_dim = -2 if isinstance(mod, nn.ConvTranspose1d) else -3
            accumulate(mod, x.movedim(channel_dim, -1).reshape(-1, mod.in_channels), shared=False)
            return
        accumulate(mod, x.reshape(-1, x.shape[-1]))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in layers]
    try:
        yield hessians
    finally:
        for h in handles:
            h.remove()
        hessians.last = None


def _checked(model: nn.Module, hess: dict, later: bool) -> dict:
    """hess, once every Hessian is finite (else a ValueError naming the layer)."""
    names = {m: fqn or type(m).__name__ for fqn, m in model.named_modules()}
    for key, h in {id(h): (key, h) for key, h in hess.items()}.values():  # (shared: once)
        mod = key[0] if isinstance(key, tuple) else key
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"gptq_: module {names[mod]!r} saw non-finite calibration inputs "
                             "(NaN or inf, or so large that x^T x overflows float32); no layer "
                             "of this calibration pass was converted"
                             + (" (those of the passes before stay converted)" if later else ""))
    return hess


def _calibrate(model: nn.Module, layers: list, run: Callable[[], None], later: bool) -> dict:
    """key -> H = sum x^T x over the inputs ``layers`` see while ``run()`` runs the calibration
    forwards."""
    # (outside inference mode: the inputs keep version counters, _Hessians' sharing reads them)
    with _recording(layers) as hessians, torch.inference_mode(False), torch.no_grad():
        run()
    return _checked(model, hessians.of(), later)


def _block_after_block(model, layers, blocks, batches, call, hessian_memory, convert,
                       calibrate_and_convert) -> list:
    """gptq_'s sequential calibration (pyquant/nn/gptq_blocks.py): each block's layers calibrated
    on the block's recorded arguments and converted (in runs within hessian_memory), block after
    block; the layers outside the blocks (the first run of them) on the forwards as they pass
    them, converted after the blocks. ``layers`` loses each block's layers as they are converted
    (so nothing keeps their float weights); returns the layers left: later runs of those outside,
    and those of blocks no forward reached."""
    block_ids = {id(b) for b in blocks}
    names = {b: fqn for fqn, b in model.named_modules() if id(b) in block_ids}
    layer_ids = {id(m) for m in layers}
    in_blocks = {id(m) for b in blocks for m in b.modules()}
    outside = _calibration_groups([m for m in layers if id(m) not in in_blocks], hessian_memory)
    first = outside[0] if outside else []

    def convert_block(block, inputs):
        own, others = [], []
        for m in block.modules():
            (own if id(m) in layer_ids else others).append(m)
        for group in _calibration_groups(own, hessian_memory):
            calibrate_and_convert(group, lambda: stages.run_block(block, inputs))
        convert(set(others), {})  # (MoE experts, RNNs: round-to-nearest, with their block)

    with _recording(first) as passing, BlockStages(blocks, batches, names, call) as stages, \
            torch.inference_mode(False), torch.no_grad():
        while (reached := stages.next_block()) is not None:
            block, inputs = reached
            inside = {id(m) for m in block.modules()}
            convert_block(block, inputs)
            del reached, inputs
            layers[:] = [m for m in layers if id(m) not in inside]
            stages.finish(block)
    if first:
        convert(set(first), _checked(model, passing.of(), later=True))
    first_ids = {id(m) for m in first}
    return [m for m in layers if id(m) not in first_ids]


def _nonempty(batches: Iterable) -> Iterable:
    """``batches``, or a ValueError if it holds none (an exhausted generator would convert every
    layer without calibration); an iterator's first batch is read and put back."""
    if isinstance(batches, (list, tuple)):
        first = batches[0] if batches else _NO_BATCH
    else:
        try:
            batches = iter(batches)
        except TypeError:
            raise TypeError(f"batches: expected an iterable of batches (e.g. a list of tensors "
                            f"or a DataLoader), got {type(batches).__name__}") from None
        first = next(batches, _NO_BATCH)
        batches = itertools.chain([first], batches)
    if first is _NO_BATCH:
        raise ValueError("batches: got no calibration batch (GPTQ fits the weights to them)")
    return batches


_NO_BATCH = object()


def gptq_(model: nn.Module, config: WeightOnlyConfig | SparqConfig, batches: Iterable, *,
          filter_fn: Callable | None = None, damp: float = 0.2,
          fold_batchnorm: bool | str = True, hessian_memory: int | None = None,
          sequential: bool = True) -> nn.Module:
    """quantize_ for WeightOnlyConfig with GPTQ rounding from calibration `batches` (tensors,
    tuples of positional args or mappings of keyword args), or for SparqConfig(sparse24=True)
    with SparseGPT's 2:4 pruning; layers that saw no input fall back to round-to-nearest /
    magnitude pruning, and so do MoE experts blocks (each expert sees only the tokens routed to
    it), recurrent layers (nn.LSTM/GRU/RNN), a MultiheadAttention's out_proj (its q/k/v projections get GPTQ from the query, key
    and value inputs) and grouped convs whose per-group Hessians would pass 1 GiB. Returns the model (the root swapped if it is itself a layer).

    ``damp``: added to H's diagonal as a fraction of its mean. Larger than the paper's 0.01
    because a few hundred calibration tokens leave H (K up to 1536) rank-deficient; on MiniLM
    with 32 calibration sentences 0.003/0.01/0.05/0.2 gave 0.970/0.976/0.980/0.982 mean cosine.
    ``fold_batchnorm`` as in quantize_.

    ``sequential`` (default): a model with repeated blocks (the children of an nn.ModuleList or
    nn.Sequential that each hold layers: a transformer's layers) is calibrated block after block,
    each block on the outputs of the blocks before it as quantized (the GPTQ paper's order, as
    AutoGPTQ runs it), from the block's own arguments recorded once per block
    (pyquant/nn/gptq_blocks.py): only one block's float32 Hessians are held (tinyllama-1.1b
    ~0.2 GB, a 7B Llama ~0.7 GB) and each block's float weights are freed once it is converted;
    the layers outside the blocks (an LM head, a stem) are calibrated as the forwards pass them
    (after the blocks: on their quantized outputs) and converted last; MoE experts blocks and
    RNNs inside a block (round-to-nearest) are converted with it. A block must run once per
    forward, in the forward's own thread. ``sequential=False``, or a model without such blocks: every layer
    from one pass over ``batches``, on the float model's inputs, all Hessians held at once
    (tinyllama-1.1b 3.9 GB, a 7B Llama ~22 GB; a warning says when they may not fit in the
    available memory).

    ``hessian_memory``: a number of bytes splits the layers calibrated together (a block's, or
    all of them) into consecutive runs whose Hessians (K^2 x 4 bytes per layer, at most) fit in
    it, each run converted before the next is calibrated (one more forward per run: of the
    block, or over ``batches``), so later layers see the earlier ones quantized.

    The float32 Hessians, factorizations and block updates run on PyTorch's BLAS threads: another
    torch thread count can round a few codes differently (29 of 768k in one 768 x 1000 layer,
    1 vs 2 threads); the native sweeps give the same bits on every ISA and thread count.
    """
    sparse24 = isinstance(config, SparqConfig) and config.sparse24
    if not (isinstance(config, WeightOnlyConfig) or sparse24):
        raise TypeError("config: GPTQ applies to WeightOnlyConfig (and SparseGPT to "
                        f"SparqConfig(sparse24=True)), got {config!r}")
    check_fold_option(fold_batchnorm)
    if hessian_memory is not None and (isinstance(hessian_memory, bool) or not isinstance(hessian_memory, (int, float))
                                       or not hessian_memory > 0):
        raise ValueError(f"hessian_memory: expected None or a positive number of bytes, got {hessian_memory!r}")
    check_filter(filter_fn)
    if filter_fn is None:
        _warn_left_float(model, "gptq_", config)
        filter_fn = _default_filter_for(config)

    def quantizable(m, fqn):
        return convertible(m) and filter_fn(m, fqn)

    on_meta = [fqn or "(root)" for fqn, m in model.named_modules()
               if any(p.is_meta for p in m.parameters(recurse=False))]
    if on_meta:  # (quantize_ makes layers that await a quantized state dict of such a model)
        raise ValueError(f"gptq_: {len(on_meta)} module(s) have weights on the meta device "
                         f"({', '.join(on_meta[:4])}{', ...' if len(on_meta) > 4 else ''}): GPTQ "
                         "fits the weights to calibration data; load the float weights first")
    batches = _nonempty(batches)
    # (before the hooks: GPTQ rounds the folded weights)
    fold_batchnorm_(model, quantizable, fold_batchnorm, "gptq_")
    # MoE experts blocks see no Hessian of their own (each expert sees only its routed tokens):
    # they are converted round-to-nearest / magnitude-pruned, as are recurrent layers (their
    # state inputs are no module's input); so is a MultiheadAttention's
    # out_proj (its input, the attention output, is never a module's input), and embedding
    # tables (their input is indices)
    layers = [m for name, m in model.named_modules()
              if quantizable(m, name) and not (is_experts(m) or is_rnn(m)
                                               or isinstance(m, TABLE_TYPES))]
    layer_ids = {id(m) for m in layers}  # (ids: nothing here may keep a converted layer alive)
    is_layer = lambda m: id(m) in layer_ids  # noqa: E731
    for m in model.modules():  # (its nested-tensor path hands the calibration hooks a nested
        if isinstance(m, nn.TransformerEncoder) and any(is_layer(s) for s in m.modules()):
            m.use_nested_tensor = False  # tensor; _convert turns it off for them anyway)
    blocks = repeated_blocks(model, is_layer) if sequential and model not in layers else []
    together = [[m for m in b.modules() if is_layer(m)] for b in blocks]  # (calibrated together)
    in_blocks = {id(m) for run in together for m in run}
    together.append([m for m in layers if id(m) not in in_blocks])
    sizes = [sum(_hessian_bytes(m) for m in run) for run in together]
    need, largest = max(sizes), len(together[sizes.index(max(sizes))])
    del together
    available = _available_memory()
    if hessian_memory is None and available is not None and need > 0.8 * available:
        warnings.warn(f"gptq_: the Hessians of {largest} layers calibrated together "
                      f"may take up to {need / 2**30:.1f} GiB, "
                      f"{available / 2**30:.1f} GiB are available; hessian_memory=N (bytes) "
                      "calibrates the layers in runs that fit in N", stacklevel=2)
    if (blocks or hessian_memory is not None) and not isinstance(batches, (list, tuple)):
        batches = list(batches)  # (several passes)
    hess: dict = {}

    def handler(mod, cfg):
        kw = dict(hessian=hess[mod], damp=damp) if mod in hess else {}
        if isinstance(mod, (nn.Conv2d, nn.Conv1d)) and mod.groups > 1:
            cls = QuantGroupedConv2d if isinstance(mod, nn.Conv2d) else QuantGroupedConv1d
            hessians = [hess.get((mod, i)) for i in range(mod.groups)]
            if any(h is None for h in hessians):  # (a conv no calibration batch reached)
                return cls.from_conv(mod, cfg)
            return cls.from_conv(mod, cfg, hessians=hessians, damp=damp)
        if isinstance(mod, nn.Conv2d):
            return QuantConv2d.from_conv(mod, cfg, **kw)
        if isinstance(mod, nn.Conv1d):
            return QuantConv1d.from_conv(mod, cfg, **kw)
        if isinstance(mod, nn.ConvTranspose2d):
            return QuantConvTranspose2d.from_conv(mod, cfg, **kw)
        if isinstance(mod, nn.ConvTranspose1d):
            return QuantConvTranspose1d.from_conv(mod, cfg, **kw)
        if is_conv1d(mod):
            return QuantLinear.from_conv1d(mod, cfg, **kw)
        if is_experts(mod):
            return QuantExperts(mod, cfg)
        if is_rnn(mod):
            return QuantRNN(mod, cfg)
        if isinstance(mod, TABLE_TYPES):
            return quantized_table(mod, cfg)
        if is_mha(mod):
            return QuantMultiheadAttention(mod, cfg, {
                name: dict(hessian=hess[mod, name], damp=damp)
                for name in ("q_proj", "k_proj", "v_proj") if (mod, name) in hess})
        return QuantLinear.from_linear(mod, cfg, **kw)

    converted = False  # (an error message says whether some layers stay converted)

    def convert(members, hessians, last=False):
        """``members`` converted with ``hessians`` (``last``: every layer left, those without a
        Hessian round-to-nearest)."""
        global _last_factor
        nonlocal hess, converted
        hess = hessians
        out = _convert(model, config, handler,
                       quantizable if last else lambda m, fqn: m in members and quantizable(m, fqn))
        hess, _last_factor, converted = {}, None, True
        return out

    def calibrate_and_convert(group, run, last=False):
        return convert(set(group), _calibrate(model, group, run, later=converted) if group else {}, last)

    global _last_factor, _keep_factor
    _keep_factor = True
    try:
        with no_kv_cache(model) as call:
            def over_batches():
                for b in batches:
                    call(b)

            if blocks:
                layers = _block_after_block(model, layers, blocks, batches, call, hessian_memory,
                                            convert, calibrate_and_convert)
            groups = _calibration_groups(layers, hessian_memory)
            if model in layers:  # (the root is the layer: one run, and _convert swaps the root)
                groups = [layers]
            for group in groups[:-1]:
                calibrate_and_convert(group, over_batches)
            return calibrate_and_convert(groups[-1] if groups else [], over_batches, last=True)
    finally:
        _last_factor, _keep_factor = None, False
