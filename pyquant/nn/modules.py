"""QuantLinear / QuantConv2d: inference modules with the float modules' call signature.

Weights live as buffers (packed uint8 kernel buffer + float scales), so state_dict(), torch.save
and load_state_dict round-trip them bit for bit; the bias stays float. ``act_range`` holds the
static activation range set by ``pyquant.calibrate`` (NaN = dynamic per-row, the default).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from pyquant import _C
from pyquant._threads import get_num_threads

from . import _backend, _load, ops
from .schemes import scheme_for
from .weight_view import QuantizedWeight


# Decode streams every weight byte once per token, and on 4 KiB pages a cold GEMV ran 10-25%
# slower (Zen 4, tenth session) and 4-14% at 1-4 MB (Zen 5, 32nd session; docs/notes/
# nn_forward.md). Buffers from this size up are kept in huge-page arena memory
# (_C.hugepage_bytes, csrc/core/hugepage_arena.h): most layers' weights are under the 4 MiB
# from which numpy itself asks for huge pages, and those numpy gets are not 2 MiB-aligned.
_HUGEPAGE_MIN_BYTES = 64 << 10
_HUGEPAGE_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float32)


# Threads per native call: at most one per this much work. Waking a thread costs ~3-4 us here
# (Zen 5 VM; 1 / 2 threads at M = 1: int8 1024 x 256 6.3 / 9.5 us, 2048 x 512 14.3 / 14.4,
# 4096 x 1024 50.7 / 36.9; W4 g32 2048 x 512 10.2 / 13.5), more than it saves on less work: a
# recurrent step, one token through a small attention block. (tests/conftest.py's `threads`
# fixture lowers both to 1 so that small test layers still run every thread.)
_THREAD_WEIGHT_BYTES = 512 << 10
_THREAD_MACS = 2 << 20


def call_threads(weight_bytes: int, macs: int) -> int:
    """Threads for one native call over ``weight_bytes`` of weights and ``macs``
    multiply-adds: ``get_num_threads()``, fewer for small work (see above)."""
    n = get_num_threads()
    if n <= 1:
        return 1
    return max(1, min(n, max(weight_bytes // _THREAD_WEIGHT_BYTES, macs // _THREAD_MACS)))


def _want_hugepages(t) -> bool:
    return (_C.HUGEPAGE_ARENAS and t is not None and t.device.type == "cpu"
            and t.dtype in _HUGEPAGE_DTYPES and t.numel() * t.element_size() >= _HUGEPAGE_MIN_BYTES)


def check_finite_weight(w: torch.Tensor) -> None:
    """ValueError for a NaN or infinite weight (it would pick scales and codes silently). The
    sum is one pass without a temporary; only a non-finite sum (or a huge finite one) looks
    element by element."""
    if not bool(torch.isfinite(w.sum())) and not bool(torch.isfinite(w).all()):
        raise ValueError("weight: expected finite values, found NaN or infinity")


def _on_hugepages(t: torch.Tensor) -> torch.Tensor:
    """A copy of t in huge-page arena memory (freed with the tensor)."""
    src = t.contiguous().numpy()
    arr = _C.hugepage_bytes(src.nbytes).view(src.dtype).reshape(src.shape)
    arr[...] = src
    return torch.from_numpy(arr)


def keeping_dtypes(fn):
    """``fn`` of ``Module._apply`` restricted to device moves: ``module.half()`` / ``.double()``
    leave a quantized module's integer codes and float32 constants as they are."""
    def apply(t):
        r = fn(t)
        return r if r.dtype == t.dtype else t.to(device=r.device)
    return apply


def _version(t):
    """A buffer's in-place edit counter (None: no tensor, or an inference tensor, which has none
    and cannot be edited in place outside inference mode)."""
    if t is None:
        return None
    try:
        return t._version
    except RuntimeError:
        return None


def _check_device(x: torch.Tensor, name: str = "x") -> None:
    """A dense tensor; eager calls run the CPU kernels on its memory (traced ones take fake
    tensors). (A numpy array or a list failed later with an AttributeError, a sparse tensor
    inside torch.)"""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.layout is not torch.strided:
        raise TypeError(f"{name}: expected a dense (strided) tensor, got layout {x.layout}")
    if not x.is_cpu and not _tracing():  # (is_cpu: ~0.8 us less per call than device.type)
        raise ValueError(f"{name}: expected a CPU tensor, got one on {x.device} (pyquant's "
                         "kernels run on the CPU; move it with .cpu())")


