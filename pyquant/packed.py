"""PackedWeight: a weight packed once for one GEMM, and pyquant.prepack.

The buffer starts with a 64-byte self-describing header (csrc/core/packed_format.h) that the
kernels validate on every use: a weight packed for another op or other arguments is a ValueError.
Buffers may come from files other people wrote: ``validate()`` (run on unpickling) checks the
whole header and the buffer size exactly as the op does, so a damaged or edited weight is a
ValueError when it is loaded, not at the first call.
"""
from __future__ import annotations

import inspect

from typing import Any, Callable

import numpy as np

from . import _arrays, _C

_HEADER = np.dtype(
    [
        ("magic", "S4"), ("version", "<u2"), ("op", "<u2"), ("n", "<u4"), ("k", "<u4"),
        ("n_padded", "<u4"), ("k_padded", "<u4"), ("bits", "<u2"), ("nr", "<u2"), ("kr", "<u2"),
        ("flags", "<u2"), ("w_levels", "i1", (4,)), ("reserved", "<u4"), ("data_offset", "<u8"),
        ("aux_offset", "<u8"), ("total_bytes", "<u8"),
    ]
)
assert _HEADER.itemsize == 64

OP_IDS = {"int8_gemm": 1, "lut_gemm": 2, "lowbit_gemm": 3, "sparq_gemm": 4, "sparq24_gemm": 5}
OP_NAMES = {v: k for k, v in OP_IDS.items()}


class PackedWeight:
    """A weight ``[N, K]`` packed for one op. Treat as opaque; pass it wherever ``w`` goes.

    ``params`` holds the op keyword arguments it was packed with (``bits=``, ``w_levels=``...).
    Picklable; ``buffer`` (uint8) is what is stored in a state_dict.
    """

    __slots__ = ("buffer", "op", "params")

    def __init__(self, buffer: np.ndarray, op: str, params: dict | None = None):
        if not isinstance(buffer, np.ndarray) or buffer.dtype != np.uint8 or buffer.ndim != 1:
            raise TypeError("buffer: expected a 1-D uint8 numpy array")
        if not isinstance(op, str):
            raise TypeError(f"op: expected a str, got {type(op).__name__}")
        if op not in OP_IDS:
            raise ValueError(f"op: expected one of {', '.join(sorted(OP_IDS))}, got {op!r}")
        self.buffer = np.ascontiguousarray(buffer)  # (a strided view: copied, as on unpickling)
        self.op = op
        self.params = dict(params or {})
        if buffer.size < _HEADER.itemsize:
            raise ValueError(f"buffer: {buffer.size} bytes is smaller than the "
                             f"{_HEADER.itemsize}-byte packed-weight header")
        h = self.header()
        if h["magic"] != b"PQWT":
            raise ValueError("buffer: not a pyquant packed weight (bad magic)")
        if OP_NAMES.get(int(h["op"])) != op:
            raise ValueError(f"buffer: packed for op id {int(h['op'])}, not {op!r}")

    def validate(self) -> dict:
        """Checks the buffer as the op will (header fields, layout, exact size), that what it
        derives from its weights matches them (int8 column sums) and that ``params`` agree with
        the header; returns ``{op, n, k, nbytes, params}`` (the params the header records).
        Raises ValueError naming the field and the expected value."""
        info = _C.validate_packed(self.buffer, self.op, "buffer")
        for key, value in info["params"].items():
            if key in self.params and _norm(self.params[key]) != value:
                raise ValueError(
                    f"params: {key}={self.params[key]!r} but the buffer's header records {key}={value!r}"
                )
        return info

    def header(self) -> np.void:
        return self.buffer[:64].view(_HEADER)[0]

    @property
    def shape(self) -> tuple[int, int]:
        h = self.header()
        return int(h["n"]), int(h["k"])

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

    def __repr__(self) -> str:
        n, k = self.shape
        extra = "".join(f", {k_}={v!r}" for k_, v in sorted(self.params.items()))
        return f"PackedWeight(op={self.op!r}, shape=({n}, {k}){extra}, nbytes={self.nbytes})"

    def __getstate__(self):
        return {"buffer": self.buffer, "op": self.op, "params": self.params}

    def __setstate__(self, state):
        # an unpickled weight may come from anywhere: check types, then the buffer, up front
        if not isinstance(state, dict) or not {"buffer", "op", "params"} <= state.keys():
            raise TypeError("PackedWeight state: expected a dict with buffer, op and params")
        buffer, op, params = state["buffer"], state["op"], state["params"]
        if not isinstance(buffer, np.ndarray) or buffer.dtype != np.uint8 or buffer.ndim != 1:
            raise TypeError("buffer: expected a 1-D uint8 numpy array")
        if not isinstance(op, str):
            raise TypeError(f"op: expected a str, got {type(op).__name__}")
        if not isinstance(params, dict):
            raise TypeError(f"params: expected a dict, got {type(params).__name__}")
        self.buffer = np.ascontiguousarray(buffer)
        self.op = op
        self.params = dict(params)
        self.validate()


