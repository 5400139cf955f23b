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
"""
from __future__ import annotations

import math

from torch import nn

MIN_CONV_OUT = 48  # output channels per group
MIN_CONV_PRODUCTS = 24576  # output channels x kernel taps x input channels, per group


def group_k(conv: nn.Module) -> int:
    """K of one group's GEMM: kernel taps x input channels per group."""
    return math.prod(conv.kernel_size) * conv.in_channels // conv.groups


def worth_converting(conv: nn.Module) -> bool:
    """quantize_'s default for an nn.Conv2d / nn.Conv1d, grouped or not (module docstring)."""
    n = conv.out_channels // conv.groups
    return n >= MIN_CONV_OUT and n * group_k(conv) >= MIN_CONV_PRODUCTS
