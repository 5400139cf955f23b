"""Which convolutions quantize_ converts by default: those whose GEMM has enough products per
output pixel to gain.

A quantized conv (dense or one group of a grouped conv) runs one GEMM row per output pixel: the
pixel's patch is gathered and quantized (K = kernel taps x input channels per group), then N =
output channels per group columns of products. The gather and the row's quantization cost about
as much as a few hundred products per pixel, and narrow N runs mostly empty tiles, so layers with
few products per pixel lose to PyTorch's float conv (oneDNN). Int8 vs float, 1 thread, batch 1,
Intel Xeon model 207, NCHW (channels_last) on the AVX-512 tier; AVX2-only tier NCHW:

    N x K                          AVX-512           AVX2 only
    32 x 3 x 3 x 3 (stem, 224)     1.09x (0.25x)     0.87x
    64 x 3 x 7 x 7 (ResNet stem)   0.56x             0.69x
    512 x 1 x 10 (wav2vec2 conv0)  0.33x             0.36x
    16/24/32 x 16..192 (1x1)       0.12-0.54x        0.15-0.52x  (MobileNetV2's narrow layers)
    32 x 32 x 3 x 3 (56x56)        0.66x             0.50x
    64 x 192, 192 x 32 (1x1)       0.77x, 0.54x      0.86x, 0.50x
    384 x 64, 64 x 384 (1x1)       0.95x, 1.09x      0.94x, 0.99x
    96 x 384 (1x1, 14x14)          1.43x             1.00x
    64 x 64 x 3 x 3 (56x56)        1.52x             0.85x
    384 x 80 x 3 (Whisper stem)    1.55x             0.91x
    1280 x 320 (1x1, 7x7)          3.56x             1.71x

Grouped convs likewise per group (wav2vec2's positional conv, 48 x 6144 per group: 3.3x;
48 x 432: 0.86x; ResNeXt's 4 per group 0.2x; depthwise 0.04x). Converted by default: at least
MIN_CONV_OUT output channels and MIN_CONV_PRODUCTS (N x K) per group, the break-even (24576
measured 0.94-1.09x NCHW, 1.12-1.47x channels_last); filter_fn converts any.

A transposed conv (QuantConvTranspose2d / 1d) runs one GEMM row per *input* pixel with K = input
channels and N = kernel taps x output channels, then col2im: the same rule on that N and K.
Int8 vs float (oneDNN's transposed conv is slow: most layers gain 1.5-7x), 1 thread, batch 1,
Intel Xeon model 167, NCHW / channels_last (`python benchmarks/conv_transpose.py`):

    N x K                                    AVX-512 + AMX        AVX2 only
    2x2x512 x 1024 (U-Net, 28x28)            4.58x / 6.19x        2.12x / 1.74x
    2x2x64 x 128 (U-Net, 112x112)            3.13x / 1.52x        2.31x / 0.79x
    4x4x64 x 128 (DCGAN, 32x32)              1.62x / 1.61x        1.20x / 1.13x
    4x4x3 x 64 (DCGAN's last, 64x64)         1.15x / 1.28x        0.85x / 0.91x  (left float)
"""
from __future__ import annotations

import math

from torch import nn

MIN_CONV_OUT = 48  # output channels per group
MIN_CONV_PRODUCTS = 24576  # output channels x kernel taps x input channels, per group


def group_k(conv: nn.Module) -> int:
    """K of one group's GEMM: kernel taps x input channels per group."""
    return math.prod(conv.kernel_size) * conv.in_channels // conv.groups


def transposed_worth_converting(conv: nn.Module) -> bool:
    """quantize_'s default for an nn.ConvTranspose2d / 1d (module docstring)."""
    n = conv.out_channels * math.prod(conv.kernel_size)
    return n >= MIN_CONV_OUT and n * conv.in_channels >= MIN_CONV_PRODUCTS


def worth_converting(conv: nn.Module) -> bool:
    """quantize_'s default for an nn.Conv2d / nn.Conv1d, grouped or not (module docstring)."""
    n = conv.out_channels // conv.groups
    return n >= MIN_CONV_OUT and n * group_k(conv) >= MIN_CONV_PRODUCTS