def _prepare_weights(layer: nn.Module, name: str) -> None:
    """``layer.weight`` as its forward would compute it: an old-style ``weight_norm`` or
    ``spectral_norm``, or a ``torch.nn.utils.prune`` mask recomputes it in a forward pre-hook,
    so after a ``load_state_dict`` the attribute is stale until the next forward (fairseq's and
    torchaudio's wav2vec2 positional conv); the hook is run here. A lazy layer before its first forward holds
    no weights yet: ValueError. (Weights on the meta device make a layer that awaits its
    quantized state dict: _QuantModule._setup.)"""
    if isinstance(layer.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"{name}: {type(layer).__name__} is a lazy layer whose weight is not "
                         "initialized yet; run one forward pass before converting it")
    for hook in list(getattr(layer, "_forward_pre_hooks", {}).values()):  # (a group's view: none)
        if isinstance(hook, (WeightNorm, BasePruningMethod, SpectralNorm)):
            with torch.no_grad():
                hook(layer, ())  # (sets the attribute it computes, as before a forward)


class _InferenceOnly(torch.autograd.Function):
    """Forward: ``run(*xs)`` (autograd off; one tensor or a tuple of them). Backward: a
    RuntimeError naming the layer. Every tensor that may require grad is one of ``xs`` (a
    QuantRNN's input and initial states), so a backward from any output reaches the error."""

    @staticmethod
    def forward(ctx, run, name, *xs):
        ctx.name, ctx.shapes = name, [list(x.shape) for x in xs]
        return run(*xs)

    @staticmethod
    def backward(ctx, *grads):
        # raised by an op when the backward runs, not while torch.compile traces it; one in every
        # input's slot that needs a grad (a compiled graph drops the others as dead code)
        grad = next(g for g in grads if g is not None)
        return (None, None, *[ops.inference_only_grad(grad, shape, ctx.name) if need else None
                              for shape, need in zip(ctx.shapes, ctx.needs_input_grad[2:])])


def layer_name(module: nn.Module) -> str:
    """How errors name a quantized layer: its name in the model quantize_ converted (set there),
    and its class."""
    name = getattr(module, "_pq_name", None)
    return f"{type(module).__name__} {name!r}" if name else type(module).__name__


