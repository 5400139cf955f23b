"""Transposed convolutions (nn.ConvTranspose2d / 1d) as decoders use them, each layer alone on
random weights: ms per forward of the float layer (oneDNN) and of QuantConvTranspose2d / 1d under
Int8 and W4 g32 (quantize_ with every_layer_filter), NCHW and channels_last, batch 1; the
methods take turns (best of REPEATS). The rows: U-Net decoder upsampling (kernel 2, stride 2),
DCGAN generator (kernel 4, stride 2, padding 1), a segmentation head (kernel 3, stride 2,
output_padding 1), HiFi-GAN's upsampling ConvTranspose1d (kernel 16, stride 8).
Usage (from the repository root): PYTHONPATH=. python benchmarks/conv_transpose.py [THREADS]
[REPEATS]"""
import copy

import torch
from torch import nn

import pyquant
from pyquant.nn import every_layer_filter
from pyquant.studies._timing import best_interleaved
from script_args import parsed_args

# label -> (constructor, its arguments, input shape)
LAYERS = {
    "U-Net up 1024->512 k2/2, 28x28": (nn.ConvTranspose2d, (1024, 512, 2, 2), (1, 1024, 28, 28)),
    "U-Net up 512->256 k2/2, 56x56": (nn.ConvTranspose2d, (512, 256, 2, 2), (1, 512, 56, 56)),
    "U-Net up 128->64 k2/2, 112x112": (nn.ConvTranspose2d, (128, 64, 2, 2), (1, 128, 112, 112)),
    "DCGAN 512->256 k4/2 p1, 8x8": (nn.ConvTranspose2d, (512, 256, 4, 2, 1), (1, 512, 8, 8)),
    "DCGAN 128->64 k4/2 p1, 32x32": (nn.ConvTranspose2d, (128, 64, 4, 2, 1), (1, 128, 32, 32)),
    "DCGAN 64->3 k4/2 p1, 64x64": (nn.ConvTranspose2d, (64, 3, 4, 2, 1), (1, 64, 64, 64)),
    "seg head 256->128 k3/2 p1 op1, 64x64": (nn.ConvTranspose2d, (256, 128, 3, 2, 1, 1),
                                             (1, 256, 64, 64)),
    "HiFi-GAN 512->256 k16/8 p4, 100 frames": (nn.ConvTranspose1d, (512, 256, 16, 8, 4),
                                               (1, 512, 100)),
    "HiFi-GAN 128->64 k4/2 p1, 3200 samples": (nn.ConvTranspose1d, (128, 64, 4, 2, 1),
                                               (1, 128, 3200)),
}
CONFIGS = {"Int8": pyquant.Int8Config(), "W4 g32": pyquant.WeightOnlyConfig(4, 32)}


def parse(a):
    if len(a) > 2:
        raise ValueError("at most two arguments")
    return (int(a[0]) if a else 1), (int(a[1]) if len(a) > 1 else 10)


def main():
    threads, repeats = parsed_args(__doc__, parse)
    torch.set_num_threads(threads)
    pyquant.set_num_threads(threads)
    print(f"{threads} thread(s), {pyquant.cpu_info()['isa']} tier; ms per forward (fp32 / pyquant: "
          "its speed-up), NCHW | channels_last")
    for label, (cls, args, shape) in LAYERS.items():
        torch.manual_seed(0)
        layer = cls(*args).eval()
        models = {"fp32": layer}
        for name, config in CONFIGS.items():
            models[name] = pyquant.quantize_(nn.Sequential(copy.deepcopy(layer)), config,
                                             filter_fn=every_layer_filter)[0]
        x = torch.randn(shape)
        cells = []
        for fmt in ("nchw", "cl"):
            xi = x.to(memory_format=torch.channels_last) if fmt == "cl" and x.dim() == 4 else x
            if fmt == "cl" and x.dim() != 4:
                continue
            with torch.inference_mode():
                best = best_interleaved(models, repeats, lambda m: m(xi))
            base = best["fp32"]
            cells.append(f"fp32 {base * 1e3:.2f}: " + ", ".join(
                f"{n} {best[n] * 1e3:.2f} ({base / best[n]:.2f}x)" for n in CONFIGS))
        print(f"{label}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
