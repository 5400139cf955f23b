"""QuantGRU: an integer-only GRU layer with one bit width per operator (17 widths, ``GRUConfig``).

PyTorch nn.GRU semantics (gate order r, z, n; reset applied after the recurrent matmul):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
Operators and what their width means:
    w_ir w_iz w_in w_hr w_hz w_hn   weight codes of the six matmuls (per-row symmetric scales)
    add_r add_z add_n               gate pre-activation (the sum, also the LUT input width)
    sig_r sig_z tanh_n              lookup-table outputs (sigmoid unsigned in [0, 1], tanh signed)
    mul_rn                          r * (W_hn h + b_hn)
    one_minus_z                     1 - z (unsigned)
    mul_zn mul_zh                   (1 - z) * n and z * h
    add_h                           the new state h (also the recurrent GEMV's activation width)
Every tensor is integer codes with a fixed scale; rescaling between scales is an integer
multiply + rounding shift (M / 2^S), so the whole recurrence is exact integer arithmetic. The input
x is quantized to 8 bits (the kernels take 8-bit activations).

Backends (``QuantGRU.backend``):
    "kernels" (default)  one native call per forward (csrc/gru/gru_cell.h): the input projection
                         of all B*T rows as one GEMM per weight width, then T integer cell steps,
                         on weights prepacked once (lowbit_gemm for 2/4-bit gates, int8_gemm for
                         8-bit ones) when the module is built or loaded.
    "python"             the same maths orchestrated from Python (``step``), pyquant's GEMMs
                         per step: the implementation before the native cell.
    "torch"              the same maths with exact float64 torch matmuls: the independent
                         reference the others are tested against (and what the search runs).
"""
from __future__ import annotations

import warnings
import zlib
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from .. import _C
from .._threads import get_num_threads
from . import _load
from ._code_gemm import grouped_gemm
from .configs import GRU_MATMUL_OPS as MATMUL_OPS
from .configs import GRU_OPS, GRUConfig
from .modules import _check_device, _InferenceOnly, _tracing, keeping_dtypes, layer_name

X_BITS = 8          # input activations (the kernels' A8)
PRE_CAP = 8.0       # pre-activation ranges are capped: sigmoid/tanh are saturated beyond +-8
BIAS_BITS = 32
SHIFT = 36          # requantization: t * M >> SHIFT; |t * ratio| is an output code, so
                    # |t * M| ~ |code| * 2^36 stays far inside int64 and M keeps >= 20 bits


class StateDictValueError(ValueError, RuntimeError):
    """A QuantGRU buffer with a bad shape or value (a RuntimeError too, like torch's own
    load_state_dict errors)."""


class StateDictTypeError(TypeError, RuntimeError):
    """A QuantGRU buffer of the wrong type or dtype."""


def qmax_signed(b: int) -> int:
    return (1 << (b - 1)) - 1


def qmax_unsigned(b: int) -> int:
    return (1 << b) - 1


def make_mult(*ratios):
    """Integer multipliers M_j = round(ratio_j * 2^SHIFT) and the shift."""
    for r in ratios:
        if float(np.max(np.abs(r))) >= 2.0**16:
            raise ValueError("requantization ratio too large (degenerate calibration range?)")
    return [torch.as_tensor(np.round(np.asarray(r, np.float64) * 2.0**SHIFT)).to(torch.int64)
            for r in ratios], SHIFT


def requant(t: torch.Tensor, shift: int, lo: int, hi: int) -> torch.Tensor:
    """clamp(round_half_up(t / 2^shift), lo, hi) on int64."""
    return torch.clamp((t + (1 << (shift - 1))) >> shift, lo, hi)


def normalize_widths(widths) -> dict:
    """int (uniform), ``{op: bits}`` with all 17 ops, or a GRUConfig -> validated ``{op: bits}``."""
    return GRUConfig.from_widths(widths).widths()


def gru_size_bits(input_size: int, hidden: int, widths) -> int:
    """Model size: weights at their widths, the three lookup tables (2^b_in entries of b_out bits),
    int32 biases."""
    w = normalize_widths(widths)
    h, i = hidden, input_size
    size = h * i * (w["w_ir"] + w["w_iz"] + w["w_in"]) + h * h * (w["w_hr"] + w["w_hz"] + w["w_hn"])
    for a, s in (("add_r", "sig_r"), ("add_z", "sig_z"), ("add_n", "tanh_n")):
        size += (1 << w[a]) * w[s]
    return size + BIAS_BITS * 6 * h