_AUTOCAST_INPUTS = (torch.float32, torch.float16, torch.bfloat16)  # (float64 is left alone)


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    """The float module's output dtype: the input's, or autocast's on the CPU."""
    if x.dtype in _AUTOCAST_INPUTS and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def _tracing() -> bool:
    """torch.compile / torch.export or torch.jit.trace: the layers must run as torch.library
    ops (a direct numpy call would be recorded as a constant)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


@torch.compiler.disable
def _weight_view(module) -> QuantizedWeight:
    return QuantizedWeight(module, module._float_weight_shape(), module.weight_dtype)


class AwaitsLoad:
    """A quantized layer converted from weights on the meta device awaits its state dict:
    ``_awaiting_load`` is the set of its persistent buffers not loaded yet (a sharded checkpoint
    brings them in parts), False once all are; forward and state_dict are refused until then."""
    _awaiting_load = False

    def _note_loaded(self, state_dict, prefix: str) -> None:
        if self._awaiting_load:
            self._awaiting_load -= {n for n in self._awaiting_load if prefix + n in state_dict}
            if not self._awaiting_load:
                self._awaiting_load = False

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self._awaiting_load:  # (placeholders: a file of them would load as a wrong model)
            raise ValueError(f"{type(self).__name__} at {prefix.rstrip('.') or '(root)'!r}: its "
                             "weights are not loaded yet, so it has no state to save")
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def unloaded_keys(self, prefix: str = "") -> list:
        """The state-dict keys this layer still needs while it awaits its weights."""
        return sorted(prefix + n for n in self._awaiting_load) if self._awaiting_load else []

    def _check_loaded(self) -> None:
        if self._awaiting_load:
            raise ValueError(
                f"{type(self).__name__}: its quantized weights are not loaded yet (it was "
                "converted from weights on the meta device); load a state dict saved from the "
                "quantized model, e.g. model.load_state_dict(state_dict, assign=True) or "
                "pyquant.load_quantized_(model, path)")


class _QuantModule(AwaitsLoad, nn.Module):

    def _setup(self, config, w2d: torch.Tensor, bias, **quant_kw):
        self.config = config
        self.scheme = scheme_for(config)
        self.reference = _backend.is_reference()
        if not self.reference:
            self.scheme.require()
        self.out_features, self.in_features_k = w2d.shape
        # the dtype ``weight`` reports: the float layer's (follows module.half() / .to(dtype))
        self._weight_dtype = w2d.dtype if w2d.is_floating_point() else torch.float32
        # weights on the meta device: a layer awaiting its quantized state dict (its buffers
        # made with every shape and header right, the weight searches skipped; forward and
        # state_dict refused until load_state_dict fills them: pyquant/nn/checkpoint.py)
        skeleton = w2d.is_meta or (bias is not None and bias.is_meta)
        # normal (non-inference) tensors even when converted under inference_mode, so that
        # load_state_dict / calibrate can update them later; made on the CPU also inside a
        # `with torch.device("meta"):` block (empty_weight and these factories say so)
        with torch.inference_mode(False), torch.no_grad():
            if skeleton:
                if quant_kw:
                    raise ValueError(f"{', '.join(quant_kw)}: a layer with weights on the meta "
                                     "device has no values to fit (load the float weights first)")
                bufs = self.scheme.empty_weight(*w2d.shape)
                bias = None if bias is None else torch.zeros(bias.shape, dtype=torch.float32,
                                                             device="cpu")
            else:
                if bias is not None:
                    bias = bias.detach().clone()
                w32 = w2d.detach().float().cpu()
                check_finite_weight(w32)  # (as float32: a float64 1e39 is inf here)
                bufs = self.scheme.quantize_weight(w32, **quant_kw)
            self._buf_names = tuple(bufs)
            for name, t in bufs.items():
                self.register_buffer(name, t.contiguous())
            self.register_buffer("bias", None if bias is None else bias.float().cpu().clone())
            # (float32 whatever the default dtype: the kernels' and the state dict's)
            self.register_buffer("act_range", torch.full((2,), float("nan"), dtype=torch.float32,
                                                         device="cpu"))
        # the persistent buffers still to load (a set: a sharded checkpoint brings them in parts)
        self._awaiting_load = {n for n, t in self._buffers.items() if t is not None} \
            if skeleton else False
        self._observer = None
        self._run = None
        self._config_text = repr(config)  # a constant string for the reference op (compile)
        self._refresh_derived()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def __getstate__(self):
        # the bound call holds arrays of THESE buffers: never pickled or deep-copied with them
        state = self.__dict__.copy()
        state["_run"], state["_bound"], state["_memo"], state["_grouped"] = None, (), {}, None
        state.pop("_weight_values", None)  # (weight_view's float copy: made again on reads)
        # torch.multiprocessing's pickler moves the buffers' storage into shared memory in
        # place (same tensor objects) while it pickles them: rebind before the next call
        self._moved = True
        return state

    def __setstate__(self, state):  # torch.load of a whole module: the file is untrusted too
        super().__setstate__(state)
        _load.check_own_buffers(self)
        self._refresh_derived()

    def _refresh_derived(self):
        """Made here, at conversion and after load_state_dict (and again if a buffer object is
        replaced or edited in place, e.g. by ``module.to`` or ``module.w_scale.mul_(2)``), never
        per call: the state-dict entries that follow from the others (``Scheme.recomputed``:
        WeightOnly's w_off, Int8/LUT2's w_sum, rewritten so that a file or an edit cannot leave
        them stale), the fused forward's constants (``Scheme.derived``: scale x column-sum
        products, panel-layout scales; non-persistent, so the state_dict format stays the packed
        weight + scales) and the native call bound to the buffers."""
        self._run, self._bound, self._moved, self._grouped = None, (), False, None
        self.__dict__.pop("_weight_values", None)  # (weight_view's float copy of the old values)
        if self._awaiting_load:  # (zeros: nothing to derive or bind until the weights load)
            self._packed_bytes = 0
            return
        with torch.inference_mode(False), torch.no_grad(), torch.device("cpu"):
            memo = self.__dict__.setdefault("_memo", {})
            for name, t in self.scheme.recomputed(self._buffers, self.reference, memo).items():
                # a new tensor (not copied into): a shared or assigned w_off is not written to
                self._buffers[name] = t.to(self._buffers[name].dtype).contiguous()
            if not self.reference:
                derived = self.scheme.derived(self._buffers)
                for name, t in derived.items():
                    self.register_buffer(name, t.contiguous(), persistent=False)
                self._rehome_large_buffers()
        bufs = self._buffers
        if not self.reference and all(t is None or (t.device.type == "cpu" and t.is_contiguous())
                                      for t in bufs.values()):
            self._run = self.scheme.bind(bufs, self.act_range, self._gemm_bias())
            if self._run is not None:
                self._grouped = self.scheme.grouped_args(bufs, self.act_range,
                                                          self._gemm_bias())
        # every path checks these versions before a call (_native_run), bound or not
        self._bound = tuple((n, t, _version(t)) for n, t in bufs.items())
        packed = bufs.get("packed")  # (call_threads' weight size, once per refresh, not per call)
        self._packed_bytes = 0 if packed is None else packed.numel() * packed.element_size()

    def _rehome_large_buffers(self) -> None:
        """Large buffers not yet in huge-page arena memory (made at conversion, derived, or
        arrived by unpickling, ``load_state_dict(assign=True)`` or ``module.to``) are copied there
        once (see _HUGEPAGE_MIN_BYTES)."""
        for name, t in self._buffers.items():
            if not _want_hugepages(t) or t.is_shared():  # (shared memory stays shared)
                continue
            if not _C.hugepage_owns(t.data_ptr()):
                self._buffers[name] = _on_hugepages(t)  # (keeps the buffer's persistence)

    def _native_run(self):
        """The bound native forward, rebound first if any buffer object was replaced or edited
        in place (its version counter moved: e.g. ``module.w_scale.mul_(2)``, whose derived
        panel scales would otherwise stay stale) or its storage may have moved (``_moved``:
        after ``_apply``, e.g. ``share_memory()``, or pickling)."""
        bufs = self._buffers
        if self._moved:
            self._refresh_derived()
            return self._run
        for name, t, version in self._bound:
            if bufs.get(name) is not t or (version is not None and t._version != version):
                self._refresh_derived()
                return self._run
        return self._run

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # state dicts may come from files anyone wrote: a damaged or edited weight is a
        # ValueError here (pyquant/nn/_load.py), never a crash at the first forward
        _load.check_state_dict(self, state_dict, prefix)
        _load.as_plain_buffers(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._note_loaded(state_dict, prefix)  # (the post hook then binds the loaded buffers)

    def _apply(self, fn, recurse=True):
        # module.half() / .to(torch.bfloat16) / .double(): the scales, sums, bias and range keep
        # float32 (the kernels' and the state dict's dtype; a float16 column sum overflows).
        # Inputs of any float dtype run, and the output takes the input's dtype.
        out = super()._apply(keeping_dtypes(fn), recurse)
        self._moved = True  # share_memory_() moves storage under the same tensor objects
        try:  # the dtype a float module would have now
            self._weight_dtype = fn(torch.empty(0, dtype=self.weight_dtype)).dtype
        except Exception:  # (a move that an empty tensor cannot make keeps the dtype)
            pass
        return out

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.__dict__.get("_weight_dtype", torch.float32)  # (absent in older pickles)

    def __setattr__(self, name, value):
        if name == "weight":  # (e.g. transformers' tie_weights on a quantized LM head)
            raise AttributeError(
                f"{type(self).__name__}.weight cannot be assigned: the layer holds its own packed "
                "codes, made from the weight it had at quantize_ (a tied LM head: from the tied "
                "embedding), and a new float weight would not reach them; call tie_weights() "
                "or change weights before quantize_, not after")
        super().__setattr__(name, value)

    @property
    def weight(self) -> QuantizedWeight:
        """The float layer's weight as metadata (shape, dtype, device) for model code that reads
        it; its values, on any use, are ``dequantize_weight()`` (pyquant/nn/weight_view.py).
        Under torch.compile a read is a graph break (the view is made in eager Python)."""
        return _weight_view(self)

    def dequantize_weight(self) -> torch.Tensor:
        """float32, in the float layer's weight layout: the exact weight the integer GEMM
        multiplies by (codes x scales), read back from the packed buffer by the kernels. Costs a
        K x K x N integer GEMM: for inspection, not for every call."""
        self._check_loaded()
        with torch.inference_mode(False), torch.no_grad():
            return self._from_nk(self.scheme.dequantize_weight(self._buffers, self.reference))

    def _float_weight_shape(self) -> tuple:
        return (self.out_features, self.in_features_k)

    def _from_nk(self, w: torch.Tensor) -> torch.Tensor:
        """[N, K] -> the float layer's weight layout."""
        return w

    def _gemm_bias(self):
        """The bias the GEMM's epilogue adds (QuantConvTranspose2d's col2im adds its own)."""
        return self.bias

    def _bias_features(self) -> int:
        """The bias's length: one per output column of the GEMM (QuantConvTranspose2d: per
        output channel)."""
        return self.out_features

    def _gemm(self, x2d: torch.Tensor) -> torch.Tensor:
        if not x2d.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {x2d.dtype}")
        if torch.is_grad_enabled() and x2d.requires_grad:
            # a plain call after float layers with parameters: compute the output without a
            # graph, but make a backward through this layer a clear error (not silently zero)
            return _InferenceOnly.apply(self._gemm_impl, layer_name(self), x2d)
        return self._gemm_impl(x2d)

    def _gemm_impl(self, x2d: torch.Tensor) -> torch.Tensor:
        if x2d.dtype != torch.float32:
            x2d = x2d.float()
        tracing = _tracing()
        if self._run is not None and self._observer is None and not tracing:
            run = self._native_run()
            if run is not None:
                # the whole layer in one native call (activation quantization, GEMM, epilogue, bias)
                return torch.from_numpy(run(x2d.contiguous().numpy(), self._threads(x2d.shape[0])))
        self._check_loaded()
        b = self._buffers
        if tracing:
            y = None if self.reference else self.scheme.op(x2d, b, self.act_range,
                                                            self._gemm_bias())
            if y is not None:
                return y
            return torch.ops.pyquant.reference_linear(
                x2d, [b[n] for n in self._buf_names], ",".join(self._buf_names), self.act_range,
                self._gemm_bias(), self._config_text, self.reference, self.out_features)
        x2d = x2d.contiguous()
        if self._observer is not None and x2d.numel():  # (an empty batch has no range)
            self._observer.append(self.scheme.observe(x2d))
        run = self._native_run()  # (also refreshes what follows from an edited buffer)
        if run is not None:
            return torch.from_numpy(run(x2d.numpy(), self._threads(x2d.shape[0])))
        return ops.run_reference(x2d, {n: b[n] for n in self._buf_names}, self.act_range,
                                 self._gemm_bias(),
                                 self.out_features, self.scheme, self.reference)

    def grouped_args(self, check_tracing: bool = True):
        """This layer's arguments to ``scheme.run_grouped`` (several layers of one shape in one
        native call: grouped.run_groups) and ``scheme.run_conv_groups`` (QuantGroupedConv2d), or
        None where its own forward must run (the reference
        backend, calibration, tracing, a layout without a grouped forward). A caller asking for
        many layers checks tracing once itself (``check_tracing=False``)."""
        if self._run is None or self._observer is not None or (check_tracing and _tracing()):
            return None
        if self._native_run() is None:  # (rebinds first after an edited or moved buffer)
            return None
        return self._grouped

    def _threads(self, rows: int) -> int:
        """call_threads for ``rows`` input rows through this layer."""
        return call_threads(self._packed_bytes, rows * self.in_features_k * self.out_features)

    def bytes_read_per_call(self) -> int:
        """Bytes of weights and constants one forward streams (packed codes, the scales in the
        kernel's layout, per-column constants, bias), as opposed to the bytes the module holds
        (which include the state-dict copies of the scales)."""
        names = self.scheme.read_buffers(self._buffers) + ("bias", "act_range")
        return sum(t.numel() * t.element_size() for n in names
                   if (t := self._buffers.get(n)) is not None)

    def _config_repr(self) -> str:
        dynamic = self.act_range.is_meta or torch.isnan(self.act_range).any()
        static = "" if dynamic else ", static_act_range=" + str(
            [round(v, 5) for v in self.act_range.tolist()])
        ref = ", reference=True" if self.reference else ""
        return f"config={self.config!r}{static}{ref}"


