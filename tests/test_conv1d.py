"""QuantConv1d: nn.Conv1d as QuantConv2d with a (1, k) kernel. The reference is a QuantLinear of
the same [O, k*C] weight on an im2col matrix built here by hand from the 1-D definition
(``cols[b, l, j*C + c] = x_padded[b, c, l*stride + j*dilation]``): per-row activation
quantization makes the two agree bit for bit, every config, geometry, ISA path and thread count.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyquant
from pyquant.nn import QuantConv1d, QuantLinear

CONFIGS = {
    "int8": pyquant.Int8Config(),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "lut_minmax": pyquant.LUT2Config(a_scale="minmax"),
    "sparq_signed": pyquant.SparqConfig(negative="sign_magnitude"),
}
# (in, out, kernel, stride, padding, dilation, padding_mode, batch, L)
GEOMETRIES = {
    "k3": (8, 16, 3, 1, 1, 1, "zeros", 2, 19),
    "wav2vec2_stem": (1, 24, 10, 5, 0, 1, "zeros", 2, 160),  # K = 10
    "strided": (12, 8, 3, 2, 0, 1, "zeros", 3, 21),
    "dilated": (6, 5, 3, 1, 2, 2, "zeros", 1, 17),
    "same_even": (6, 5, 4, 1, "same", 1, "zeros", 1, 13),  # uneven padding
    "valid": (6, 5, 3, 2, "valid", 1, "zeros", 1, 9),
    "reflect": (4, 8, 3, 1, 1, 1, "reflect", 1, 12),
    "replicate": (4, 8, 5, 1, 2, 1, "replicate", 2, 12),
    "circular": (4, 8, 3, 2, 2, 1, "circular", 2, 11),
    "pointwise": (40, 33, 1, 1, 0, 1, "zeros", 2, 70),  # K = 40: one group tail at g32
    "long": (16, 20, 3, 1, 1, 1, "zeros", 1, 3001),  # many native chunks
}


def _conv(geometry, bias=True):
    cin, cout, k, s, p, d, mode, *_ = geometry
    torch.manual_seed(3)
    return nn.Conv1d(cin, cout, k, s, p, d, bias=bias, padding_mode=mode)


def _reference(conv: nn.Conv1d, q: QuantConv1d, x: torch.Tensor) -> torch.Tensor:
    """The layer as a QuantLinear over a hand-built im2col (module docstring)."""
    (k,), (s,), (d,) = conv.kernel_size, conv.stride, conv.dilation
    if conv.padding == "same":
        total = d * (k - 1)
        pads = (total // 2, total - total // 2)
    elif conv.padding == "valid":
        pads = (0, 0)
    else:
        pads = (conv.padding[0],) * 2
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    xp = F.pad(x, pads, mode=mode)
    lo = (xp.shape[-1] - d * (k - 1) - 1) // s + 1
    taps = [xp[:, :, j * d: j * d + s * (lo - 1) + 1: s] for j in range(k)]  # each [B, C, Lo]
    cols = torch.stack(taps, 2).permute(0, 3, 2, 1).reshape(-1, k * conv.in_channels)
    w2d = conv.weight.detach().permute(0, 2, 1).reshape(conv.out_channels, -1)
    lin = QuantLinear(k * conv.in_channels, conv.out_channels, w2d, conv.bias, q.config)
    assert torch.equal(lin.packed, q.packed)  # the same weight codes
    lin.act_range.copy_(q.act_range)
    with torch.no_grad():
        y = lin(cols)
    return y.view(x.shape[0], lo, conv.out_channels).permute(0, 2, 1).contiguous()


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_conv1d_equals_quantlinear_on_its_im2col(isa, threads, config_name, geometry, static):
    geom = GEOMETRIES[geometry]
    conv = _conv(geom)
    q = QuantConv1d.from_conv(conv, CONFIGS[config_name])
    x = torch.randn(geom[7], geom[0], geom[8], generator=torch.Generator().manual_seed(5))
    if static:
        pyquant.calibrate(q, [x])
    want = _reference(conv, q, x)
    with torch.inference_mode():
        got = q(x)
        assert got.shape == conv(x).shape and got.is_contiguous()
        assert torch.equal(got, want), (isa, config_name, geometry)
        # a transposed [B, L, C] view (a channels-last 1-D layout) and an unbatched input
        assert torch.equal(q(x.transpose(1, 2).contiguous().transpose(1, 2)), want)
        assert torch.equal(q(x[0]), want[0])


def test_conv1d_matches_the_float_layer_and_keeps_its_shapes():
    conv = _conv(GEOMETRIES["k3"])
    q = QuantConv1d.from_conv(conv, pyquant.Int8Config())
    x = torch.randn(2, 8, 19)
    with torch.no_grad():
        assert F.cosine_similarity(q(x).flatten(), conv(x).flatten(), 0) > 0.999
    assert q.weight.shape == conv.weight.shape and q.dequantize_weight().shape == conv.weight.shape
    assert "kernel_size=(3,)" in repr(q)
    with pytest.raises(ValueError, match=r"x: expected \[B, 8, L\]"):
        q(torch.randn(2, 7, 19))
    with pytest.raises(ValueError, match="x: expected"):
        q(torch.randn(2, 8, 1, 19))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        QuantConv1d.from_conv(nn.Conv1d(8, 4, 5), pyquant.Int8Config())(torch.randn(1, 8, 3))
    with pytest.raises(TypeError, match="nn.Conv1d"):
        QuantConv1d.from_conv(nn.Conv2d(8, 4, 3), pyquant.Int8Config())
    xg = torch.randn(2, 8, 19, requires_grad=True)
    with pytest.raises(RuntimeError, match="QuantConv1d"):
        q(xg).sum().backward()


def _model():
    torch.manual_seed(6)
    return nn.Sequential(nn.Conv1d(48, 64, 9, padding=4), nn.ReLU(),  # 64 x 432 products a pixel
                         nn.Conv1d(64, 64, 3, groups=16), nn.ReLU(),  # narrow groups: left float
                         nn.Conv1d(64, 48, 9, stride=2)).eval()


def test_quantize_converts_conv1d_and_leaves_narrow_groups_float():
    model = _model()
    x = torch.randn(3, 48, 50)
    with torch.no_grad():
        want = model(x)
    with pytest.warns(UserWarning, match="left float 1 nn.Conv2d/nn.Conv1d .*few products.*: 2"):
        q = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config())
    assert isinstance(q[0], QuantConv1d) and type(q[2]) is nn.Conv1d and isinstance(q[4], QuantConv1d)
    with torch.no_grad():
        got = q(x)
    assert F.cosine_similarity(got.flatten(), want.flatten(), 0) > 0.999
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    with pytest.warns(UserWarning):
        fresh = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config())
    state = torch.load(io.BytesIO(buf.getvalue()))
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), got)
        exported = torch.export.export(q, (x,))
        assert torch.equal(exported.module()(x), got)
    bad = dict(state)
    bad["4.packed"] = state["4.packed"][:-2].clone()
    with pytest.raises(ValueError, match="4.packed"):
        fresh.load_state_dict(bad)


def test_gptq_uses_the_conv1d_im2col_rows():
    model = _model()
    batches = [torch.randn(3, 48, 50) * torch.linspace(0.1, 3, 48)[:, None] for _ in range(3)]
    cfg = pyquant.WeightOnlyConfig(4, 32)
    filt = lambda m, fqn: fqn in ("0", "4")  # noqa: E731
    rtn = pyquant.quantize_(copy.deepcopy(model), cfg, filter_fn=filt)
    gq = pyquant.nn.gptq_(copy.deepcopy(model), cfg, batches, filter_fn=filt)
    assert isinstance(gq[0], QuantConv1d)
    assert not torch.equal(rtn[0].packed, gq[0].packed)
    with torch.no_grad():
        x = batches[0]
        want = model(x)
        cos = lambda m: F.cosine_similarity(m(x).flatten(), want.flatten(), 0).item()  # noqa: E731
        assert cos(gq) >= cos(rtn) - 1e-3
