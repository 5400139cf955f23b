"""MoE decode: ms per token of an OLMoE-shaped model (hidden 2048, 32 experts of 1024, top 8, vocab
50304; 2 layers, random weights) in fp32 (transformers' grouped_mm and eager experts), PyTorch's
dynamic int8 as it comes (it converts nn.Linear only: the 3-D experts stay float) and with the
experts split into one nn.Linear each first (the like-for-like int8 baseline), and pyquant's
configs (quantize_ converts every experts block to a QuantExperts). Alternating runs, best of 3.
Usage (from the repository root): PYTHONPATH=. python benchmarks/moe_decode.py [THREADS]"""
import copy
import time
import warnings

import torch

import pyquant
from pyquant.nn.experts import is_experts
from script_args import import_transformers, parsed_args

threads = parsed_args(__doc__, lambda a: int(a[0]) if a else 1)
warnings.filterwarnings("ignore")
T = import_transformers()
torch.set_num_threads(threads)
pyquant.set_num_threads(threads)
torch.manual_seed(0)
config = T.OlmoeConfig(hidden_size=2048, intermediate_size=1024, num_hidden_layers=2,
                       num_attention_heads=16, num_key_value_heads=16, vocab_size=50304,
                       num_experts=32, num_experts_per_tok=8)
base = T.OlmoeForCausalLM(config).eval()


class LinearExperts(pyquant.nn.QuantExperts):
    """QuantExperts' forward over one float nn.Linear per expert (for quantize_dynamic)."""

    @staticmethod
    def _per_expert(experts, name, config):
        assert not experts.has_bias  # (OLMoE's experts have none)
        w = getattr(experts, name).detach()
        w = w.transpose(1, 2) if experts.is_transposed else w
        layers = torch.nn.ModuleList(torch.nn.Linear(w.shape[2], w.shape[1], bias=False)
                                     for _ in range(w.shape[0]))
        for layer, we in zip(layers, w):
            layer.weight.data.copy_(we)
        return layers


def experts_as_linears(model):
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if is_experts(child):
                setattr(parent, child_name, LinearExperts(child, None))
    return model


eager = copy.deepcopy(base)
eager.config._experts_implementation = "eager"
models = {
    "fp32 (grouped_mm)": base,
    "fp32 (eager)": eager,
    "torch int8 (Linear only)": torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(eager), {torch.nn.Linear}, dtype=torch.qint8),
    "torch int8 (experts split)": torch.ao.quantization.quantize_dynamic(
        experts_as_linears(copy.deepcopy(base)), {torch.nn.Linear}, dtype=torch.qint8),
    "pq Int8Config": pyquant.quantize_(copy.deepcopy(base), pyquant.Int8Config()),
    "pq WeightOnlyConfig(4, 32)": pyquant.quantize_(copy.deepcopy(base), pyquant.WeightOnlyConfig(4, 32)),
}
prompt = torch.randint(0, config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(1))


def ms_per_token(model, tokens=16):
    with torch.no_grad():
        out = model(input_ids=prompt, use_cache=True)
        cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(tokens):
            out = model(input_ids=tok, past_key_values=cache, use_cache=True)
            cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return (time.perf_counter() - t0) / tokens * 1e3


best = {name: float("inf") for name in models}
for _ in range(3):
    for name, model in models.items():
        best[name] = min(best[name], ms_per_token(model))
print(f"OLMoE-shaped, 2 layers, 1 x 64 prompt, {threads} thread(s); ms per decode token:")
base_ms = best["torch int8 (experts split)"]
for name, ms in best.items():
    print(f"  {name:28s} {ms:7.1f}  ({base_ms / ms:.2f}x torch int8 with the experts split)")
