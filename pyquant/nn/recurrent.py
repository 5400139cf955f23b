"""QuantRNN: nn.LSTM / nn.GRU / nn.RNN with their matmuls on pyquant's kernels.

PyTorch's quantize_dynamic converts recurrent layers; here they convert to one module that keeps
the float layer's forward contract (``output, h_n`` or ``output, (h_n, c_n)``; batch_first,
unbatched inputs, PackedSequence, num_layers, bidirectional, proj_size, dropout between layers in
training mode). Per layer and direction the input projection of every time step is one QuantLinear
call (``ih_l{k}[_reverse]``, both biases folded in where they only add) and each step one
QuantLinear call on the state (``hh_l{k}``; ``hr_l{k}`` for proj_size), the gate arithmetic in
float as PyTorch's cell. The LSTM's gate rows are stored in (i, f, o, g) order (one sigmoid call
per step); GRU keeps (r, z, n) with ``b_hn`` inside ``hh`` (the reset gate multiplies it).

Every config runs each layer and direction's whole time loop in one native call
(csrc/forward/recurrent.h: the state matmul through the fused forward, the gates in C++; traced,
as the family's torch.library op ``pyquant::int8_recurrent`` / ``lowbit_recurrent`` /
``lut_recurrent`` / ``sparq_recurrent``); calibration, the reference backend, bf16 / autocast and
inputs that need the autograd guard run the loop below, a few torch ops and a layer call per
step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .configs import LUT2Config, SparqConfig
from .modules import QuantLinear, _check_device, _InferenceOnly, _tracing, layer_name

# Every config runs a layer's time loop in one native call (csrc/forward/recurrent.h). Two cost
# more per step than PyTorch's fused fp32 LSTM cell on narrow layers: LUT2's "mse" scale search
# per row and 2:4 SPARQ's per-channel pairing. quantize_'s default filter converts their LSTMs
# from this hidden size (Intel Xeon model 207, 2 layers, 100 steps, batch 1, 1 thread, ms fp32 /
# Int8 / LUT2 mse / SPARQ / 2:4 SPARQ: LSTM 64 0.78 / 0.50 / 1.17 / 0.58 / 0.88, LSTM 128 1.86 /
# 0.82 / 1.52 / 0.95 / 1.68); every other layer and config wins from any size (GRU 16: 4.92 /
# 0.30 / 0.88 / 0.35 / 0.40; the per-step Python loop before the 35th session took 14 ms).
MIN_LSTM_HIDDEN = 128


def slow_narrow_steps(config) -> bool:
    """config's steps lose to PyTorch's fp32 LSTM cell below MIN_LSTM_HIDDEN."""
    return (isinstance(config, LUT2Config) and config.a_scale == "mse") or (
        isinstance(config, SparqConfig) and config.sparse24)


def worth_converting(module: nn.Module, config) -> bool:
    """A recurrent layer runs faster as a QuantRNN of config than in PyTorch's cell."""
    return (module.mode != "LSTM" or module.hidden_size >= MIN_LSTM_HIDDEN
            or not slow_narrow_steps(config))


def is_rnn(module: nn.Module) -> bool:
    """nn.LSTM, nn.GRU or nn.RNN itself, or a subclass that keeps its forward."""
    for base in (nn.LSTM, nn.GRU, nn.RNN):
        if isinstance(module, base):
            return type(module).forward is base.forward
    return False


def _lstm_rows(w: torch.Tensor) -> torch.Tensor:
    """torch's LSTM gate rows (i, f, g, o) -> (i, f, o, g)."""
    i, f, g, o = w.chunk(4)
    return torch.cat([i, f, o, g])


def _set_rows(state: torch.Tensor, private: bool, n: int, rows: torch.Tensor):
    """state[:n] = rows, into a private copy first unless state already is one (it may be a
    step's output or the caller's h0 / c0). Returns (state, True)."""
    if not private:
        state = state.clone()
    state[:n] = rows
    return state, True