def _norm(value):
    """A params value as the header decoding gives it (sequences as tuples of ints); a sequence
    of other things (None, inf, lists) stays as it is, unequal to the header's."""
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            return tuple(int(v) for v in value)
        except (TypeError, ValueError, OverflowError):
            return value
    return value


_PREPACKERS: dict[str, Callable[..., PackedWeight]] = {}
_PREPACK_ARGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # op -> (names, required)


def register_prepack(op: str):
    def deco(fn):
        # the op's keyword arguments after w (named in prepack's errors): (names, required)
        params = list(inspect.signature(fn).parameters.values())[1:]
        names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        required = tuple(p.name for p in params if p.name in names and p.default is p.empty)
        _PREPACKERS[op] = fn
        _PREPACK_ARGS[op] = (names, required)
        return fn
    return deco


def prepack(w: Any, op: str, **op_kwargs) -> PackedWeight:
    """Packs ``w`` (``[N, K]``) once for the GEMM named by ``op``, with that op's keyword arguments."""
    if not isinstance(op, str):
        raise TypeError(f"op: expected a str, got {type(op).__name__}")
    if op not in _PREPACKERS:
        raise ValueError(f"op: unknown op {op!r}; expected one of {sorted(_PREPACKERS)}")
    if isinstance(w, PackedWeight):
        raise TypeError("w: already a PackedWeight; pass the unpacked weight")
    names, required = _PREPACK_ARGS[op]
    missing = [k for k in required if k not in op_kwargs]
    if missing:
        raise TypeError(f"prepack: op {op!r} needs the keyword argument(s) {', '.join(missing)}")
    unknown = sorted(set(op_kwargs) - set(names))
    if unknown:
        raise TypeError(f"prepack: op {op!r} takes no keyword argument(s) {', '.join(unknown)} "
                        f"(it takes: {', '.join(names) or 'none'})")
    return _PREPACKERS[op](w, **op_kwargs)


def resolve_weight(w: Any, op: str, params: dict) -> PackedWeight:
    """w as a PackedWeight for `op` with `params`: packs raw weights, checks packed ones."""
    if isinstance(w, PackedWeight):
        if w.op != op:
            raise ValueError(
                f"w: this PackedWeight was packed for {w.op!r}, not {op!r}; prepack it with op={op!r}"
            )
        for key, value in params.items():
            if w.params.get(key) != value:
                raise ValueError(
                    f"w: packed with {key}={w.params.get(key)!r} but called with {key}={value!r}"
                )
        return w
    return prepack(w, op, **params)


def weight_numpy(w: Any, name: str = "w") -> np.ndarray:
    return _arrays.to_numpy(w, name)


def header_op(buf: np.ndarray) -> str | None:
    """The op named by a flat uint8 buffer's packed header, or None (no header, unknown op)."""
    if buf.size < 64 or bytes(buf[:4]) != b"PQWT":
        return None
    return OP_NAMES.get(int(buf[:64].view(_HEADER)[0]["op"]))


def check_replacement(new: np.ndarray, current: np.ndarray, name: str) -> dict:
    """``new``, an untrusted packed buffer about to replace ``current`` (one this process packed),
    must be a valid weight for the same op with the same shape and op parameters: ValueError
    naming ``name`` and the expected value otherwise. Both flat uint8 arrays; returns new's info."""
    op = header_op(current)
    if op is None:
        raise ValueError(f"{name}: the module's own buffer is not a packed weight")
    want = _C.validate_packed(current, op, name, payload=False)  # (checked when it was loaded)
    # shape first (the most likely edit, named as such), then the whole header and size
    if new.size >= 64 and bytes(new[:4]) == b"PQWT":
        h = new[:64].view(_HEADER)[0]
        for key in ("n", "k"):
            if int(h[key]) != want[key]:
                raise ValueError(f"{name}: header field {key} is {int(h[key])}, expected "
                                 f"{want[key]} (the module's shape)")
    got = _C.validate_packed(new, op, name)
    for key, value in want["params"].items():
        if got["params"][key] != value:
            raise ValueError(f"{name}: packed with {key}={got['params'][key]!r}, expected "
                             f"{key}={value!r} (the module's config)")
    return got
