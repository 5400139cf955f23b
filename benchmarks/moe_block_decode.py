"""MoE experts blocks alone at decode: ms per token through 4 OLMoE-shaped QuantExperts (hidden
2048, 64 experts of 1024, top 8; random weights and routing), median over 192 steps after 64 of
warm-up; the weights (4 x 64 experts) come from DRAM.
Usage (from the repository root): PYTHONPATH=. python benchmarks/moe_block_decode.py [THREADS]
[int8|w4g32|w2g32]"""
import statistics
import time
import warnings

import torch

import pyquant
from script_args import import_transformers, parsed_args

CONFIGS = {"int8": pyquant.Int8Config(), "w4g32": pyquant.WeightOnlyConfig(4, 32),
           "w2g32": pyquant.WeightOnlyConfig(2, 32)}
threads, name = parsed_args(__doc__, lambda a: (int(a[0]) if a else 1,
                                                CONFIGS[a[1]] and a[1] if len(a) > 1 else "w4g32"))
warnings.filterwarnings("ignore")
T = import_transformers()
from transformers.models.olmoe import modeling_olmoe  # noqa: E402
config = CONFIGS[name]
torch.manual_seed(0)
olmoe = T.OlmoeConfig(hidden_size=2048, intermediate_size=1024, num_experts=64, num_experts_per_tok=8)
blocks = [pyquant.nn.QuantExperts(modeling_olmoe.OlmoeSparseMoeBlock(olmoe).experts, config)
          for _ in range(4)]
torch.set_num_threads(threads)
pyquant.set_num_threads(threads)
routes = [(torch.randn(1, 64).topk(8).indices, torch.softmax(torch.randn(1, 8), -1)) for _ in range(64)]
x = torch.randn(1, 2048)
times = []
with torch.no_grad():
    for _ in range(4):
        for index, weights in routes:
            t0 = time.perf_counter()
            for block in blocks:
                block(x, index, weights)
            times.append(time.perf_counter() - t0)
print(f"{name}, {threads} thread(s): {1e3 * statistics.median(times[64:]):.3f} ms per token "
      f"through 4 MoE experts blocks (median of 192)")