def _refresh_after_load(module, incompatible_keys):
    module._refresh_derived()


class QuantLinear(_QuantModule):
    """Quantized ``nn.Linear``: ``y = x @ W.T + b`` for any leading batch dims."""

    def __init__(self, in_features: int, out_features: int, weight: torch.Tensor, bias, config, **quant_kw):
        super().__init__()
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (out_features, in_features):
            got = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise ValueError(f"weight: expected shape [{out_features}, {in_features}] "
                             f"(out_features, in_features), got {got}")
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ValueError(f"bias: expected shape [{out_features}], got {list(bias.shape)}")
        self.in_features = in_features
        self._setup(config, weight, bias, **quant_kw)

    @classmethod
    def from_conv1d(cls, conv1d: nn.Module, config, **quant_kw) -> "QuantLinear":
        """From transformers' ``Conv1D`` (GPT-2 family): ``y = x @ W + b``, W stored ``[in, out]``."""
        _prepare_weights(conv1d, "conv1d")
        w = conv1d.weight.detach()
        m = cls(w.shape[0], w.shape[1], w.t(), conv1d.bias, config, **quant_kw)
        m._from_conv1d = True  # (dequantize_ gives a Conv1D back)
        return m

    @classmethod
    def from_linear(cls, linear: nn.Linear, config, **quant_kw) -> "QuantLinear":
        """``quant_kw``: scheme options, e.g. ``hessian=`` (GPTQ for WeightOnlyConfig, SparseGPT for
        SparqConfig(sparse24=True))."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        _prepare_weights(linear, "linear")
        if linear.weight.numel() == 0:
            raise ValueError(f"linear: in_features={linear.in_features}, out_features="
                             f"{linear.out_features}: a layer without weights has nothing to "
                             "quantize (quantize_ leaves it float)")
        return cls(linear.in_features, linear.out_features, linear.weight, linear.bias, config, **quant_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_device(x)
        dims = x.dim()
        if dims == 0:
            raise ValueError(f"x: expected [..., {self.in_features}], got a 0-d tensor")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim {self.in_features}, got shape {tuple(x.shape)}")
        if dims == 2:  # the common case without the reshapes (each ~1 us)
            return self.linear_rows(x)
        y = self.linear_rows(x.reshape(-1, self.in_features))
        return y.reshape(*x.shape[:-1], self.out_features)

    def linear_rows(self, x2d: torch.Tensor) -> torch.Tensor:
        """The forward of a 2-D CPU input [M, in_features] whose shape the caller has checked,
        without nn.Module's call machinery (hooks do not run): for containers that call many
        small layers per step (QuantExperts, QuantMultiheadAttention), ~2 us less per call."""
        y = self._gemm(x2d)
        dtype = _out_dtype(x2d)
        return y if y.dtype == dtype else y.to(dtype)

    def rows_fn(self, grad: bool = False):
        """A callable for many calls on 2-D float32 CPU rows in a loop (QuantRNN's steps): the
        bound native forward (~2 us less per call than ``linear_rows``) where it applies, else
        ``linear_rows``. ``grad``: the rows may require grad (the autograd guard must run)."""
        if grad or self._run is None or self._observer is not None or _tracing():
            return self.linear_rows
        run = self._native_run()
        if run is None:
            return self.linear_rows
        cache = {}  # threads by row count (a packed sequence's batch shrinks)

        def rows(x2d):
            n = x2d.shape[0]
            threads = cache.get(n) or cache.setdefault(n, self._threads(n))
            return torch.from_numpy(run(x2d.contiguous().numpy(), threads))
        return rows

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._config_repr()}")


def _pad(conv, x):
    """(x padded explicitly if needed, padding left for unfold)."""
    kh, kw = conv.kernel_size
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return x, (0, 0)
        pads = []  # 'same': total d*(k-1) per dim, the extra on the right/bottom as in PyTorch
        for d, k in ((conv.dilation[1], kw), (conv.dilation[0], kh)):
            tot = d * (k - 1)
            pads += [tot // 2, tot - tot // 2]
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        return F.pad(x, pads, mode=mode), (0, 0)
    if conv.padding_mode != "zeros":
        ph, pw = conv.padding
        return F.pad(x, (pw, pw, ph, ph), mode=conv.padding_mode), (0, 0)
    return x, conv.padding


def im2col(conv, x: torch.Tensor):
    """x [B, C, H, W] -> (cols [B*Ho*Wo, kh*kw*C] in the channel-fastest K order of
    QuantConv2d's weight, (B, Ho, Wo)); ``conv``: an nn.Conv2d or a QuantConv2d."""
    xp, pad = _pad(conv, x)
    b, c, h, w = xp.shape
    kh, kw = conv.kernel_size
    ho = (h + 2 * pad[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
    wo = (w + 2 * pad[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
    if b == 0:  # an empty batch: the view below cannot infer L
        return xp.new_zeros((0, kh * kw * c)), (b, ho, wo)
    cols = F.unfold(xp, (kh, kw), dilation=conv.dilation, padding=pad, stride=conv.stride)
    # [B, C*kh*kw, L] -> [B, C, kh*kw, L] -> [B, L, kh*kw, C] -> [B*L, kh*kw*C]
    return cols.view(b, c, kh * kw, -1).permute(0, 3, 2, 1).reshape(-1, kh * kw * c), (b, ho, wo)


def batched_image(x: torch.Tensor, channels: int):
    """(x as [B, C, H, W], whether it came unbatched [C, H, W]) after the device and shape checks
    of a conv's input."""
    _check_device(x)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"x: expected [B, {channels}, H, W], got shape {tuple(x.shape)}")
    return x, unbatched


def smaller_than_kernel(g, xp: torch.Tensor, pad) -> bool:
    """The (explicitly padded) input xp, with ``pad`` still to add, is smaller than the dilated
    kernel of geometry g in either dimension."""
    (kh, kw), (dh, dw) = g.kernel_size, g.dilation
    return any(size + 2 * p < d * (k - 1) + 1 for size, p, d, k in
               ((xp.shape[2], pad[0], dh, kh), (xp.shape[3], pad[1], dw, kw)))


def native_conv_geometry(g, pad, channels_last: bool):
    """The native conv call's geometry (kh, kw, sh, sw, ph, pw, dh, dw, nchw) for geometry g and
    the padding still to add, or None beyond the call's limits."""
    (kh, kw), (sh, sw), (dh, dw) = g.kernel_size, g.stride, g.dilation
    geometry = (kh, kw, sh, sw, pad[0], pad[1], dh, dw, 0 if channels_last else 1)
    return None if max(geometry) > _C.CONV_MAX_GEOMETRY else geometry


def native_conv_image(xp: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The (explicitly padded) input as the native conv reads it: NHWC (a view of a
    channels_last input) or NCHW (transposed there), float32, contiguous."""
    return (xp.permute(0, 2, 3, 1) if channels_last else xp).to(torch.float32).contiguous()


def output_pixels(image: torch.Tensor, channels: int, g) -> int:
    """About the output pixels (GEMM rows) of a native conv on ``image`` (call_threads' work)."""
    return image.numel() // max(1, channels) // (g.stride[0] * g.stride[1])


class QuantConv2d(_QuantModule):
    """Quantized ``nn.Conv2d`` (groups=1) as im2col + GEMM.

    K is ordered channel-fastest ``(ky, kx, c)`` so SPARQ pairs (k, k+1) are two adjacent input
    channels at the same tap; the weight is permuted the same way (``[O, C, kh, kw] -> [O, kh, kw, C]``).
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, config, **quant_kw) -> "QuantConv2d":
        """``quant_kw``: scheme options, e.g. ``hessian=`` over the im2col K order (GPTQ)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
        return cls._converted(conv, config, **quant_kw)

    def _geometry(self):
        """The 2-D geometry the kernels run (kernel_size, stride, dilation, padding,
        padding_mode): this layer's own."""
        return self

    @classmethod
    def _converted(cls, conv: nn.Module, config, **quant_kw):
        """The layer of ``conv``'s weights and attributes (an nn.Conv2d, or an nn.Conv1d for
        QuantConv1d)."""
        _prepare_weights(conv, "conv")
        if conv.groups != 1:
            raise ValueError(f"conv: groups={conv.groups}: {cls.__name__} takes groups=1 (a "
                             f"grouped conv: QuantGrouped{cls.__name__[5:]}.from_conv)")
        if conv.weight.numel() == 0:
            raise ValueError(f"conv: {conv.in_channels} -> {conv.out_channels} channels: a layer "
                             "without weights has nothing to quantize (quantize_ leaves it float)")
        m = cls()
        m.in_channels, m.out_channels = conv.in_channels, conv.out_channels
        # the float layer's own attributes (model code reads them, e.g. Whisper conv1.stride[0])
        m.kernel_size, m.stride, m.dilation = conv.kernel_size, conv.stride, conv.dilation
        m.padding, m.padding_mode = conv.padding, conv.padding_mode
        # [O, C, kh, kw] -> [O, kh, kw, C] -> [O, kh*kw*C]: K channel-fastest
        w = conv.weight.detach().view(conv.out_channels, conv.in_channels,
                                      *m._geometry().kernel_size)
        w2d = w.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
        m._setup(config, w2d, conv.bias, **quant_kw)
        return m

    def _float_weight_shape(self) -> tuple:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def _from_nk(self, w: torch.Tensor) -> torch.Tensor:
        # K is channel-fastest: [O, kh*kw*C] -> [O, kh, kw, C] -> [O, C, kh, kw]
        kh, kw = self._geometry().kernel_size
        return w.view(self.out_channels, kh, kw, self.in_channels).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, unbatched = batched_image(x, self.in_channels)
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
        g = self._geometry()
        xp, pad = _pad(g, x)
        if smaller_than_kernel(g, xp, pad):
            raise ValueError(f"x: input of shape {tuple(x.shape)} is smaller than the "
                             f"kernel {self.kernel_size} (dilation {self.dilation}) after padding")
        # channels_last strides (also of a strided view of one): a channels_last output
        channels_last = x.stride(1) < x.stride(3)
        y = self._native_conv(xp, pad, channels_last)
        if y is None:
            cols, (b, ho, wo) = im2col(g, x)
            y = self._gemm(cols)
            # [B*L, O] -> [B, Ho, Wo, O] -> [B, O, Ho, Wo] (that is channels_last)
            y = y.view(b, ho, wo, self.out_channels).permute(0, 3, 1, 2)
            if not channels_last:
                y = y.contiguous()
        y = y.to(_out_dtype(x))
        return y[0] if unbatched else y

    def _native_conv(self, xp: torch.Tensor, pad, channels_last: bool):
        """The whole layer in one native call on the (explicitly padded) input ``xp``: im2col
        chunks made in cache and fed to the fused forward (csrc/forward/conv.h), never the full
        im2col matrix; traced (torch.compile, torch.export, torch.jit.trace) as the config's
        torch.library op with the geometry. None where it does not apply (calibrating, the
        reference backend, a layout without an op). ``channels_last``: the output is
        channels_last (the caller's input was)."""
        self._check_loaded()
        if self.reference or self._observer is not None or self.in_features_k == 0:
            return None
        g = self._geometry()
        geometry = native_conv_geometry(g, pad, channels_last)
        if geometry is None:  # (beyond its limits: the im2col path)
            return None
        if _tracing():
            if not self.scheme.has_op(self._buffers):  # (e.g. SPARQ 2:4)
                return None

            def conv(image):
                return self.scheme.op(image, self._buffers, self.act_range, self.bias,
                                      list(geometry))
        else:
            run = None if self._run is None else self._native_run()
            if run is None:
                return None

            def conv(image):
                pixels = output_pixels(image, self.in_channels, g)
                return torch.from_numpy(run(image.detach().numpy(), self._threads(pixels), geometry))

        image = native_conv_image(xp, channels_last)
        if torch.is_grad_enabled() and image.requires_grad:  # see _gemm
            y = _InferenceOnly.apply(conv, layer_name(self), image)
        else:
            y = conv(image)
        # [B, Ho, Wo, N] -> its NCHW view (channels_last), outside the autograd Function so
        # that in-place ops after the layer are allowed
        return y.permute(0, 3, 1, 2) if channels_last else y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}, {self._config_repr()}")


class ConvGeometry(NamedTuple):
    """The 2-D geometry attributes the conv paths read (a NamedTuple: torch.compile traces it)."""
    kernel_size: tuple
    stride: tuple
    dilation: tuple
    padding: tuple | str
    padding_mode: str


def conv1d_geometry(conv) -> ConvGeometry:
    """An nn.Conv1d (or QuantConv1d) as the 2-D conv it equals on [B, C, 1, L] inputs: kernel
    (1, k)."""
    padding = conv.padding if isinstance(conv.padding, str) else (0, conv.padding[0])
    return ConvGeometry(kernel_size=(1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                        dilation=(1, conv.dilation[0]), padding=padding,
                        padding_mode=conv.padding_mode)


def conv1d_forward(forward_2d, x: torch.Tensor, channels: int) -> torch.Tensor:
    """A 1-D conv's input [B, C, L] or [C, L], checked, through the 2-D forward on [B, C, 1, L]."""
    _check_device(x)
    if x.dim() not in (2, 3) or x.shape[-2] != channels:
        raise ValueError(f"x: expected [B, {channels}, L] or [{channels}, L], "
                         f"got shape {tuple(x.shape)}")
    return forward_2d(x.unsqueeze(-2)).squeeze(-2).contiguous()


class QuantConv1d(QuantConv2d):
    """Quantized ``nn.Conv1d`` (groups=1): QuantConv2d with a (1, k) kernel on [B, C, 1, L]
    (speech front ends: wav2vec2 / HuBERT feature encoders, Whisper's stem; temporal CNNs).
    Its attributes are nn.Conv1d's (``kernel_size=(k,)``, ``stride=(s,)``, ...: model code reads
    them), and ``weight`` / ``dequantize_weight()`` have nn.Conv1d's [O, C, k] shape."""

    @classmethod
    def from_conv(cls, conv: nn.Conv1d, config, **quant_kw) -> "QuantConv1d":
        """``quant_kw``: scheme options, e.g. ``hessian=`` over the im2col K order (GPTQ)."""
        if not isinstance(conv, nn.Conv1d):
            raise TypeError(f"conv: expected an nn.Conv1d, got {type(conv).__name__}")
        return cls._converted(conv, config, **quant_kw)

    def _geometry(self):
        return conv1d_geometry(self)

    def _float_weight_shape(self) -> tuple:
        return (self.out_channels, self.in_channels, self.kernel_size[0])

    def _from_nk(self, w: torch.Tensor) -> torch.Tensor:
        return super()._from_nk(w).squeeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv1d_forward(super().forward, x, self.in_channels)

