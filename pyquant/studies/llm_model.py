"""The model side of the LLM decode study (``python -m pyquant.studies.llm``).

A Llama-architecture decoder built from a ``transformers.LlamaConfig`` at a real model's shapes
(or an OLMoE mixture-of-experts decoder, ``OlmoeConfig``, for the ``olmoe-*`` presets)
with random weights (speed does not depend on the values, and no checkpoint can be downloaded),
one variant per config sharing the fp32 weights where it can, a greedy decode loop with the KV
cache (prefill and decode timed separately), the bytes a decode step reads, and a per-token time
split (``profile_decode``).
"""
from __future__ import annotations

import copy
import importlib.util
import inspect
import itertools
import time
import warnings

import torch
from torch import nn

import pyquant
from pyquant.nn.experts import is_experts

EXTRA_HINT = "pip install 'pyquant[llm]'  (transformers>=4.40, tqdm, matplotlib)"


def require_transformers():
    """The ``transformers`` module, or a clear error naming the extra (before any work starts)."""
    if importlib.util.find_spec("transformers") is None:
        raise ImportError(f"pyquant.studies.llm needs the 'transformers' package: {EXTRA_HINT}")
    import transformers

    return transformers


# Shapes of real models (llama architecture). tinyllama-1.1b: TinyLlama/TinyLlama-1.1B-Chat-v1.0.
PRESETS = {
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                           num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
    # meta-llama/Llama-3.2-1B: its LM head is its embedding table (tied), 21% of the weights
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=True),
    # a mid-size stand-in (~0.2 B parameters) for when the full shape does not fit the time budget
    "mid": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                num_attention_heads=16, num_key_value_heads=4, vocab_size=32000),
    # small enough that every config converts and runs in seconds (the test model)
    "quick": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2, vocab_size=4096),
    # mixture of experts (transformers' OlmoeForCausalLM; its experts are 3-D weights that
    # quantize_ converts to QuantExperts and quantize_dynamic leaves float). allenai/OLMoE-1B-7B's
    # shapes with 4 of its 16 layers (all 16 are 27 GB in fp32), and a test-sized one
    "olmoe-1b-7b-4l": dict(arch="olmoe", hidden_size=2048, intermediate_size=1024,
                           num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=16,
                           vocab_size=50304, num_experts=64, num_experts_per_tok=8,
                           eos_token_id=50279),
    "olmoe-quick": dict(arch="olmoe", hidden_size=512, intermediate_size=256, num_hidden_layers=4,
                        num_attention_heads=8, num_key_value_heads=8, vocab_size=4096,
                        num_experts=8, num_experts_per_tok=2, eos_token_id=0),
    # the quick shape with a tied table (tests)
    "quick-tied": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=2, vocab_size=4096,
                       tie_word_embeddings=True),
}

# config name -> what it is (order = table order)
CONFIGS = {
    "fp32": "float32 weights and activations (PyTorch)",
    "bf16": "bfloat16 weights and activations (PyTorch; only where the CPU has native bf16)",
    "torch-int8": "torch.ao.quantization.quantize_dynamic int8 (per-tensor weights, dynamic "
                  "activations; nn.Linear only: an MoE model's 3-D experts stay float)",
    "pq-int8": "pyquant Int8Config() (W8A8; act_bits='auto': 7-bit activations on AVX2 without VNNI)",
    "pq-int8-a8": "pyquant Int8Config(act_bits=8) (W8A8, full 8-bit activations on every CPU)",
    "pq-w4g32": "pyquant WeightOnlyConfig(4, 32) (W4A8)",
    "pq-w2g32": "pyquant WeightOnlyConfig(2, 32) (W2A8)",
    "pq-lut2": "pyquant LUT2Config() (W2A2 lookup tables)",
    "pq-sparq24": "pyquant SparqConfig(sparse24=True) (2:4-pruned int8 weights, 5 bits each; 4-bit "
                  "SPARQ activations; pruning without fine-tuning: a speed row, not an accuracy one)",
}


def pyquant_config(name: str):
    return {"pq-int8": pyquant.Int8Config(), "pq-int8-a8": pyquant.Int8Config(act_bits=8),
            "pq-w4g32": pyquant.WeightOnlyConfig(4, 32),
            "pq-w2g32": pyquant.WeightOnlyConfig(2, 32), "pq-lut2": pyquant.LUT2Config(),
            "pq-sparq24": pyquant.SparqConfig(sparse24=True)}.get(name)