class QuantRNN(nn.Module):
    """Quantized nn.LSTM / nn.GRU / nn.RNN (see the module docstring); built by quantize_."""

    def __init__(self, rnn: nn.Module, config):
        super().__init__()
        if not isinstance(rnn, nn.RNNBase):
            raise TypeError(f"rnn: expected an nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}")
        self.mode = rnn.mode  # LSTM, GRU, RNN_TANH or RNN_RELU
        for a in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                  "bidirectional", "proj_size"):
            setattr(self, a, getattr(rnn, a))
        self.config = config
        lstm = self.mode == "LSTM"
        for layer in range(self.num_layers):
            for sfx in self._suffixes():
                p = {n: getattr(rnn, f"{n}_l{layer}{sfx}").detach()
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                     if hasattr(rnn, f"{n}_l{layer}{sfx}")}
                w_ih, w_hh = p["weight_ih"], p["weight_hh"]
                b_ih, b_hh = p.get("bias_ih"), p.get("bias_hh")
                if lstm:  # the two biases only add: both on the input projection
                    w_ih, w_hh = _lstm_rows(w_ih), _lstm_rows(w_hh)
                    if b_ih is not None:
                        b_ih, b_hh = _lstm_rows(b_ih + b_hh), None
                setattr(self, f"ih_l{layer}{sfx}",
                        QuantLinear(w_ih.shape[1], w_ih.shape[0], w_ih, b_ih, config))
                setattr(self, f"hh_l{layer}{sfx}",
                        QuantLinear(w_hh.shape[1], w_hh.shape[0], w_hh, b_hh, config))
                if "weight_hr" in p:
                    w = p["weight_hr"]
                    setattr(self, f"hr_l{layer}{sfx}",
                            QuantLinear(w.shape[1], w.shape[0], w, None, config))

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def flatten_parameters(self) -> None:
        """nn.RNNBase's cuDNN hook, which model code calls before each forward: nothing to do."""

    @property
    def _out_size(self) -> int:
        return self.proj_size or self.hidden_size

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_idx, unsorted_idx = input
            _check_device(data, "input")
            self._check_width(data, "input.data")
            sizes = batch_sizes.tolist()
            batch, batched = sizes[0] if sizes else 0, True
        else:
            _check_device(input, "input")
            if input.dim() not in (2, 3):
                raise ValueError(f"input: expected a 2-D (unbatched) or 3-D tensor [..., "
                                 f"{self.input_size}], got shape {list(input.shape)}")
            self._check_width(input, "input")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if self.batch_first and batched:
                x = x.transpose(0, 1)
            steps, batch = x.shape[:2]
            data, sizes = x.reshape(steps * batch, self.input_size), [batch] * steps
            sorted_idx = unsorted_idx = None
        h0, c0 = self._initial_state(hx, batch, batched, data.dtype)
        if sorted_idx is not None:  # the states follow the packed (length-sorted) batch order
            h0 = h0.index_select(1, sorted_idx)
            c0 = None if c0 is None else c0.index_select(1, sorted_idx)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d, sfx in enumerate(self._suffixes()):
                i = layer * len(self._suffixes()) + d
                out, h, c = self._direction(layer, sfx, data, sizes, h0[i],
                                            None if c0 is None else c0[i], reverse=d == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            data = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                data = F.dropout(data, self.dropout)
        h_n = torch.stack(h_n)
        c_n = torch.stack(c_n) if self.mode == "LSTM" else None
        if unsorted_idx is not None:
            h_n = h_n.index_select(1, unsorted_idx)
            c_n = None if c_n is None else c_n.index_select(1, unsorted_idx)
        if packed:
            output = PackedSequence(data, batch_sizes, sorted_idx, unsorted_idx)
        else:
            output = data.view(steps, batch, self._out_size * len(self._suffixes()))
            if self.batch_first and batched:
                output = output.transpose(0, 1)
            if not batched:
                output, h_n = output.squeeze(1), h_n.squeeze(1)
                c_n = None if c_n is None else c_n.squeeze(1)
        return output, ((h_n, c_n) if self.mode == "LSTM" else h_n)

    def _direction(self, layer: int, sfx: str, data, sizes: list, h, c, reverse: bool):
        """One layer and direction over the (packed or padded-to-packed) rows: step t runs rows
        [offset_t, offset_t + sizes[t]), the first sizes[t] states (longest sequences first)."""
        xp = self._modules[f"ih_l{layer}{sfx}"].linear_rows(data.contiguous())
        native = self._native_direction(layer, sfx, xp, sizes, h, c, reverse)
        if native is not None:
            return native
        fast = xp.dtype == torch.float32 and not (torch.is_grad_enabled() and (
            xp.requires_grad or h.requires_grad or (c is not None and c.requires_grad)))
        hh = self._modules[f"hh_l{layer}{sfx}"].rows_fn(grad=not fast)
        hr = self._modules.get(f"hr_l{layer}{sfx}")
        hr = None if hr is None else hr.rows_fn(grad=not fast)
        offsets = [0]
        for n in sizes[:-1]:
            offsets.append(offsets[-1] + n)
        # While every sequence runs, the states are rebound to each step's result; once a packed
        # batch's shorter sequences have ended, the rest are written into a private copy (h may
        # be a step's output or the caller's h0, neither of which may change).
        full, h_private, c_private = len(h), False, False
        h = h.to(xp.dtype)  # (autocast: the projections' dtype)
        c = None if c is None else c.to(xp.dtype)
        width, mode = self.hidden_size, self.mode
        order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
        outs = [None] * len(sizes)
        for t in order:
            r0, n = offsets[t], sizes[t]
            hv = h if n == full else h[:n]
            g = xp[r0:r0 + n]
            if mode == "LSTM":
                g = g + hh(hv)
                s = g[:, :3 * width].sigmoid()  # (i, f, o) in one call
                cv = torch.addcmul(s[:, width:2 * width] * (c if n == full else c[:n]),
                                   s[:, :width], g[:, 3 * width:].tanh())
                new = s[:, 2 * width:] * cv.tanh()
                if hr is not None:
                    new = hr(new)
                if n == full:
                    c, c_private = cv, True
                else:
                    c, c_private = _set_rows(c, c_private, n, cv)
            elif mode == "GRU":
                gh = hh(hv)
                rz = (g[:, :2 * width] + gh[:, :2 * width]).sigmoid()
                cand = torch.addcmul(g[:, 2 * width:], rz[:, :width], gh[:, 2 * width:]).tanh()
                new = torch.lerp(cand, hv, rz[:, width:])  # (1 - z) * n + z * h
            else:
                new = g + hh(hv)
                new = new.tanh() if mode == "RNN_TANH" else new.relu()
            if n == full:
                h, h_private = new, False
            else:
                h, h_private = _set_rows(h, h_private, n, new)
            outs[t] = new
        outs = [o for o in outs if o is not None]
        out = torch.cat(outs) if outs else xp.new_empty(0, self._out_size)
        return out, h, c

    def _native_direction(self, layer: int, sfx: str, xp, sizes: list, h, c, reverse: bool):
        """_native_loop (traced: the family's op) in every call: float32 copies of the rows and
        states (float16 / bfloat16 / float64: the outputs in the rows' dtype, as the step loop
        gives them, the gates in float32), and in a plain call whose input or states require
        grad, outputs whose backward is the inference-only error (as a QuantLinear's); None where
        the native loop does not apply."""
        states = [t for t in (h, c) if t is not None]
        native = self._native_loop(layer, sfx, xp.detach().float(), sizes, h.detach().float(),
                                   None if c is None else c.detach().float(), reverse)
        if native is None:
            return None
        results = tuple(t if t.dtype == xp.dtype else t.to(xp.dtype)
                        for t in native if t is not None)
        # (torch.jit.trace would record the wrapper as a Python op returning these outputs)
        if (torch.is_grad_enabled() and not torch.jit.is_tracing()
                and any(t.requires_grad for t in (xp, *states))):
            results = _InferenceOnly.apply(lambda *_: results, layer_name(self), xp, *states)
        return results if c is not None else (*results, None)

    def _native_loop(self, layer: int, sfx: str, xp, sizes: list, h, c, reverse: bool):
        """_direction's loop in one native call (csrc/forward/recurrent.h: the state matmul
        through the fused forward, the gates in C++) where the layers are bound (traced: the
        family's op); else None (the loop below runs instead)."""
        hh = self._modules[f"hh_l{layer}{sfx}"]
        hr = self._modules.get(f"hr_l{layer}{sfx}")
        if sizes and sizes[0] == 0:  # an empty batch: the step loop gives the empty outputs
            return None
        if _tracing():  # torch.compile / export: the loop as one op per layer and direction
            if hh.reference or (hr is not None and hr.reference):
                return None
            out = hh.scheme.recurrent_op(xp, torch.tensor(sizes, dtype=torch.int64), reverse,
                                         self.mode, h, c, hh, hr)
            return None if out is None else (out[0], out[1], out[2] if c is not None else None)
        hh_args = hh.grouped_args()  # (None: calibrating, reference backend, ...)
        hr_args = None if hr is None else hr.grouped_args()
        if hh_args is None or (hr is not None and hr_args is None):
            return None
        threads = hh._threads(sizes[0] if sizes else 0)
        result = hh.scheme.run_recurrent(
            xp.contiguous().numpy(), np.array(sizes, dtype=np.int64), reverse, self.mode,
            h.to(torch.float32).contiguous().numpy(),
            None if c is None else c.to(torch.float32).contiguous().numpy(), hh_args, hr_args,
            threads)
        if result is None:
            return None
        y, h_n, c_n = result
        return (torch.from_numpy(y), torch.from_numpy(h_n).to(h.dtype),
                None if c_n is None else torch.from_numpy(c_n).to(c.dtype))

    def _check_width(self, x: torch.Tensor, name: str) -> None:
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected last dim {self.input_size} (input_size), got shape "
                             f"{list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")

    def _initial_state(self, hx, batch: int, batched: bool, dtype):
        """(h0 [L*D, B, out], c0 [L*D, B, H] or None), zeros where not given; unbatched states
        get their batch dim."""
        layers = self.num_layers * len(self._suffixes())
        lstm = self.mode == "LSTM"
        if hx is None:
            h0 = torch.zeros(layers, batch, self._out_size, dtype=dtype)
            return h0, (torch.zeros(layers, batch, self.hidden_size, dtype=dtype) if lstm else None)
        if lstm and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("hx: expected a tuple (h_0, c_0) for an LSTM")
        if not lstm and not isinstance(hx, torch.Tensor):
            raise TypeError(f"hx: expected a tensor h_0 for {self.mode}, got {type(hx).__name__}")
        parts = list(hx) if lstm else [hx]
        widths = [self._out_size, self.hidden_size][:len(parts)]
        states = []
        for name, t, width in zip(("h_0", "c_0"), parts, widths):
            _check_device(t, "hx")
            if t.dtype != dtype:  # (as nn.LSTM / nn.GRU: no silent cast)
                raise TypeError(f"hx: expected {name} of the input's dtype {dtype}, got {t.dtype}")
            want = (layers, batch, width) if batched else (layers, width)
            if tuple(t.shape) != want:
                raise ValueError(f"hx: expected {name} of shape {list(want)} (num_layers x "
                                 f"directions{', batch' if batched else ''}, size), got "
                                 f"{list(t.shape)}")
            states.append(t if batched else t.unsqueeze(1))
        return states[0], (states[1] if lstm else None)

    def extra_repr(self) -> str:
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        return (f"mode={self.mode}, {self.input_size}, {self.hidden_size}, num_layers="
                f"{self.num_layers}, bidirectional={self.bidirectional}, batch_first="
                f"{self.batch_first}{extra}, config={self.config!r}")
