"""QuantEmbedding: an ``nn.Embedding`` table held as int8 or packed 4/2-bit codes with scales.

An embedding is a gather, not a GEMM: its table costs memory (a 32000 x 2048 LLM vocabulary is
262 MB in float32, as much as a third of a W4 model's bytes), not time. Each looked-up row is
dequantized on the fly with a few torch ops (traceable by torch.compile / export):

    out[i, j] = float32(code[idx[i], j]) * float32(scale[idx[i], j // group])  (then the float
    table's dtype)

one rounding at most (a bfloat16 scale times a code of at most 8 bits is exact in float32).

- ``Int8Config``: symmetric int8 per row (``codes`` int8 ``[V, D]``, ``scales`` float32
  ``[V, 1]``), the rounding of Int8Config's linear weights.
- ``WeightOnlyConfig(bits, group_size)``: ``bits``-bit codes per ``group_size`` entries of a row,
  MSE-clipped bfloat16 scales (the search of WeightOnlyConfig's linear weights), codes packed
  with ``pyquant.pack`` (LSB first, two's complement; ``codes`` uint8 ``[V, ceil(D * bits / 8)]``,
  ``scales`` bfloat16 ``[V, ceil(D / group_size)]``).

``quantize_`` leaves embeddings float by default (most of a model's time is elsewhere, and a
4-bit table changes the model's numbers); convert them with ``filter_fn=embedding_filter``:

    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))                       # the linears
    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=pyquant.nn.embedding_filter)

The codes and scales in a state dict are checked at load like every quantized buffer (dtype,
shape, finite and bounded scales: pyquant/nn/_load.py's rule), and an embedding converted from
weights on the meta device awaits them (``load_quantized_``). A model whose tables took another
config than its linears loads from a ``save_quantized`` file (its metadata names each layer's
config); a plain state dict loads with one config for every quantized layer.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from pyquant.packing import pack

from ._load import as_plain_buffers
from .configs import Int8Config, WeightOnlyConfig
from .modules import AwaitsLoad, _tracing, _weight_view, check_finite_weight, keeping_dtypes
from .schemes import int8_weight, lowbit_weight
from .weight_view import QuantizedWeight

_BUFFERS = ("codes", "scales")
_FLT_MAX = float(torch.finfo(torch.float32).max)


def _layout(config) -> tuple[int, int]:
    """(bits, group size along the row; 0: one scale per row) of ``config``'s tables."""
    if isinstance(config, Int8Config):
        return 8, 0
    if isinstance(config, WeightOnlyConfig):
        return config.bits, config.group_size
    raise TypeError(f"config: an embedding table is quantized with Int8Config or "
                    f"WeightOnlyConfig(bits, group_size), got {type(config).__name__} (its "
                    "activation scheme has nothing to act on in a lookup)")


def _padding_row(pad, v: int):
    """nn.Embedding's padding_idx rule: None, or a row index in [-v, v), negatives from the end."""
    if pad is None:
        return None
    if isinstance(pad, bool) or not isinstance(pad, int) or not -v <= pad < v:
        raise ValueError(f"padding_idx: expected None or a row index in [-{v}, {v}), got {pad!r}")
    return pad + v if pad < 0 else pad


def table_bits(config) -> int:
    return _layout(config)[0]


