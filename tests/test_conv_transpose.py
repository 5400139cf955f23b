"""QuantConvTranspose2d / 1d: nn.ConvTranspose2d / 1d as one GEMM row per input pixel + col2im.

The reference is built here from the definition of a transposed conv: a QuantLinear of the
[kh * kw * C_out, C_in] weight (columns (ky, kx, c_out)) on the input pixels as rows, then each
tap's [B, H, W, C_out] block added at output pixel (iy * stride + ky * dilation - padding, ...)
onto the bias, tap after tap in (ky, kx) order (the order col2im documents: float sums in the
same order, so equal bit for bit). Every config, dynamic and static, geometry, ISA path and
thread count; NCHW and channels_last; and the float layer within quantization error.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyquant
from pyquant.nn import QuantConvTranspose1d, QuantConvTranspose2d, QuantLinear

CONFIGS = {
    "int8": pyquant.Int8Config(),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "lut_minmax": pyquant.LUT2Config(a_scale="minmax"),
    "sparq_signed": pyquant.SparqConfig(negative="sign_magnitude"),
}
# (in, out, kernel, stride, padding, output_padding, dilation, batch, H, W)
GEOMETRIES = {
    "unet_k2s2": (16, 8, 2, 2, 0, 0, 1, 2, 5, 6),
    "dcgan_k4s2p1": (12, 7, 4, 2, 1, 0, 1, 1, 4, 5),
    "k3s2p1_op1": (40, 9, 3, 2, 1, 1, 1, 2, 5, 3),  # K = 40: a group tail at g32
    "rect": (8, 5, (3, 2), (1, 3), (2, 0), (0, 2), (2, 1), 1, 4, 3),
    "dilated_op": (6, 4, 3, 2, 0, 1, 2, 1, 3, 4),  # output_padding < dilation, not < stride
    "pointwise": (33, 20, 1, 1, 0, 0, 1, 2, 7, 7),
    "stride_gt_kernel": (8, 6, 2, 3, 1, 2, 1, 1, 4, 4),  # output pixels no tap reaches: bias
}


def _conv(geometry, bias=True):
    cin, cout, k, s, p, op, d, *_ = geometry
    torch.manual_seed(3)
    return nn.ConvTranspose2d(cin, cout, k, s, p, op, bias=bias, dilation=d)


def _reference(conv: nn.ConvTranspose2d, q, x: torch.Tensor) -> torch.Tensor:
    """The layer from the definition (module docstring), NCHW."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    (dh, dw), (oph, opw) = conv.dilation, conv.output_padding
    b, cin, h, w = x.shape
    cout = conv.out_channels
    w2d = conv.weight.detach().permute(2, 3, 1, 0).reshape(-1, cin)
    lin = QuantLinear(cin, w2d.shape[0], w2d, None, q.config)
    assert torch.equal(lin.packed, q.packed)  # the same weight codes
    lin.act_range.copy_(q.act_range)
    with torch.no_grad():
        cols = lin(x.permute(0, 2, 3, 1).reshape(-1, cin)).view(b, h, w, kh, kw, cout)
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    y = torch.zeros(b, ho, wo, cout)
    if conv.bias is not None:
        y += conv.bias.detach()
    for ky in range(kh):
        for kx in range(kw):
            for iy in range(h):
                oy = iy * sh + ky * dh - ph
                if not 0 <= oy < ho:
                    continue
                for ix in range(w):
                    ox = ix * sw + kx * dw - pw
                    if 0 <= ox < wo:
                        y[:, oy, ox] += cols[:, iy, ix, ky, kx]
    return y.permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_equals_quantlinear_and_the_scatter_by_definition(isa, threads, config_name, geometry,
                                                          static):
    geom = GEOMETRIES[geometry]
    conv = _conv(geom, bias=geometry != "pointwise")
    q = QuantConvTranspose2d.from_conv(conv, CONFIGS[config_name])
    x = torch.randn(geom[7], geom[0], geom[8], geom[9], generator=torch.Generator().manual_seed(5))
    if static:
        pyquant.calibrate(q, [x])
    want = _reference(conv, q, x)
    with torch.inference_mode():
        got = q(x)
        assert got.shape == conv(x).shape and got.is_contiguous()
        assert torch.equal(got, want), (isa, config_name, geometry)
        last = q(x.to(memory_format=torch.channels_last))
        assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, want)
        assert torch.equal(q(x[0]), want[0])  # unbatched
    with pyquant.nn.use_reference():  # the torch-op col2im (compile, export): the same bits
        ref = QuantConvTranspose2d.from_conv(conv, CONFIGS[config_name])
    ref.act_range.copy_(q.act_range)
    with torch.no_grad():
        assert torch.equal(ref(x), want)