def bf16_native() -> tuple[bool, str]:
    """(does this CPU compute bf16 natively, why). Without avx512_bf16 / AMX (x86) or the bf16
    extension (Arm), PyTorch emulates bf16 matmuls through float32: slower than fp32, not a
    config anyone would deploy."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    has = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    cap = torch.backends.cpu.get_cpu_capability()
    if has:
        return True, f"cpu flags {has} (torch capability {cap})"
    return False, f"no avx512_bf16/amx_bf16/bf16 cpu flag (torch capability {cap})"


def build_model(preset: str = "quick", seed: int = 0) -> nn.Module:
    """A ``LlamaForCausalLM`` (``OlmoeForCausalLM`` for the olmoe presets) in eval mode with
    random float32 weights (HF's init: normal(0, 0.02))."""
    transformers = require_transformers()
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    shape = dict(PRESETS[preset])
    arch = shape.pop("arch", "llama")
    tied = shape.pop("tie_word_embeddings", False)
    config_cls, model_cls = {"llama": ("LlamaConfig", "LlamaForCausalLM"),
                             "olmoe": ("OlmoeConfig", "OlmoeForCausalLM")}[arch]
    cfg = getattr(transformers, config_cls)(**shape, max_position_embeddings=2048,
                                            rms_norm_eps=1e-5, tie_word_embeddings=tied,
                                            use_cache=True)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).float().eval()
    model.requires_grad_(False)
    return model


def _shared_copy(base: nn.Module, tensor_fn=None) -> nn.Module:
    """A structural copy of ``base`` whose parameters and buffers are ``tensor_fn(t)`` (default:
    the very same tensors, so the copy costs no weight memory). Swapping modules in the copy
    leaves ``base`` untouched."""
    memo = {}
    for t in itertools.chain(base.parameters(), base.buffers()):
        memo[id(t)] = t if tensor_fn is None else tensor_fn(t)
    return copy.deepcopy(base, memo)


# the table configs of --embeddings (pyquant configs only; PyTorch's rows keep float tables)
EMBEDDINGS = {"float": None, "int8": pyquant.Int8Config(act_bits=8),
              "w4g32": pyquant.WeightOnlyConfig(4, 32)}


def make_variant(base: nn.Module, name: str, embeddings: str = "float") -> nn.Module:
    """The model for config ``name``; every ``nn.Linear`` (the LM head included) is converted,
    and for a pyquant config the embedding table too unless ``embeddings`` is "float"."""
    if name == "fp32":
        return base
    if name == "bf16":
        def to_bf16(t):
            if isinstance(t, nn.Parameter):
                return nn.Parameter(t.detach().to(torch.bfloat16), requires_grad=False)
            return t  # buffers (rotary inv_freq) stay float32, as transformers computes rope in fp32
        return _shared_copy(base, to_bf16)
    model = _shared_copy(base)
    if name == "torch-int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8,
                                                          inplace=True)
    cfg = pyquant_config(name)
    if cfg is None:
        raise ValueError(f"config: expected one of {list(CONFIGS)}, got {name!r}")
    if embeddings not in EMBEDDINGS:
        raise ValueError(f"embeddings: expected one of {list(EMBEDDINGS)}, got {embeddings!r}")
    pyquant.quantize_(model, cfg)
    if EMBEDDINGS[embeddings] is not None:
        pyquant.quantize_(model, EMBEDDINGS[embeddings], filter_fn=pyquant.nn.embedding_filter)
    return model


# ------------------------------------------------------------------------------------ bytes
def _dynamic_linear_types():
    return (torch.ao.nn.quantized.dynamic.Linear,)


def model_bytes(model: nn.Module) -> int:
    """Bytes held in memory: parameters + buffers, plus the packed weights of PyTorch's dynamic
    int8 Linear (a ScriptObject, not a parameter or buffer; counted as int8 weight + bias + scale)."""
    seen, total = set(), 0
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    for m in model.modules():
        if isinstance(m, _dynamic_linear_types()):
            w, b = m._weight_bias()
            total += w.numel() * w.element_size() + 8  # + per-tensor scale and zero point
            total += 0 if b is None else b.numel() * b.element_size()
    return total