@torch.no_grad()
def calibrate(gru: nn.GRU, x: torch.Tensor) -> dict:
    """Float ranges (absmax) of the input and of the intermediate tensors with data-dependent range.
    x: shaped like the GRU's input, batched or not (as nn.GRU takes it)."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != gru.input_size:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"calib: expected [T, {gru.input_size}] or a batch of them shaped like "
                         f"the GRU's input, got {got}")
    if x.dim() == 2:
        x = x.unsqueeze(0)  # unbatched: one sequence, batch-first below
    elif not gru.batch_first:
        x = x.transpose(0, 1)
    x = x.float()
    hsz = gru.hidden_size
    wi, wh = gru.weight_ih_l0, gru.weight_hh_l0
    bi, bh = gru.bias_ih_l0, gru.bias_hh_l0
    gi = x @ wi.T + bi  # [B, T, 3H]
    h = torch.zeros(x.shape[0], hsz)
    r_max = {"x": x.abs().max().item(), "add_r": 0.0, "add_z": 0.0, "add_n": 0.0, "mul_rn": 0.0}
    for t in range(x.shape[1]):
        gh = h @ wh.T + bh
        pr = gi[:, t, :hsz] + gh[:, :hsz]
        pz = gi[:, t, hsz:2 * hsz] + gh[:, hsz:2 * hsz]
        r, z = torch.sigmoid(pr), torch.sigmoid(pz)
        rn = r * gh[:, 2 * hsz:]
        pn = gi[:, t, 2 * hsz:] + rn
        n = torch.tanh(pn)
        h = (1 - z) * n + z * h
        for k, v in (("add_r", pr), ("add_z", pz), ("add_n", pn), ("mul_rn", rn)):
            r_max[k] = max(r_max[k], v.abs().max().item())
    return r_max


def _weight_codes(w: torch.Tensor, bits: int):
    """Per-row symmetric codes in [-(2^(b-1)-1), 2^(b-1)-1] and their scales (float64)."""
    w = w.detach().double()
    q = qmax_signed(bits)
    scale = (w.abs().amax(1) / q).clamp_min(1e-12)
    codes = torch.clamp(torch.round(w / scale[:, None]), -q, q).to(torch.int8)
    return codes, scale


class QuantGRU(nn.Module):
    """Integer-only single-layer GRU; see the module docstring. Build with `from_gru`."""

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = False):
        super().__init__()
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first
        self.backend = "kernels"  # or "python" / "torch": see the module docstring
        self._plan = None         # the native GruPlan, built from the buffers by _derive

    @classmethod
    @torch.no_grad()
    def from_gru(cls, gru: nn.GRU, widths, calib: torch.Tensor | None = None,
                 ranges: dict | None = None) -> "QuantGRU":
        """widths: a GRUConfig, an int (uniform) or {op: bits} for the 17 GRU_OPS. calib: inputs shaped like the
        GRU's (sets the input and pre-activation ranges); or pass `ranges` from `calibrate`."""
        if gru.num_layers != 1 or gru.bidirectional or not gru.bias:
            raise ValueError("gru: only single-layer, unidirectional nn.GRU with bias is supported")
        w = normalize_widths(widths)
        if ranges is None:
            if calib is None:
                warnings.warn("QuantGRU.from_gru without calib= or ranges=: inputs are assumed "
                              "to lie in [-1, 1] and larger ones are clipped; pass calib= (inputs "
                              "like the GRU's) for the model's real ranges", stacklevel=3)
            ranges = calibrate(gru, calib) if calib is not None else {
                "x": 1.0, "add_r": PRE_CAP, "add_z": PRE_CAP, "add_n": PRE_CAP, "mul_rn": PRE_CAP}
        m = cls(gru.input_size, gru.hidden_size, gru.batch_first)
        m.widths, m.ranges = w, dict(ranges)
        H = gru.hidden_size
        sl = {g: slice(j * H, (j + 1) * H) for j, g in enumerate("rzn")}

        # weights (per gate width) and int32 biases in accumulator units
        s_x = ranges["x"] / qmax_signed(X_BITS)
        q_h = qmax_signed(w["add_h"])
        s_h = 1.0 / q_h
        wi_codes, wh_codes, si, sh = [], [], [], []
        for g in "rzn":
            c, s = _weight_codes(gru.weight_ih_l0[sl[g]], w["w_i" + g])
            wi_codes.append(c), si.append(s)
            c, s = _weight_codes(gru.weight_hh_l0[sl[g]], w["w_h" + g])
            wh_codes.append(c), sh.append(s)
        si, sh = torch.cat(si), torch.cat(sh)
        m.w_ih = torch.cat(wi_codes).numpy()
        m.w_hh = torch.cat(wh_codes).numpy()
        m.row_bits_ih = np.repeat([w["w_ir"], w["w_iz"], w["w_in"]], H)
        m.row_bits_hh = np.repeat([w["w_hr"], w["w_hz"], w["w_hn"]], H)
        acc_i = s_x * si   # float scale of one unit of the input-projection accumulator, per row
        acc_h = s_h * sh
        m.b_ih = torch.round(gru.bias_ih_l0.double() / acc_i).to(torch.int64)
        m.b_hh = torch.round(gru.bias_hh_l0.double() / acc_h).to(torch.int64)

        # gate pre-activations r, z: one rounding of the two accumulators' sum
        m.q_pre, s_pre = {}, {}
        for g, op in (("r", "add_r"), ("z", "add_z"), ("n", "add_n")):
            m.q_pre[g] = qmax_signed(w[op])
            s_pre[g] = max(min(ranges[op], PRE_CAP), 1e-6) / m.q_pre[g]
        m.mult = {}
        for g in "rz":
            m.mult["pre_" + g] = make_mult((acc_i[sl[g]] / s_pre[g]).numpy(),
                                           (acc_h[sl[g]] / s_pre[g]).numpy())
        # lookup tables: index = code + q_pre
        m.L_r, m.L_z = qmax_unsigned(w["sig_r"]), qmax_unsigned(w["sig_z"])
        m.q_n = qmax_signed(w["tanh_n"])
        m.lut = {}
        for g, fn, scale in (("r", torch.sigmoid, m.L_r), ("z", torch.sigmoid, m.L_z),
                             ("n", torch.tanh, m.q_n)):
            codes = torch.arange(-m.q_pre[g], m.q_pre[g] + 1, dtype=torch.float64)
            m.lut[g] = torch.round(fn(codes * s_pre[g]) * scale).to(torch.int64)
        # r * (W_hn h + b_hn): r code (scale 1/L_r) times accumulator (scale acc_h)
        m.q_rn = qmax_signed(w["mul_rn"])
        s_rn = max(ranges["mul_rn"], 1e-6) / m.q_rn
        m.mult["rn"] = make_mult((acc_h[sl["n"]] / m.L_r / s_rn).numpy())
        m.mult["pre_n"] = make_mult((acc_i[sl["n"]] / s_pre["n"]).numpy(),
                                    np.full(H, s_rn / s_pre["n"]))
        # 1 - z, (1 - z) * n, z * h, final add (all ranges known: [0, 1] or [-1, 1])
        m.L_omz = qmax_unsigned(w["one_minus_z"])
        m.mult["omz"] = make_mult(np.float64(m.L_omz / m.L_z))
        m.q_zn, m.q_zh, m.q_h = qmax_signed(w["mul_zn"]), qmax_signed(w["mul_zh"]), q_h
        m.mult["zn"] = make_mult(np.float64(m.q_zn / (m.L_omz * m.q_n)))
        m.mult["zh"] = make_mult(np.float64(m.q_zh / (m.L_z * q_h)))
        m.mult["h"] = make_mult(np.float64(q_h / m.q_zn), np.float64(q_h / m.q_zh))
        m.s_x, m.s_h = s_x, s_h
        m._store()
        return m

    # -- state_dict: every integer constant is a buffer; python-side views are derived from them
    _MULTS = (("pre_r", 2), ("pre_z", 2), ("rn", 1), ("pre_n", 2), ("omz", 1), ("zn", 1),
              ("zh", 1), ("h", 2))

    def _buffer_names(self) -> list:
        names = ["w_ih_codes", "w_hh_codes", "b_ih", "b_hh", "lut_r", "lut_z", "lut_n",
                 "widths_t", "scales_t", "ranges_t"]
        return names + [f"mult_{k}_{j}" for k, n in self._MULTS for j in range(n)]

    _RANGE_KEYS = ("x", "add_r", "add_z", "add_n", "mul_rn")

    def _store(self) -> None:
        vals = {"w_ih_codes": torch.from_numpy(self.w_ih), "w_hh_codes": torch.from_numpy(self.w_hh),
                "b_ih": self.b_ih, "b_hh": self.b_hh,
                "widths_t": torch.tensor([self.widths[op] for op in GRU_OPS]),
                "scales_t": torch.tensor([self.s_x, self.s_h], dtype=torch.float64),
                "ranges_t": torch.tensor([self.ranges[k] for k in self._RANGE_KEYS],
                                         dtype=torch.float64)}
        for g in "rzn":
            vals["lut_" + g] = self.lut[g]
        for k, n in self._MULTS:
            for j in range(n):
                vals[f"mult_{k}_{j}"] = torch.as_tensor(self.mult[k][0][j]).reshape(-1)
        for name in self._buffer_names():
            del_attr = name in self.__dict__
            if del_attr:
                delattr(self, name)
            self.register_buffer(name, vals[name].clone())
        self._derive()

    def _derive(self) -> None:
        """Python-side constants (code ranges, views for the GEMMs) and the native plan (validated
        constants, prepacked weights) from the buffers."""
        self._validate({n: getattr(self, n) for n in self._buffer_names()})
        w = {op: int(b) for op, b in zip(GRU_OPS, self.widths_t.tolist())}
        self.widths = w
        self.ranges = dict(zip(self._RANGE_KEYS, self.ranges_t.tolist()))
        self.s_x, self.s_h = (float(v) for v in self.scales_t)
        H = self.hidden_size
        self.w_ih, self.w_hh = self.w_ih_codes.numpy(), self.w_hh_codes.numpy()
        self.row_bits_ih = np.repeat([w["w_ir"], w["w_iz"], w["w_in"]], H)
        self.row_bits_hh = np.repeat([w["w_hr"], w["w_hz"], w["w_hn"]], H)
        self.q_pre = {g: qmax_signed(w["add_" + g]) for g in "rzn"}
        self.L_r, self.L_z = qmax_unsigned(w["sig_r"]), qmax_unsigned(w["sig_z"])
        self.q_n, self.q_rn = qmax_signed(w["tanh_n"]), qmax_signed(w["mul_rn"])
        self.L_omz = qmax_unsigned(w["one_minus_z"])
        self.q_zn, self.q_zh = qmax_signed(w["mul_zn"]), qmax_signed(w["mul_zh"])
        self.q_h = qmax_signed(w["add_h"])
        self.lut = {g: getattr(self, "lut_" + g) for g in "rzn"}
        self.mult = {}
        for k, n in self._MULTS:
            ms = [getattr(self, f"mult_{k}_{j}") for j in range(n)]
            self.mult[k] = ([m if m.numel() > 1 else m.reshape(()) for m in ms], SHIFT)
        self._build_plan()

    def _plan_tensors(self) -> list:
        """What the native GruPlan is built from (quant_gru's arguments in this order, mults a
        list)."""
        mults = [getattr(self, f"mult_{k}_{j}") for k, n in self._MULTS for j in range(n)]
        return [self.w_ih_codes, self.w_hh_codes, self.widths_t, self.b_ih, self.b_hh,
                self.lut_r, self.lut_z, self.lut_n, mults]

    def _build_plan(self) -> None:
        self._plan = _make_plan(*self._plan_tensors())

    def _validate(self, bufs: dict) -> None:
        """Every buffer's type, dtype, shape and range, before anything uses it (state_dicts may
        come from elsewhere). Raises StateDictTypeError / StateDictValueError naming the buffer."""
        H, I = self.hidden_size, self.input_size

        def check(name, dtype, shape):
            t = bufs[name]
            if not isinstance(t, torch.Tensor):
                raise StateDictTypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.dtype != dtype:
                raise StateDictTypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
            if tuple(t.shape) != tuple(shape):
                raise StateDictValueError(
                    f"{name}: expected shape {list(shape)} (input_size {I}, hidden_size {H}), "
                    f"got {list(t.shape)}")
            return t

        wt = check("widths_t", torch.int64, (len(GRU_OPS),))
        try:
            w = GRUConfig.from_widths(dict(zip(GRU_OPS, wt.tolist()))).widths()
        except ValueError as e:
            raise StateDictValueError(f"widths_t: {e}") from None
        for name, n in (("scales_t", 2), ("ranges_t", len(self._RANGE_KEYS))):
            t = check(name, torch.float64, (n,))
            positive = name == "scales_t"
            if not bool(torch.isfinite(t).all()) or (positive and bool((t <= 0).any())):
                kind = "finite positive" if positive else "finite"
                raise StateDictValueError(f"{name}: expected {kind} values, got {t.tolist()}")
        s_h = 1.0 / qmax_signed(w["add_h"])  # (the hidden state's scale follows from its width)
        if float(bufs["scales_t"][1]) != s_h:
            raise StateDictValueError(f"scales_t: element 1 (the hidden state's scale) must be "
                                      f"1 / {qmax_signed(w['add_h'])} = {s_h!r} (add_h is "
                                      f"{w['add_h']} bits in widths_t), got "
                                      f"{float(bufs['scales_t'][1])!r}")
        for name, k, ops in (("w_ih_codes", I, ("w_ir", "w_iz", "w_in")),
                             ("w_hh_codes", H, ("w_hr", "w_hz", "w_hn"))):
            t = check(name, torch.int8, (3 * H, k))
            for j, op in enumerate(ops):
                q = qmax_signed(w[op])
                rows = t[j * H:(j + 1) * H].to(torch.int16)  # int8 abs(-128) would wrap
                if rows.numel() and int(rows.abs().max()) > q:
                    raise StateDictValueError(f"{name}: rows of {op} ({w[op]} bits) must hold codes "
                                              f"in [{-q}, {q}], found {int(rows.abs().max())}")
        for name in ("b_ih", "b_hh"):
            check(name, torch.int64, (3 * H,))
        for g in "rzn":  # index = clamped pre-activation code + q_pre: the table covers it all
            check("lut_" + g, torch.int64, (2 * qmax_signed(w["add_" + g]) + 1,))
        for k, n in self._MULTS:
            for j in range(n):
                vec = k in ("pre_r", "pre_z", "rn", "pre_n")
                check(f"mult_{k}_{j}", torch.int64, (H,) if vec else (1,))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # buffers are replaced (not copied into): their shapes depend on the widths
        names = self._buffer_names()
        found = [n for n in names if prefix + n in state_dict]
        missing_keys.extend(prefix + n for n in names if n not in found)
        for k in state_dict:
            if k.startswith(prefix) and "." not in k[len(prefix):] and k[len(prefix):] not in names:
                unexpected_keys.append(k)
        if len(found) == len(names):
            new = {n: state_dict[prefix + n] for n in names}
            try:  # (meta / sparse: no data to copy out; named here, not inside torch)
                _load._check_tensor_kinds(
                    {n: v for n, v in new.items() if isinstance(v, torch.Tensor)}, prefix)
            except TypeError as e:
                raise StateDictTypeError(str(e)) from None
            new = {n: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v
                   for n, v in new.items()}
            self._validate(new)  # before anything changes: a bad state_dict leaves the module as is
            old = {n: self._buffers.get(n) for n in names}
            old_widths = dict(getattr(self, "widths", {}))
            self._buffers.update(new)
            try:
                self._derive()  # the native plan re-checks; on failure, back to the old buffers
            except Exception:
                self._buffers.update(old)
                if all(v is not None for v in old.values()):
                    self._derive()
                raise
            changed = [f"{op} {old_widths[op]} -> {w}" for op, w in self.widths.items()
                       if op in old_widths and old_widths[op] != w]
            if changed:  # (the file describes the whole integer GRU: its widths are adopted)
                warnings.warn(f"QuantGRU.load_state_dict: the state dict's operator widths differ "
                              f"from this module's ({', '.join(changed[:4])}"
                              f"{', ...' if len(changed) > 4 else ''}); the module now runs the "
                              "state dict's", stacklevel=3)

    def _apply(self, fn, recurse=True):
        # .half() / .double() keep the integer constants' dtypes; then the numpy views and the
        # plan are rebuilt, since share_memory_() moves storage under the same tensors
        out = super()._apply(keeping_dtypes(fn), recurse)
        if "widths_t" in self._buffers and all(t.device.type == "cpu" for t in self._buffers.values()):
            self._derive()
        return out

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state["_plan"] = None  # native object: rebuilt from the buffers
        return state

    def __setstate__(self, state):  # torch.load of a whole module: the file is untrusted too
        super().__setstate__(state)
        if "widths_t" in self._buffers:
            self._derive()  # validates the buffers, then every view and the plan from them

    # -- integer pieces ------------------------------------------------------------------------
    def _gemm(self, a: np.ndarray, w: np.ndarray, row_bits: np.ndarray) -> torch.Tensor:
        if self.backend != "torch":
            return torch.from_numpy(grouped_gemm(a, w, row_bits)).to(torch.int64)
        # exact: |sums| << 2^53
        return (torch.from_numpy(a).double() @ torch.from_numpy(w).double().T).to(torch.int64)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return _quantize_input(x, self.s_x)

    def step(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One time step on codes: gi int64 [B, 3H] (input projection + bias), h int64 [B, H]."""
        H = self.hidden_size
        gh = self._gemm(h.to(torch.int8).numpy(), self.w_hh_codes.numpy(), self.row_bits_hh) + self.b_hh
        mm = self.mult
        pre = {}
        for j, g in enumerate("rz"):
            (mi, mh), s = mm["pre_" + g]
            t = gi[:, j * H:(j + 1) * H] * mi + gh[:, j * H:(j + 1) * H] * mh
            pre[g] = requant(t, s, -self.q_pre[g], self.q_pre[g])
        r = self.lut["r"][pre["r"] + self.q_pre["r"]]
        z = self.lut["z"][pre["z"] + self.q_pre["z"]]
        (m_rn,), s = mm["rn"]
        rn = requant(r * gh[:, 2 * H:] * m_rn, s, -self.q_rn, self.q_rn)
        (mi, mr), s = mm["pre_n"]
        pn = requant(gi[:, 2 * H:] * mi + rn * mr, s, -self.q_pre["n"], self.q_pre["n"])
        n = self.lut["n"][pn + self.q_pre["n"]]
        (m1,), s = mm["omz"]
        omz = requant((self.L_z - z) * m1, s, 0, self.L_omz)
        (m1,), s = mm["zn"]
        zn = requant(omz * n * m1, s, -self.q_zn, self.q_zn)
        (m1,), s = mm["zh"]
        zh = requant(z * h * m1, s, -self.q_zh, self.q_zh)
        (m1, m2), s = mm["h"]
        return requant(zn * m1 + zh * m2, s, -self.q_h, self.q_h)

    def forward_codes(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        """x float [B, T, I] (batch-first here). Returns the state codes int64 [B, T, H]."""
        _check_device(x)
        if h0 is not None:
            _check_device(h0, "h0")
        return self._run(x, h0)

    def _validate_shapes(self, x: torch.Tensor, h0: torch.Tensor | None) -> None:
        """x [B, T, I] batch-first, h0 [B, H] or None."""
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x: expected [B, T, {self.input_size}], got {list(x.shape)}")
        if h0 is not None and tuple(h0.shape) != (x.shape[0], self.hidden_size):
            raise ValueError(f"h0: expected [{x.shape[0]}, {self.hidden_size}], got "
                             f"{list(h0.shape)}")

    def _run(self, x: torch.Tensor, h0: torch.Tensor | None, scale: float | None = None):
        """State codes; with `scale` (native backend only) the float32 outputs codes * scale."""
        if self.backend not in ("kernels", "python", "torch"):
            raise ValueError(
                f"backend: expected 'kernels', 'python' or 'torch', got {self.backend!r}")
        self._validate_shapes(x, h0)
        B, T, _ = x.shape
        h = None if h0 is None else _state_codes(h0, self.q_h)
        if self.backend == "kernels":
            if self._plan is None:
                self._build_plan()
            hq = None if h is None else h.to(torch.int8).numpy()
            return torch.from_numpy(
                self._plan.forward(_input_codes(x, self.s_x), hq, get_num_threads(), scale))
        xq = self.quantize_input(x).reshape(B * T, self.input_size).numpy()  # (B = 0 too)
        gi = (self._gemm(xq, self.w_ih_codes.numpy(), self.row_bits_ih)
              + self.b_ih).reshape(B, T, 3 * self.hidden_size)
        if h is None:
            h = torch.zeros(B, self.hidden_size, dtype=torch.int64)
        out = torch.empty(B, T, self.hidden_size, dtype=torch.int64)
        for t in range(T):
            h = self.step(gi[:, t], h)
            out[:, t] = h
        return out

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        """Same call and shapes as nn.GRU: (output, h_n), h_n [1, B, H]; floats = codes / q_h.
        Inference-only: an input or state that requires grad gives outputs whose backward is a
        clear error (as QuantLinear's); traced (torch.jit.trace, torch.compile, torch.export) it
        runs as the op pyquant::quant_gru."""
        inputs = [t for t in (x, h0) if t is not None]
        if (torch.is_grad_enabled() and not torch.jit.is_tracing()  # (see QuantRNN)
                and any(getattr(t, "requires_grad", False) for t in inputs)):
            return _InferenceOnly.apply(lambda x, h0=None: self._forward(x, h0),
                                        layer_name(self), *inputs)
        return self._forward(x, h0)  # (nothing requires grad: no graph is recorded)

    def _forward(self, x: torch.Tensor, h0: torch.Tensor | None):
        _check_device(x)
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_size:
            layout = "B, T" if self.batch_first else "T, B"
            raise ValueError(f"x: expected [{layout}, {self.input_size}] or unbatched "
                             f"[T, {self.input_size}], got shape {list(x.shape)}")
        if h0 is not None:  # nn.GRU's h_0: [1, B, H], or [1, H] with an unbatched x
            _check_device(h0, "h0")
            batch = x.shape[0 if self.batch_first else 1] if x.dim() == 3 else None
            want = [1, self.hidden_size] if batch is None else [1, batch, self.hidden_size]
            if list(h0.shape) != want:
                raise ValueError(f"h0: expected shape {want} (num_layers = 1, "
                                 f"{'' if batch is None else 'batch, '}hidden_size), got "
                                 f"{list(h0.shape)}")
            if not h0.is_floating_point():
                raise TypeError(f"h0: expected a floating-point tensor, got {h0.dtype}")
        dtype = x.dtype
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0 if self.batch_first else 1)
            h0 = None if h0 is None else h0.unsqueeze(1)
        if not self.batch_first:
            x = x.transpose(0, 1)
        if x.dim() == 3 and x.shape[1] == 0:  # (forward_codes returns an empty sequence)
            raise ValueError("x: expected at least one time step (nn.GRU's h_n needs one), got "
                             f"shape {list(x.shape)} (batch-first)")
        h0 = None if h0 is None else h0[0]
        if _tracing():  # one op with the constants as explicit tensors (any backend: same bits)
            self._validate_shapes(x, h0)
            out = torch.ops.pyquant.quant_gru(x, h0, *self._plan_tensors(), self.s_x, self.s_h,
                                              self.q_h)
        elif self.backend == "kernels":  # the float conversion in the same native call
            out = self._run(x, h0, self.s_h)
        else:
            out = (self._run(x, h0).double() * self.s_h).float()  # (x, h0 checked above)
        h_n = out[:, -1].unsqueeze(0).clone()  # (its own tensor, as nn.GRU's)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out, h_n = out.squeeze(0 if self.batch_first else 1), h_n.squeeze(1)
        if dtype != out.dtype:  # like nn.GRU (and QuantLinear): outputs in the input's dtype
            out, h_n = out.to(dtype), h_n.to(dtype)
        return out.contiguous(), h_n

    @property
    def config(self) -> GRUConfig:
        return GRUConfig(**self.widths)

    def size_bits(self) -> int:
        return gru_size_bits(self.input_size, self.hidden_size, self.widths)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, batch_first={self.batch_first}, "
                f"widths={getattr(self, 'widths', None)}")


def _quantize_input(x: torch.Tensor, s_x: float) -> torch.Tensor:
    """Input codes int8: clamp(round(x / s_x)) in float64 (QuantGRU.quantize_input)."""
    q = qmax_signed(X_BITS)
    return torch.clamp(torch.round(x.double() / s_x), -q, q).to(torch.int8)


def _input_codes(x: torch.Tensor, s_x: float) -> np.ndarray:
    """_quantize_input's codes as a C-contiguous array, natively for float32 inputs."""
    if x.dtype == torch.float32 and X_BITS == 8:  # the same codes in one native pass
        return _C.gru_quantize_input(np.ascontiguousarray(x.detach().numpy()), s_x)
    return np.ascontiguousarray(_quantize_input(x.detach(), s_x).numpy())


def _state_codes(h: torch.Tensor, q_h: int) -> torch.Tensor:
    """A float state as codes int64: clamp(round(h * q_h))."""
    return torch.clamp(torch.round(h.double() * q_h), -q_h, q_h).to(torch.int64)


def _make_plan(w_ih_codes, w_hh_codes, widths_t, b_ih, b_hh, lut_r, lut_z, lut_n, mults):
    """The native GruPlan (it validates again: shapes, code ranges, table lengths, and packs)."""
    return _C.GruPlan(w_ih_codes.numpy(), w_hh_codes.numpy(), widths_t.tolist(), b_ih.numpy(),
                      b_hh.numpy(), lut_r.numpy(), lut_z.numpy(), lut_n.numpy(),
                      [m.numpy() for m in mults], SHIFT)


# quant_gru's plans, newest first: (the constants, their storages' addresses and versions, the
# GruPlan). The constants are held, so an address cannot be reused by other data while cached.
_OP_PLANS: list = []
_OP_PLANS_KEPT = 8


def _op_plan(consts: list):
    # (inference tensors have no version counter: a checksum of their bytes instead, ~0.3 ms at
    # H 256 against the plan's 0.9)
    key = [(t.data_ptr(), zlib.crc32(t.numpy()) if t.is_inference() else t._version,
            tuple(t.shape), t.dtype) for t in consts]
    for i, (_, k, plan) in enumerate(_OP_PLANS):
        if k == key:
            _OP_PLANS.insert(0, _OP_PLANS.pop(i))
            return plan
    plan = _make_plan(*consts[:8], consts[8:])
    _OP_PLANS.insert(0, (list(consts), key, plan))
    del _OP_PLANS[_OP_PLANS_KEPT:]
    return plan


@torch.library.custom_op("pyquant::quant_gru", mutates_args=())
def quant_gru(x: Tensor, h0: Optional[Tensor], w_ih_codes: Tensor, w_hh_codes: Tensor,
              widths_t: Tensor, b_ih: Tensor, b_hh: Tensor, lut_r: Tensor, lut_z: Tensor,
              lut_n: Tensor, mults: List[Tensor], s_x: float, s_h: float, q_h: int) -> Tensor:
    """QuantGRU's forward on explicit tensors (what torch.jit.trace, torch.compile and
    torch.export record): x float [B, T, I] batch-first, h0 float [B, H] or None -> float32
    [B, T, H], the same bits as the module's eager call. The plan (prepacked weights) is built
    once per set of constants and kept."""
    plan = _op_plan([w_ih_codes, w_hh_codes, widths_t, b_ih, b_hh, lut_r, lut_z, lut_n, *mults])
    hq = None if h0 is None else _state_codes(h0, q_h).to(torch.int8).numpy()
    return torch.from_numpy(plan.forward(_input_codes(x, s_x), hq, get_num_threads(), s_h))


@quant_gru.register_fake
def _(x, h0, w_ih_codes, w_hh_codes, widths_t, b_ih, b_hh, lut_r, lut_z, lut_n, mults, s_x, s_h,
      q_h):
    return x.new_empty((x.shape[0], x.shape[1], w_hh_codes.shape[1]), dtype=torch.float32)