def test_matches_the_float_layer_and_keeps_its_interface():
    conv = _conv(GEOMETRIES["k3s2p1_op1"])
    q = QuantConvTranspose2d.from_conv(conv, pyquant.Int8Config())
    x = torch.randn(2, 40, 5, 3)
    with torch.no_grad():
        assert F.cosine_similarity(q(x).flatten(), conv(x).flatten(), 0) > 0.999
        want = F.conv_transpose2d(x, q.dequantize_weight(), conv.bias, 2, 1, 1)
        assert F.cosine_similarity(q(x).flatten(), want.flatten(), 0) > 0.9999
        # output_size picks the output padding as nn.ConvTranspose2d does
        for size in ([9, 5], [10, 6], [2, 40, 10, 6]):
            assert q(x, output_size=size).shape == conv(x, output_size=size).shape
        with pytest.raises(ValueError, match="requested an output size"):
            q(x, output_size=[12, 6])
        assert q(x.half()).dtype == torch.float16
    assert q.weight.shape == conv.weight.shape and q.dequantize_weight().shape == conv.weight.shape
    assert (q.dequantize_weight() - conv.weight).abs().max() < conv.weight.abs().max() / 100
    assert "output_padding=(1, 1)" in repr(q) and q.stride == (2, 2) and q.groups == 1
    with pytest.raises(ValueError, match=r"x: expected \[B, 40, H, W\]"):
        q(torch.randn(2, 39, 5, 3))
    with pytest.raises(TypeError, match="x: expected a floating-point"):
        q(torch.ones(2, 40, 5, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="nn.ConvTranspose2d"):
        QuantConvTranspose2d.from_conv(nn.Conv2d(8, 4, 3), pyquant.Int8Config())
    with pytest.raises(ValueError, match="groups=2"):
        QuantConvTranspose2d.from_conv(nn.ConvTranspose2d(8, 4, 3, groups=2), pyquant.Int8Config())
    with pytest.raises(ValueError, match="lazy"):
        QuantConvTranspose2d.from_conv(nn.LazyConvTranspose2d(4, 3), pyquant.Int8Config())
    xg = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="QuantConvTranspose2d"):
        q(xg).sum().backward()


