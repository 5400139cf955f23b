"""wav2vec2-base's shapes (transformers' Wav2Vec2Model from its default config, random weights;
a 7-layer Conv1d feature encoder of 512 channels, then 12 transformer layers of 768) on SECONDS
of 16 kHz audio: ms per forward in fp32, PyTorch's dynamic int8 (nn.Linear only), pyquant with
the Conv1d layers left float (quantize_ before QuantConv1d), with the grouped positional conv
left float (before QuantGroupedConv1d), as quantize_ converts it (its stem conv, 512 x 10
products per output sample, float: pyquant/nn/conv_gain.py) and with the stem converted too.
The feature encoder alone is timed the same ways. Alternating runs, median of the best half.
Usage (from the repository root): PYTHONPATH=. python benchmarks/speech_encoder.py [THREADS]
[int8|w4g32] [SECONDS]"""
import copy
import statistics
import time
import warnings

import torch
from torch import nn

import pyquant
from script_args import import_transformers, parsed_args

CONFIGS = {"int8": pyquant.Int8Config(), "w4g32": pyquant.WeightOnlyConfig(4, 32)}


def parse(a):
    if len(a) > 3:
        raise ValueError("at most three arguments")
    threads, name = int(a[0]) if a else 1, a[1] if len(a) > 1 else "int8"
    seconds = float(a[2]) if len(a) > 2 else 1.0
    CONFIGS[name]  # (KeyError: refused with the usage)
    if not 0.1 <= seconds <= 30:
        raise ValueError("SECONDS: expected 0.1 to 30")
    return threads, name, seconds


threads, name, seconds = parsed_args(__doc__, parse)
warnings.filterwarnings("ignore")
T = import_transformers()
torch.set_num_threads(threads)
pyquant.set_num_threads(threads)
torch.manual_seed(0)
fp32 = T.Wav2Vec2Model(T.Wav2Vec2Config()).eval()
x = torch.randn(1, int(16000 * seconds))
config = CONFIGS[name]
no_conv1d = lambda m, fqn: (  # noqa: E731
    pyquant.nn.default_filter(m, fqn) and not isinstance(m, nn.Conv1d))
not_grouped = lambda m, fqn: (  # noqa: E731  (the positional conv: 16 groups, kernel 128)
    pyquant.nn.default_filter(m, fqn) and getattr(m, "groups", 1) == 1)
every_dense_conv = lambda m, fqn: (  # noqa: E731  (quantize_ before the 35th session)
    pyquant.nn.default_filter(m, fqn) or (type(m) is nn.Conv1d and m.groups == 1))
models = {
    "fp32": fp32,
    "torch dynamic int8": torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {nn.Linear},
                                                                 torch.qint8),
    f"pyquant {name}, Conv1d float": pyquant.quantize_(copy.deepcopy(fp32), config,
                                                       filter_fn=no_conv1d),
    f"pyquant {name}, grouped conv float": pyquant.quantize_(copy.deepcopy(fp32), config,
                                                             filter_fn=not_grouped),
    f"pyquant {name}, all": pyquant.quantize_(copy.deepcopy(fp32), config),
    f"pyquant {name}, all + stem": pyquant.quantize_(copy.deepcopy(fp32), config,
                                                     filter_fn=every_dense_conv),
}


def timed(runs: dict, rounds: int = 9) -> dict:
    times = {label: [] for label in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()
        for _ in range(rounds):
            for label, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
    return {label: 1e3 * statistics.median(sorted(t)[:len(t) // 2 + 1])
            for label, t in times.items()}


with torch.no_grad():
    want = fp32(x).last_hidden_state
    cos = {label: nn.functional.cosine_similarity(m(x).last_hidden_state.flatten(), want.flatten(),
                                                  dim=0).item() for label, m in models.items()}
whole = timed({label: (lambda m=m: m(x)) for label, m in models.items()})
feats = timed({label: (lambda m=m: m.feature_extractor(x)) for label, m in models.items()
               if label == "fp32" or ", all" in label})
print(f"wav2vec2-base shapes, {seconds:g} s of audio, {threads} thread(s), ms per forward:")
for label, ms in whole.items():
    print(f"  {label:32s} {ms:8.2f} ms  ({whole['fp32'] / ms:4.2f}x fp32, cosine {cos[label]:.4f})")
print("feature encoder (7 Conv1d layers) alone:")
for label, ms in feats.items():
    print(f"  {label:32s} {ms:8.2f} ms  ({feats['fp32'] / ms:4.2f}x fp32)")
