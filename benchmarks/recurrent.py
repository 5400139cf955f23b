"""nn.LSTM / nn.GRU (2 layers, batch_first, random weights) on 100 steps: ms per forward in fp32,
PyTorch's dynamic int8 (quantize_dynamic converts both), and pyquant's QuantRNN (Int8, W4 g32),
for hidden 256 / 512 / 1024 at batch 1 and hidden 512 at batch 16. Median of 8 runs.
Usage (from the repository root): PYTHONPATH=. python benchmarks/recurrent.py [THREADS]"""
import statistics
import time
import warnings

import torch
from torch import nn

import pyquant
from script_args import parsed_args


def parse(a):
    if len(a) > 1:
        raise ValueError("at most one argument")
    return int(a[0]) if a else 1


threads = parsed_args(__doc__, parse)
warnings.filterwarnings("ignore")
torch.set_num_threads(threads)
pyquant.set_num_threads(threads)


def timed(fn, runs=8):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


print(f"{threads} thread(s), 2 layers, 100 steps, ms per forward "
      "(fp32 / torch dynamic int8 / pyquant Int8 / pyquant W4 g32):")
for cls in (nn.LSTM, nn.GRU):
    for hidden, batch in ((256, 1), (512, 1), (1024, 1), (512, 16)):
        torch.manual_seed(0)
        rnn = cls(hidden, hidden, 2, batch_first=True).eval()
        models = [rnn, torch.ao.quantization.quantize_dynamic(rnn, {cls}, torch.qint8),
                  pyquant.nn.QuantRNN(rnn, pyquant.Int8Config()),
                  pyquant.nn.QuantRNN(rnn, pyquant.WeightOnlyConfig(4, 32))]
        x = torch.randn(batch, 100, hidden)
        with torch.no_grad():
            ms = [timed(lambda m=m: m(x)) for m in models]
        print(f"  {cls.__name__} hidden {hidden:4d} batch {batch:2d}: "
              + " / ".join(f"{v:.2f}" for v in ms)
              + f"  (Int8 {ms[1] / ms[2]:.2f}x torch int8, W4 {ms[1] / ms[3]:.2f}x)")
