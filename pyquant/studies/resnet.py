"""ResNet-18, MobileNetV2 (ImageNet shape, 224 x 224) or a U-Net (224 x 224 -> 21 class maps;
its decoder upsamples with ConvTranspose2d) through QuantConv2d / QuantConvTranspose2d /
QuantLinear: whole-model speed.

    python -m pyquant.studies.resnet [--model resnet18|mobilenet_v2|unet] [--threads 1]
                                     [--batch 1] [--repeats 5]

Builds the standard model (built here, no torchvision needed; random weights, eval mode),
converts it with ``quantize_`` per config (its default filter: the convs with enough products per
output pixel, pyquant/nn/conv_gain.py, and the classifier; the BatchNorms after converted convs
folded into them, pyquant/nn/fold_bn.py), and reports the forward time against fp32 (oneDNN) in
NCHW and in channels_last, plus the logits' cosine to fp32 as a sanity check (random weights: no
accuracy to report). More rows: fp32 with every BN folded (``torch.fx``'s fuse: what folding alone
gives), Int8 without folding (as quantize_ did before the 36th session), Int8 folding the BNs of
the convs left float too (``fold_batchnorm="all"``) and Int8 converting every dense conv (before
the 35th). Timings: best of ``--repeats`` rounds in which the models take
turns.
"""
from __future__ import annotations

import argparse
import copy
import warnings

import torch
import torch.fx.experimental.optimization as fx_optimization
from torch import nn

import pyquant
from pyquant._cli import positive_int
from pyquant.studies._timing import best_interleaved


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model.eval()


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),  # depthwise
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v2(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers, cin = [_conv_bn(3, 32, 3, 2)], 32
    for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += [_conv_bn(cin, 1280), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(1280, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
    return model.eval()


def _double_conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """Ronneberger et al.'s U-Net with padded convs and BatchNorm, widths 32-512: max-pool down,
    ConvTranspose2d (kernel 2, stride 2) up, skip connections concatenated; a 1x1 conv to the
    class maps."""

    def __init__(self, num_classes: int = 21, widths=(32, 64, 128, 256, 512)):
        super().__init__()
        self.down = nn.ModuleList([_double_conv(3, widths[0])] + [
            _double_conv(a, b) for a, b in zip(widths, widths[1:])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, 2)
                                 for a, b in zip(widths[:-1], widths[1:])][::-1])
        self.merge = nn.ModuleList([_double_conv(2 * a, a) for a in widths[:-1]][::-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else torch.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, skips[-2::-1]):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


def unet(num_classes: int = 21, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = UNet(num_classes)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model.eval()


MODELS = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "unet": unet}
CONFIGS = {
    "Int8Config()": pyquant.Int8Config(),
    "WeightOnlyConfig(4, 32)": pyquant.WeightOnlyConfig(4, 32),
    "SparqConfig()": pyquant.SparqConfig(),
}


def _every_dense_conv(module: nn.Module, fqn: str) -> bool:
    return pyquant.nn.default_filter(module, fqn) or (
        type(module) is nn.Conv2d and module.groups == 1)


def timed(models: dict, x: torch.Tensor, repeats: int) -> dict:
    with torch.inference_mode():
        return best_interleaved(models, repeats, lambda m: m(x))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pyquant.studies.resnet", description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=list(MODELS), default="resnet18")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--batch", type=positive_int, default=1)
    ap.add_argument("--repeats", type=positive_int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyquant.set_num_threads(args.threads)

    fp32 = MODELS[args.model]()
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    models = {"fp32": fp32, "fp32, every BN folded": fx_optimization.fuse(copy.deepcopy(fp32))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the convs the default filter leaves float)
        for name, config in CONFIGS.items():
            models[name] = pyquant.quantize_(copy.deepcopy(fp32), config)
        models["Int8Config(), BN not folded"] = pyquant.quantize_(  # (the 35th session's)
            copy.deepcopy(fp32), pyquant.Int8Config(), fold_batchnorm=False)
        models['Int8Config(), fold_batchnorm="all"'] = pyquant.quantize_(
            copy.deepcopy(fp32), pyquant.Int8Config(), fold_batchnorm="all")
        models["Int8Config(), every dense conv"] = pyquant.quantize_(  # (the 34th session's default)
            copy.deepcopy(fp32), pyquant.Int8Config(), filter_fn=_every_dense_conv,
            fold_batchnorm=False)
    with torch.inference_mode():
        ref = fp32(x)
        cos = {name: torch.nn.functional.cosine_similarity(m(x), ref).mean().item()
               for name, m in models.items()}
    info = pyquant.cpu_info()
    print(f"{args.model}, batch {args.batch}, 224x224, {args.threads} thread(s), "
          f"{info['brand'] or info['vendor']} (ISA {info['isa']}), best of {args.repeats}")
    print("| model | logit cosine | NCHW ms | vs fp32 | channels_last ms | vs fp32 (channels_last) |")
    print("|---|---|---|---|---|---|")
    t_nchw = timed(models, x, args.repeats)
    t_cl = timed(models, x.contiguous(memory_format=torch.channels_last), args.repeats)
    for name in models:
        print(f"| {name} | {cos[name]:.4f} | {t_nchw[name] * 1e3:.1f} | "
              f"{t_nchw['fp32'] / t_nchw[name]:.2f}x | {t_cl[name] * 1e3:.1f} | "
              f"{t_cl['fp32'] / t_cl[name]:.2f}x |")


if __name__ == "__main__":
    main()