def kv_bytes_per_position(model: nn.Module) -> int:
    """KV-cache bytes per cached token (all layers, K and V) in the activation dtype."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    elt = 2 if next(model.parameters()).dtype == torch.bfloat16 else 4
    return c.num_hidden_layers * 2 * c.num_key_value_heads * head_dim * elt


def weight_bytes_read(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: each pyquant layer what its forward streams
    (``QuantLinear.bytes_read_per_call``: not the state-dict copies of its scales), every other
    parameter and buffer once, the embedding table only one row."""
    quant = [m for m in model.modules() if isinstance(m, pyquant.nn.QuantLinear)]
    skip = {id(t) for m in quant for t in m.buffers()}
    total = model_bytes(model) + sum(m.bytes_read_per_call() for m in quant)
    total -= sum(t.numel() * t.element_size() for m in quant for t in m.buffers())
    table, head = model.get_input_embeddings(), model.get_output_embeddings()
    if isinstance(table, pyquant.nn.QuantEmbedding):  # one row of its codes and scales
        total -= sum(t[1:].numel() * t.element_size() for t in table.buffers())
    elif id(table.weight) not in skip and getattr(head, "weight", None) is not table.weight:
        # (a float table tied to a float LM head: the head reads all of it every step)
        emb = table.weight
        total -= emb.numel() * emb.element_size() - emb.shape[1] * emb.element_size()
    return total - _unrouted_expert_bytes(model)


def _unrouted_expert_bytes(model: nn.Module) -> int:
    """An MoE decode step reads k of each layer's E experts: the bytes of the other E - k
    (counted in full above), on average over the experts."""
    k = getattr(model.config, "num_experts_per_tok", None)
    total = 0.0
    for m in model.modules():
        if isinstance(m, pyquant.nn.QuantExperts):
            held = sum(layer.bytes_read_per_call() for layer in (*m.up, *m.down))
        elif is_experts(m):  # float experts (fp32, bf16, and quantize_dynamic leaves them so)
            held = sum(t.numel() * t.element_size() for t in m.parameters(recurse=False)
                       if t.dim() >= 2 and t.shape[0] == m.num_experts)
        else:
            continue
        total += held * (1 - k / m.num_experts)
    return int(total)


def decode_bytes_per_token(model: nn.Module, context: float) -> dict:
    """Bytes one decode step reads: the weights (``weight_bytes_read``) and the KV cache at
    ``context`` cached positions."""
    weights = weight_bytes_read(model)
    kv = int(kv_bytes_per_position(model) * context)
    return {"weights": weights, "kv": kv, "total": weights + kv}


# ------------------------------------------------------------------------------------ decode
def _new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers < 4.56 takes no config
        return DynamicCache()