def table_layout(v: int, d: int, config) -> dict:
    """{buffer: (dtype, shape)} of a quantized [v, d] table's state under ``config``."""
    bits, group = _layout(config)
    if bits == 8:
        return {"codes": (torch.int8, (v, d)), "scales": (torch.float32, (v, 1))}
    return {"codes": (torch.uint8, (v, -(-d * bits // 8))),
            "scales": (torch.bfloat16, (v, -(-d // group)))}


# per code of a packed byte (LSB first), the left shift that puts it at the byte's top
_TOP_SHIFTS = {b: torch.arange(8 - b, -1, -b, dtype=torch.uint8) for b in (4, 2)}
# the largest |code| of a table: a scale beyond float32's max over it dequantizes to infinity
_CODE_MAX = {8: 128, 4: 8, 2: 2}


def check_table(t, name: str, layout: dict, what: str, bits: int) -> None:
    """TypeError / ValueError unless ``t`` (buffer ``name`` of a table, from a state dict) is a
    dense CPU tensor of the dtype and shape ``layout`` gives, and, holding the scales, finite
    values small enough that no code times its scale overflows float32."""
    dtype, shape = layout[name]
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
    if t.is_meta or t.layout != torch.strided or t.device.type != "cpu":
        kind = ("a tensor on the meta device" if t.is_meta else f"layout {t.layout}"
                if t.layout != torch.strided else f"a tensor on {t.device}")
        raise TypeError(f"{name}: expected a dense CPU tensor with data, got {kind}")
    if t.dtype != dtype or tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected {dtype} of shape {list(shape)} ({what}), got "
                         f"{t.dtype} of shape {list(t.shape)}")
    if name.endswith("scales") and t.numel():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected finite scales, found NaN or infinity")
        limit = _FLT_MAX / _CODE_MAX[bits]
        amax = float(t.detach().float().abs().max())
        if amax > limit:
            raise ValueError(f"{name}: expected |values| <= {limit:.6g} (float32's max / the "
                             f"largest {bits}-bit code {_CODE_MAX[bits]}), got {amax:.6g}")


class QuantEmbedding(AwaitsLoad, nn.Module):
    """A drop-in for ``nn.Embedding`` at inference (see the module docstring): the same lookups,
    ``padding_idx`` and index checks, the table quantized. No gradients (``max_norm``,
    ``sparse`` and ``scale_grad_by_freq`` belong to training; a table with ``max_norm`` is
    refused at conversion, as its lookups would rewrite float rows)."""

    dequantize_cost = "a pass over the whole table"  # (weight_view's warning on a value read)

    def __init__(self, num_embeddings: int, embedding_dim: int, config, weight: torch.Tensor,
                 padding_idx: int | None = None):
        super().__init__()
        _layout(config)  # (TypeError for a config tables do not take)
        self.config = config
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.padding_idx = _padding_row(padding_idx, self.num_embeddings)
        if tuple(weight.shape) != (self.num_embeddings, self.embedding_dim):
            raise ValueError(f"weight: expected shape [{num_embeddings}, {embedding_dim}], got "
                             f"{list(weight.shape)}")
        self._weight_dtype = weight.dtype if weight.is_floating_point() else torch.float32
        with torch.inference_mode(False), torch.no_grad():
            if weight.is_meta:  # awaits its state dict (load_quantized_ / load_state_dict)
                bufs = self._empty()
            else:
                w = weight.detach().float().cpu().contiguous()
                check_finite_weight(w)
                bufs = self._quantize(w)
            for name in _BUFFERS:
                self.register_buffer(name, bufs[name].contiguous())
        self._awaiting_load = set(_BUFFERS) if weight.is_meta else False

    @property
    def bits(self) -> int:
        return _layout(self.config)[0]

    @property
    def group_size(self) -> int:
        return _layout(self.config)[1]

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, config) -> "QuantEmbedding":
        if not (isinstance(emb, nn.Embedding) and _plain_embedding(emb)):
            raise TypeError(f"module: {type(emb).__name__} has a forward of its own (e.g. a "
                            "scaled embedding), which a QuantEmbedding would drop; leave it float")
        if emb.max_norm is not None:
            raise ValueError("max_norm: an nn.Embedding with max_norm renormalizes the looked-up "
                             "rows of its float table in place; a quantized table cannot (leave "
                             "it float)")
        m = cls(emb.num_embeddings, emb.embedding_dim, config, emb.weight, emb.padding_idx)
        m._training_options = dict(sparse=emb.sparse, scale_grad_by_freq=emb.scale_grad_by_freq)
        return m

    def _expected(self) -> dict:
        return table_layout(self.num_embeddings, self.embedding_dim, self.config)

    def _empty(self) -> dict:
        return {name: (torch.zeros if name == "codes" else torch.ones)(shape, dtype=dtype,
                                                                       device="cpu")
                for name, (dtype, shape) in self._expected().items()}

    def _quantize(self, w: torch.Tensor) -> dict:
        if self.bits == 8:
            codes, scales = int8_weight(w)
            return {"codes": codes, "scales": scales.reshape(-1, 1)}
        codes, scales = lowbit_weight(w, self.bits, self.group_size)
        return {"codes": pack(codes, self.bits, signed=True), "scales": scales.to(torch.bfloat16)}

    # ---- lookups
    def _codes_of(self, rows: torch.Tensor) -> torch.Tensor:
        """float32 codes [R, D] of packed rows [R, row_bytes] (pyquant.pack's layout: LSB
        first, two's complement): each code shifted to the top of a byte, then an arithmetic
        shift right as int8 sign-extends it."""
        if self.bits == 8:
            return rows.float()
        codes = ((rows.unsqueeze(-1) << _TOP_SHIFTS[self.bits]).view(torch.int8)
                 >> (8 - self.bits)).float()
        return codes.reshape(rows.shape[0], rows.shape[1] * (8 // self.bits))[:, : self.embedding_dim]

    def _dequantize_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """float32 [len(idx), D]: the rows idx of the dequantized table."""
        codes = self._codes_of(self.codes.index_select(0, idx))
        scales = self.scales.index_select(0, idx).float()
        if self.bits == 8:
            return codes * scales
        d, g = self.embedding_dim, self.group_size
        if d % g == 0:  # (the usual case: each group's codes times its scale, broadcast)
            n = codes.shape[0]
            return (codes.reshape(n, d // g, g) * scales.unsqueeze(-1)).reshape(n, d)
        return codes * scales.repeat_interleave(g, 1)[:, :d]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_loaded()
        flat = self._checked_indices(input)
        out = self._dequantize_rows(flat.long())
        if self._weight_dtype != torch.float32:
            out = out.to(self._weight_dtype)
        return out.reshape(*input.shape, self.embedding_dim)

    def _checked_indices(self, input) -> torch.Tensor:
        """``input`` flattened, after nn.Embedding's checks (with errors naming the range)."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input: expected a tensor of indices, got {type(input).__name__}")
        if input.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input: expected int64 or int32 indices, got {input.dtype}")
        if input.device.type != "cpu":
            raise ValueError(f"input: pyquant runs on the CPU, got a tensor on {input.device}")
        flat = input.reshape(-1)
        # (traced: index_select's own check, nn.Embedding's "index out of range" IndexError)
        if not _tracing() and flat.numel() and (bool(flat.min() < 0)
                                                or bool(flat.max() >= self.num_embeddings)):
            raise IndexError(f"input: indices must lie in [0, {self.num_embeddings}) for a table "
                             f"of {self.num_embeddings} rows, got values in "
                             f"[{int(flat.min())}, {int(flat.max())}]")
        return flat

    # ---- the float table, on demand
    @property
    def weight_dtype(self) -> torch.dtype:
        return self.__dict__.get("_weight_dtype", torch.float32)

    @property
    def weight(self) -> QuantizedWeight:
        """The float table as metadata (shape, dtype, device); its values, on any use, are
        ``dequantize_weight()`` (pyquant/nn/weight_view.py)."""
        return _weight_view(self)

    def _float_weight_shape(self) -> tuple:
        return (self.num_embeddings, self.embedding_dim)

    def dequantize_weight(self) -> torch.Tensor:
        """float32 [V, D]: the table every lookup reads."""
        self._check_loaded()
        with torch.inference_mode(False), torch.no_grad():
            return self._dequantize_rows(torch.arange(self.num_embeddings))

    def __setattr__(self, name, value):
        if name == "weight":  # (e.g. transformers' tie_weights after quantize_)
            raise AttributeError(
                "QuantEmbedding.weight cannot be assigned: the table is held as quantized codes, "
                "made from the weight it had at quantize_; tie or change weights before quantize_")
        super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        # .half() / .to(torch.bfloat16): the codes and scales keep their dtypes, the lookups'
        # output follows (as a float embedding's would)
        out = super()._apply(keeping_dtypes(fn), recurse)
        try:
            self._weight_dtype = fn(torch.empty(0, dtype=self.weight_dtype)).dtype
        except Exception:  # (a move an empty tensor cannot make keeps the dtype)
            pass
        return out

    # ---- untrusted state
    def _check_state(self, new: dict, prefix: str) -> None:
        """TypeError / ValueError (naming the key and what is expected) unless ``new`` holds
        buffers this table can use: its dtypes and shapes, finite scales."""
        layout = {prefix + n: v for n, v in self._expected().items()}
        what = f"a {self.num_embeddings} x {self.embedding_dim} table under {self.config!r}"
        for name in _BUFFERS:
            if name in new:
                check_table(new[name], prefix + name, layout, what, self.bits)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._check_state({n: state_dict[prefix + n] for n in _BUFFERS
                           if prefix + n in state_dict}, prefix)
        as_plain_buffers(self, state_dict, prefix)  # (assign=True: no Parameter as a buffer)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._note_loaded(state_dict, prefix)

    def __setstate__(self, state):  # torch.load of a whole module: the file is untrusted too
        super().__setstate__(state)
        cfg = self.__dict__.get("config")
        if type(cfg) not in (Int8Config, WeightOnlyConfig):
            raise TypeError(f"config: a pickled QuantEmbedding holds Int8Config or "
                            f"WeightOnlyConfig, got {type(cfg).__name__}")
        self.config = dataclasses.replace(cfg)  # (its own checks, which unpickling skipped)
        for name in ("num_embeddings", "embedding_dim"):
            v = self.__dict__.get(name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if not (isinstance(self.weight_dtype, torch.dtype) and self.weight_dtype.is_floating_point):
            raise TypeError(f"_weight_dtype: expected a float dtype, got {self.weight_dtype!r}")
        self.padding_idx = _padding_row(self.__dict__.get("padding_idx"), self.num_embeddings)
        waiting = self._awaiting_load
        if waiting is not False and not (isinstance(waiting, set) and waiting <= set(_BUFFERS)):
            raise ValueError(f"_awaiting_load: expected False or a set of {_BUFFERS}, got "
                             f"{waiting!r}")
        missing = [n for n in _BUFFERS if self._buffers.get(n) is None]
        if missing:
            raise ValueError(f"{missing[0]}: a pickled QuantEmbedding must hold its {_BUFFERS}")
        self._check_state(dict(self._buffers), "")

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}, config={self.config!r}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


class QuantEmbeddingBag(QuantEmbedding):
    """A drop-in for ``nn.EmbeddingBag`` at inference (recommendation models' tables): the bags'
    rows are dequantized from the quantized table, then reduced by ``F.embedding_bag`` itself,
    so ``mode`` (sum / mean / max), ``offsets``, ``include_last_offset``,
    ``per_sample_weights`` and ``padding_idx`` mean what they mean for the float module, and the
    result equals the float module's on the dequantized table bit for bit. A memory saving, not
    a speed-up: the rows are dequantized with torch ops before the reduction
    (docs/notes/embedding.md has the cost)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, config, weight: torch.Tensor,
                 padding_idx: int | None = None, mode: str = "mean",
                 include_last_offset: bool = False):
        super().__init__(num_embeddings, embedding_dim, config, weight, padding_idx)
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"mode: expected 'sum', 'mean' or 'max', got {mode!r}")
        self.mode, self.include_last_offset = mode, bool(include_last_offset)

    @classmethod
    def from_embedding_bag(cls, bag: nn.EmbeddingBag, config) -> "QuantEmbeddingBag":
        if not _plain_embedding(bag):
            raise TypeError(f"module: {type(bag).__name__} has a forward of its own, which a "
                            "QuantEmbeddingBag would drop; leave it float")
        if bag.max_norm is not None:
            raise ValueError("max_norm: an nn.EmbeddingBag with max_norm renormalizes the "
                             "looked-up rows of its float table in place; a quantized table "
                             "cannot (leave it float)")
        m = cls(bag.num_embeddings, bag.embedding_dim, config, bag.weight, bag.padding_idx,
                bag.mode, bag.include_last_offset)
        # (training-only options: no use quantized, dequantize_ gives them back)
        m._training_options = dict(sparse=bag.sparse, scale_grad_by_freq=bag.scale_grad_by_freq)
        return m

    def forward(self, input: torch.Tensor, offsets: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        self._check_loaded()
        flat = self._checked_indices(input).long()
        if not _tracing():
            self._check_bags(input, offsets, per_sample_weights)
        n = flat.numel()
        rows = self._dequantize_rows(flat)  # float32, one per position (no sort of the indices)
        where, pad = torch.arange(n), None
        if self.padding_idx is not None:  # padding positions -> one zero row, F's padding_idx
            pad = n
            rows = torch.cat([rows, rows.new_zeros(1, self.embedding_dim)])
            where = torch.where(flat == self.padding_idx, n, where)  # (no branch on the data)
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights.float()
        out = F.embedding_bag(where.reshape(input.shape), rows, offsets, mode=self.mode,
                              per_sample_weights=per_sample_weights,
                              include_last_offset=self.include_last_offset, padding_idx=pad)
        return out if self._weight_dtype == torch.float32 else out.to(self._weight_dtype)

    def _check_bags(self, input, offsets, per_sample_weights) -> None:
        """The bag arguments, checked (torch's CPU embedding_bag reads past its buffers for
        offsets out of range, and returns garbage for decreasing ones)."""
        n = input.numel()
        if input.dim() == 2:
            if offsets is not None:
                raise ValueError("offsets: expected None for 2-D input (each row is a bag)")
        elif input.dim() != 1:
            raise ValueError(f"input: expected 1-D indices with offsets or 2-D bags, got "
                             f"{input.dim()}-D")
        else:
            if not isinstance(offsets, torch.Tensor):
                raise TypeError(f"offsets: expected a tensor of bag starts for 1-D input, got "
                                f"{type(offsets).__name__}")
            if offsets.dtype not in (torch.int64, torch.int32) or offsets.dim() != 1 \
                    or offsets.device.type != "cpu" or offsets.numel() == 0:
                raise ValueError(f"offsets: expected a non-empty 1-D int64 or int32 CPU tensor, "
                                 f"got {offsets.dtype} of shape {list(offsets.shape)} on "
                                 f"{offsets.device}")
            last = int(offsets[-1])
            if int(offsets[0]) != 0 or bool((offsets.diff() < 0).any()) or last > n or (
                    self.include_last_offset and last != n):
                end = f"== {n}" if self.include_last_offset else f"<= {n}"
                raise ValueError(f"offsets: expected non-decreasing bag starts from 0, the last "
                                 f"{end} (the number of indices), got {offsets.tolist()[:8]}"
                                 f"{' ...' if offsets.numel() > 8 else ''}")
        if per_sample_weights is not None and not (
                isinstance(per_sample_weights, torch.Tensor)
                and per_sample_weights.is_floating_point()
                and tuple(per_sample_weights.shape) == tuple(input.shape)):
            raise ValueError(f"per_sample_weights: expected a float tensor of the input's shape "
                             f"{list(input.shape)}, got {per_sample_weights!r:.80}")

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.__dict__.get("mode") not in ("sum", "mean", "max") or not isinstance(
                self.__dict__.get("include_last_offset"), bool):
            raise ValueError("mode / include_last_offset: a pickled QuantEmbeddingBag holds "
                             "'sum', 'mean' or 'max' and a bool")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}" + (
            ", include_last_offset=True" if self.include_last_offset else "")


TABLE_TYPES = (nn.Embedding, nn.EmbeddingBag)  # the float tables quantize_ converts


def _plain_embedding(module: nn.Module) -> bool:
    """nn.Embedding / nn.EmbeddingBag, or a subclass that keeps its forward (a scaled
    embedding, e.g. Gemma's, multiplies in a forward of its own: converting it would drop
    that)."""
    return any(isinstance(module, t) and type(module).forward is t.forward for t in TABLE_TYPES)


def embedding_filter(module: nn.Module, fqn: str) -> bool:
    """filter_fn for quantize_: the embedding tables (nn.Embedding, nn.EmbeddingBag and
    subclasses that keep their forward; tables with ``max_norm`` are refused by the
    conversion)."""
    return _plain_embedding(module) and module.weight.numel() > 0


def quantized_table(module: nn.Module, config) -> QuantEmbedding:
    """quantize_'s swap of a float table."""
    if isinstance(module, nn.EmbeddingBag):
        return QuantEmbeddingBag.from_embedding_bag(module, config)
    return QuantEmbedding.from_embedding(module, config)


__all__ = ["QuantEmbedding", "QuantEmbeddingBag", "embedding_filter"]