def test_norm_hooks_pruning_and_edge_shapes():
    """spectral_norm / weight_norm / pruning compute the weight in a pre-hook: converted as the
    forward sees it (a GAN generator, a HiFi-GAN upsampler); PyTorch's edge shapes."""
    torch.manual_seed(9)
    cfg = pyquant.Int8Config()
    sn = nn.utils.spectral_norm(nn.ConvTranspose2d(16, 8, 4, 2, 1))
    wn = nn.utils.weight_norm(nn.ConvTranspose1d(16, 8, 4, 2, 1))
    pruned = nn.ConvTranspose2d(16, 8, 2, 2)
    nn.utils.prune.l1_unstructured(pruned, "weight", 0.5)
    x = torch.randn(2, 16, 5, 6)
    with torch.no_grad():
        sn(x)  # (the power iteration settles)
        sn.eval()
        wn.load_state_dict(wn.state_dict())  # (weight stale until the next forward)
        for layer, xi in ((sn, x), (wn, x[:, :, 0]), (pruned, x)):
            q = (QuantConvTranspose1d if isinstance(layer, nn.ConvTranspose1d)
                 else QuantConvTranspose2d).from_conv(layer, cfg)
            assert F.cosine_similarity(q(xi).flatten(), layer(xi).flatten(), 0) > 0.999
        q = QuantConvTranspose2d.from_conv(nn.ConvTranspose2d(16, 8, 3, 2, 1), cfg)
        # unbatched input with output_size as [C, H, W]; 1-D with [C, L]
        assert q(x[0], output_size=[8, 10, 12]).shape == (8, 10, 12)
        q1 = QuantConvTranspose1d.from_conv(nn.ConvTranspose1d(16, 8, 3, 2, 1), cfg)
        assert q1(x[0, :, 0], output_size=[8, 12]).shape == (8, 12)
        # a stride past the native call's limit: the torch path, still exact
        far = nn.ConvTranspose1d(16, 8, 2, stride=70000)
        qf = QuantConvTranspose1d.from_conv(far, cfg)
        assert qf(x[:1, :, 0, :3]).shape == far(x[:1, :, 0, :3]).shape == (1, 8, 140002)
        # the padding eats the output: empty (PyTorch's oneDNN path gives that too, its native
        # path refuses it); an empty image is refused
        thin = nn.ConvTranspose2d(16, 8, 1, padding=(0, 3))
        assert QuantConvTranspose2d.from_conv(thin, cfg)(x[:, :, :, :6]).shape == (2, 8, 5, 0)
        with pytest.raises(ValueError, match="an empty image"):
            q(torch.zeros(1, 16, 0, 4))
        assert q(torch.zeros(0, 16, 5, 6)).shape == (0, 8, 9, 11)


def test_conv_transpose1d():
    torch.manual_seed(4)
    conv = nn.ConvTranspose1d(24, 10, 16, 8, 4)  # HiFi-GAN's upsampling shape
    q = QuantConvTranspose1d.from_conv(conv, pyquant.Int8Config())
    as_2d = nn.ConvTranspose2d(24, 10, (1, 16), (1, 8), (0, 4))
    with torch.no_grad():
        as_2d.weight.copy_(conv.weight.unsqueeze(2))
        as_2d.bias.copy_(conv.bias)
    q2 = QuantConvTranspose2d.from_conv(as_2d, pyquant.Int8Config())
    x = torch.randn(3, 24, 13)
    with torch.no_grad():
        got = q(x)
        assert got.shape == conv(x).shape and got.is_contiguous()
        assert torch.equal(got, q2(x.unsqueeze(2)).squeeze(2))
        assert torch.equal(q(x[1]), got[1])
        assert q(x, output_size=[110]).shape == conv(x, output_size=[110]).shape
        assert F.cosine_similarity(got.flatten(), conv(x).flatten(), 0) > 0.999
    assert q.weight.shape == conv.weight.shape and "kernel_size=(16,)" in repr(q)
    with pytest.raises(ValueError, match=r"x: expected \[B, 24, L\]"):
        q(torch.randn(3, 23, 13))