def _forward_kwargs(model) -> tuple[str, str | None]:
    """(name of the cache argument, name of the keep-last-logits argument): transformers 5.x
    renamed ``past_key_values`` to ``cache``; ``logits_to_keep`` was ``num_logits_to_keep``."""
    params = inspect.signature(model.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    keep = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return cache, keep


def _step(model, ids, cache, names, seen):
    """(logits [1, V] of the last position, the cache to pass next); ``seen`` tokens are already
    cached. As ``generate`` does, a 2-D all-ones attention mask is passed, and the returned cache
    is used (transformers 4.4x copies a passed DynamicCache instead of updating it in place)."""
    cache_arg, keep_arg = names
    kw = {cache_arg: cache, "use_cache": True,
          "attention_mask": torch.ones(1, seen + ids.shape[1], dtype=torch.long)}
    if keep_arg is not None:
        kw[keep_arg] = 1  # as model.generate does: the LM head only on the last position
    out = model(input_ids=ids, **kw)
    new = getattr(out, "cache", None)
    if new is None:
        new = getattr(out, "past_key_values", None)
    return out.logits[:, -1, :], cache if new is None else new


@torch.inference_mode()
def greedy(model, prompt: torch.Tensor, new_tokens: int, *, forced=None, keep_logits=False,
           on_token=None) -> dict:
    """Greedy generation with the KV cache, as ``generate(do_sample=False, max_new_tokens=N,
    min_new_tokens=N)`` does it: the prefill (prompt -> first token) and ``N - 1`` decode steps.

    ``forced``: teacher forcing: decode step i is fed ``forced[i]`` instead of this run's token i
    (pass a reference run's ``tokens`` to compare configs on the same trajectory). ``on_token(i)``: called before decode step i
    (profiling). Returns tokens [N], prefill_s, decode_s, and logits [N, V] if ``keep_logits``.
    """
    if new_tokens < 2:
        raise ValueError(f"new_tokens: expected >= 2 (one prefill token + decode steps), got {new_tokens}")
    names = _forward_kwargs(model)
    cache = _new_cache(model)
    logits = []
    t0 = time.perf_counter()
    last, cache = _step(model, prompt, cache, names, 0)
    tok = last.argmax(-1)
    t1 = time.perf_counter()
    tokens = [int(tok)]
    if keep_logits:
        logits.append(last[0].float().clone())
    for i in range(new_tokens - 1):
        if on_token is not None:
            on_token(i)
        feed = tok if forced is None else torch.tensor([int(forced[i])])
        last, cache = _step(model, feed.view(1, 1), cache, names, prompt.shape[1] + i)
        tok = last.argmax(-1)
        tokens.append(int(tok))
        if keep_logits:
            logits.append(last[0].float().clone())
    t2 = time.perf_counter()
    out = {"tokens": tokens, "prefill_s": t1 - t0, "decode_s": t2 - t1}
    if keep_logits:
        out["logits"] = torch.stack(logits)
    return out


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    pyquant.set_num_threads(n)


# ------------------------------------------------------------------------------------ profile
def _linear_modules(model):
    """The Linear-like modules and the MoE experts blocks (float or QuantExperts: their
    projections run inside them, not as modules of their own)."""
    from pyquant.nn.experts import is_experts

    kinds = (nn.Linear, pyquant.nn.QuantLinear, pyquant.nn.QuantExperts) + _dynamic_linear_types()
    return [m for m in model.modules() if isinstance(m, kinds) or is_experts(m)]


class _NativeTimer:
    """Times every native call pyquant's wrappers make: the kernels' own functions in
    ``pyquant._C`` and the modules' bound forwards (``QuantLinear._run``) are replaced by timed
    wrappers while the block runs (instrumentation only)."""

    def __init__(self, modules=()):
        self.seconds = 0.0
        self.calls = 0
        self._saved = {}
        self._modules = [m for m in modules if getattr(m, "_run", None) is not None]

    def __enter__(self):
        mod = pyquant._C
        for name in dir(mod):
            fn = getattr(mod, name)
            if name.startswith("_") or isinstance(fn, type) or not callable(fn):
                continue
            self._saved[name] = fn
            setattr(mod, name, self._wrap(fn))
        for m in self._modules:
            m._run = self._wrap(m._run)
        return self

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1
        timed.__wrapped__ = fn
        return timed

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(pyquant._C, name, fn)
        for m in self._modules:
            m._run = m._run.__wrapped__


def profile_decode(model, prompt: torch.Tensor, new_tokens: int) -> dict:
    """Per decode token, in ms: ``linear`` (inside every Linear-like module's forward and every
    MoE experts block's), split for pyquant's QuantLinear and QuantExperts into ``kernels`` (the
    native calls) and ``wrappers`` (their forwards minus the native calls: argument checks,
    numpy/torch conversions, an experts block's routing and gating), and ``rest`` (attention,
    RoPE, norms, MLP activation, router, embedding, argmax, cache).
    Timers are perf_counter around module forwards (hooks) and native calls; the hook overhead
    (~µs per module) lands in ``linear``."""
    mods = _linear_modules(model)
    acc = {"linear": 0.0, "quant_linear": 0.0, "linear_calls": 0}
    start = {}
    active = [False]

    def pre(m, args):
        start[id(m)] = time.perf_counter()

    def post(m, args, out):
        if active[0]:
            dt = time.perf_counter() - start[id(m)]
            acc["linear"] += dt
            acc["linear_calls"] += 1
            if isinstance(m, (pyquant.nn.QuantLinear, pyquant.nn.QuantExperts)):
                acc["quant_linear"] += dt

    handles = [h for m in mods for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    native = _NativeTimer(mods)
    marks = {}

    def on_token(i):
        if i == 0:  # start counting at the first decode step (the prefill is excluded)
            active[0] = True
            native.seconds, native.calls = 0.0, 0
            marks["t0"] = time.perf_counter()

    try:
        with native:
            greedy(model, prompt, new_tokens, on_token=on_token)
            total = time.perf_counter() - marks["t0"]
    finally:
        for h in handles:
            h.remove()
    steps = new_tokens - 1
    ms = lambda s: 1e3 * s / steps  # noqa: E731
    is_pq = acc["quant_linear"] > 0
    return {
        "total_ms": ms(total),
        "linear_ms": ms(acc["linear"]),
        "kernels_ms": ms(native.seconds) if is_pq else None,
        "wrappers_ms": ms(acc["quant_linear"] - native.seconds) if is_pq else None,
        "rest_ms": ms(total - acc["linear"]),
        "linear_calls_per_token": acc["linear_calls"] / steps,
        "native_calls_per_token": native.calls / steps if is_pq else None,
    }