def test_transposed_forward_checks_its_arguments():
    """The fused forward's transposed mode (conv: 11 entries) refuses inconsistent calls."""
    conv = _conv(GEOMETRIES["unet_k2s2"])  # 16 -> 8, kernel 2: N = 32
    q = QuantConvTranspose2d.from_conv(conv, pyquant.Int8Config())
    run = q._run_transposed
    x = torch.randn(2, 16, 3, 4).numpy()
    g = [2, 2, 2, 2, 0, 0, 1, 1, 1, 0, 0]
    assert run(x, 1, g).shape == (2, 8, 6, 8)
    assert run(x.transpose(0, 2, 3, 1).copy(), 1, [*g[:8], 0, 0, 0]).shape == (2, 6, 8, 8)
    with pytest.raises(ValueError, match="C = K = 16"):
        run(torch.randn(2, 15, 3, 4).numpy(), 1, g)
    with pytest.raises(ValueError, match="not kernel_h \\* kernel_w \\* output channels"):
        run(x, 1, [3, 3, *g[2:]])
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        run(x, 1, [*g[:9], 2, 0])
    with pytest.raises(ValueError, match="kernel, stride and dilation"):
        run(x, 1, [2, 2, 0, *g[3:]])
    with pytest.raises(ValueError, match="no larger than the output"):
        run(x, 1, [2, 2, 2, 2, 9, 0, 1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="nchw must be 0 or 1"):
        run(x, 1, [*g[:8], 2, 0, 0])
    with pytest.raises(ValueError, match="x: expected a 4-D"):
        run(x[0], 1, g)
    bad_bias = pyquant.nn.schemes.scheme_for(q.config).bind(q._buffers, q.act_range,
                                                             torch.zeros(32))
    with pytest.raises(ValueError, match="bias: expected a float32 vector of length 8"):
        bad_bias(x, 1, g)


class _Decoder(nn.Module):
    """A small U-Net-style decoder: conv, two upsampling transposed convs, a generator's narrow
    last layer (left float by default), a grouped one (always float)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(64, 128, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(128, 64, 2, 2)  # 2x2x64 x 128 products a pixel
        self.up2 = nn.ConvTranspose2d(64, 48, 4, 2, 1)
        self.grouped = nn.ConvTranspose2d(48, 48, 3, padding=1, groups=4)
        self.last = nn.ConvTranspose2d(48, 3, 3, padding=1)  # 3x3x3 x 48: left float

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(self.up1(x))
        x = torch.relu(self.up2(x))
        return self.last(self.grouped(x))


def test_quantize_converts_transposed_convs_and_round_trips():
    model = _Decoder().eval()
    x = torch.randn(2, 64, 6, 5)
    with torch.no_grad():
        want = model(x)
    with pytest.warns(UserWarning) as record:
        q = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config())
    messages = " ".join(str(r.message) for r in record)
    assert ("left float 1 nn.ConvTranspose2d/1d layer(s) with few products per input pixel"
            in messages)
    assert "left float 1 grouped nn.ConvTranspose2d/1d layer(s) (grouped)" in messages
    assert isinstance(q.up1, QuantConvTranspose2d) and isinstance(q.up2, QuantConvTranspose2d)
    assert type(q.last) is nn.ConvTranspose2d and type(q.grouped) is nn.ConvTranspose2d
    with torch.no_grad():
        got = q(x)
    assert F.cosine_similarity(got.flatten(), want.flatten(), 0) > 0.999
    every = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config(),
                              filter_fn=pyquant.nn.every_layer_filter)
    assert isinstance(every.last, QuantConvTranspose2d)
    assert type(every.grouped) is nn.ConvTranspose2d
    # state dict, deepcopy, pickle of the whole module, export, a damaged file
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    with pytest.warns(UserWarning):
        fresh = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config())
    state = torch.load(io.BytesIO(buf.getvalue()))
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), got)
        assert torch.equal(copy.deepcopy(q)(x), got)
        exported = torch.export.export(q, (x,))
        assert torch.equal(exported.module()(x), got)
    bad = dict(state)
    bad["up2.packed"] = state["up2.packed"][:-2].clone()
    with pytest.raises(ValueError, match="up2.packed"):
        fresh.load_state_dict(bad)
    bad = dict(state)
    bad["up1.bias"] = torch.zeros(65)
    with pytest.raises(ValueError, match="up1.bias: expected shape"):
        fresh.load_state_dict(bad)


def test_three_d_convs_are_named_as_left_float():
    model = nn.Sequential(nn.Conv3d(4, 8, 3), nn.ConvTranspose3d(8, 4, 2, 2), nn.Flatten(),
                          nn.LazyLinear(3))
    model(torch.randn(1, 4, 5, 5, 5))
    with pytest.warns(UserWarning, match=r"left float 2 nn.Conv3d/nn.ConvTranspose3d layer\(s\) "
                                         r"\(0, 1\)"):
        pyquant.quantize_(model, pyquant.Int8Config())
    assert isinstance(model[3], QuantLinear)


def test_save_and_load_quantized_without_float_weights(tmp_path):
    model = _Decoder().eval()
    x = torch.randn(1, 64, 4, 4)
    cfg = pyquant.WeightOnlyConfig(4, 32)
    q = pyquant.quantize_(copy.deepcopy(model), cfg, filter_fn=pyquant.nn.every_layer_filter)
    with torch.no_grad():
        want = q(x)
    path = tmp_path / "decoder.safetensors"
    pyquant.save_quantized(q, path)
    with torch.device("meta"):
        empty = _Decoder()
    pyquant.load_quantized_(empty, path)
    assert isinstance(empty.last, QuantConvTranspose2d)
    with torch.no_grad():
        assert torch.equal(empty.eval()(x), want)


def test_gptq_uses_the_input_pixels_as_rows():
    model = _Decoder().eval()
    batches = [torch.randn(2, 64, 6, 5) * torch.linspace(0.1, 3, 64)[:, None, None]
               for _ in range(3)]
    cfg = pyquant.WeightOnlyConfig(4, 32)
    filt = lambda m, fqn: fqn in ("up1", "up2")  # noqa: E731
    rtn = pyquant.quantize_(copy.deepcopy(model), cfg, filter_fn=filt)
    gq = pyquant.nn.gptq_(copy.deepcopy(model), cfg, batches, filter_fn=filt)
    assert isinstance(gq.up1, QuantConvTranspose2d) and isinstance(gq.up2, QuantConvTranspose2d)
    assert not torch.equal(rtn.up1.packed, gq.up1.packed)
    with torch.no_grad():
        x = batches[0]
        want = model(x)
        err = lambda m: (m(x) - want).pow(2).mean().item()  # noqa: E731
        assert err(gq) < err(rtn)


def test_batchnorm_after_a_transposed_conv_is_folded():
    torch.manual_seed(8)
    model = nn.Sequential(nn.ConvTranspose2d(64, 48, 4, 2, 1, bias=False), nn.BatchNorm2d(48),
                          nn.ReLU())
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    model.eval()
    x = torch.randn(2, 64, 5, 4)
    with torch.no_grad():
        want = model(x)
    q = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config())
    assert isinstance(q[0], QuantConvTranspose2d) and isinstance(q[1], nn.Identity)
    kept = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config(), fold_batchnorm=False)
    assert isinstance(kept[1], nn.BatchNorm2d)
    with torch.no_grad():
        for m in (q, kept):
            assert F.cosine_similarity(m(x).flatten(), want.flatten(), 0) > 0.999
    one_d = nn.Sequential(nn.ConvTranspose1d(64, 96, 4, 2), nn.BatchNorm1d(96)).eval()
    with torch.no_grad():
        one_d[1].running_var.uniform_(0.5, 2)
        want = one_d(x[:, :, 0])
    q1 = pyquant.quantize_(one_d, pyquant.Int8Config())
    assert isinstance(q1[1], nn.Identity)
    with torch.no_grad():
        assert F.cosine_similarity(q1(x[:, :, 0]).flatten(), want.flatten(), 0) > 0.999


def test_unet_study_model_end_to_end():
    """The study's U-Net (pyquant.studies.resnet --model unet): its decoder's ConvTranspose2d
    layers converted but the narrowest (64 -> 32: 2 x 2 x 32 x 64 products per input pixel),
    close to fp32; every layer converted, the same bits in NCHW and channels_last."""
    from pyquant.studies.resnet import MODELS

    fp32 = MODELS["unet"](num_classes=4)
    with pytest.warns(UserWarning) as record:  # (the RGB stem, the last upsampling layer)
        q = pyquant.quantize_(MODELS["unet"](num_classes=4), pyquant.Int8Config())
    messages = " ".join(str(r.message) for r in record)
    assert "few products per output pixel" in messages
    assert "nn.ConvTranspose2d/1d layer(s) with few products per input pixel" in messages
    assert [m.in_channels for m in q.modules() if isinstance(m, QuantConvTranspose2d)] == \
        [512, 256, 128]
    assert [m.in_channels for m in q.modules() if type(m) is nn.ConvTranspose2d] == [64]
    x = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    every = pyquant.quantize_(MODELS["unet"](num_classes=4), pyquant.Int8Config(),
                              filter_fn=pyquant.nn.every_layer_filter)
    with torch.inference_mode():
        assert torch.nn.functional.cosine_similarity(q(x), fp32(x)).min() > 0.99
        # (PyTorch's float convs differ between the layouts: compared with every layer converted)
        y = every(x)
        assert torch.equal(every(x.contiguous(memory_format=torch.channels_last)), y)
