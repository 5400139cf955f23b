"""QuantGroupedConv2d / QuantGroupedConv1d (nn.Conv2d / nn.Conv1d with groups > 1).

The reference is the definition: group i is an independent QuantConv2d/1d built here from a
fresh float conv holding the group's weight slice, run on the input's channel slice; the
groups' outputs concatenated. The layer must equal it bit for bit, every config (all groups in
one native call), geometry, layout, ISA path and thread count, dynamic and static.
"""
from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import pyquant
from pyquant import _C
import pyquant.nn.gptq as gptq_module
from pyquant.nn import QuantConv1d, QuantConv2d, QuantGroupedConv1d, QuantGroupedConv2d
from pyquant.nn.modules import im2col

CONFIGS = {
    "int8": pyquant.Int8Config(),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "w2g32": pyquant.WeightOnlyConfig(2, 32),
    "lut_minmax": pyquant.LUT2Config(a_scale="minmax"),
    "lut_mse": pyquant.LUT2Config(),
    "sparq_signed": pyquant.SparqConfig(negative="sign_magnitude"),
    "sparq24": pyquant.SparqConfig(sparse24=True),
}
# Conv2d: (in, out, kernel, stride, padding, dilation, groups, padding_mode, batch, H, W)
GEOMETRIES_2D = {
    "g4_k3": (32, 64, 3, 1, 1, 1, 4, "zeros", 2, 9, 7),
    "g2_strided": (16, 40, 3, 2, 0, 1, 2, "zeros", 1, 11, 10),  # 20 columns a group
    "g3_dilated_same": (12, 9, 3, 1, "same", 2, 3, "zeros", 2, 8, 8),
    "depthwise": (8, 8, 3, 1, 1, 1, 8, "zeros", 2, 6, 5),  # K = 9: one k group, tails
    "multiplier": (6, 12, 3, 1, 1, 1, 6, "reflect", 1, 7, 7),  # 2 outputs per input channel
    "pointwise_g2": (40, 66, 1, 1, 0, 1, 2, "zeros", 2, 6, 6),  # 1x1: gathered per group
    "many_chunks": (16, 32, 3, 1, 1, 1, 2, "circular", 1, 70, 60),
}
# Conv1d: (in, out, kernel, stride, padding, dilation, groups, padding_mode, batch, L)
GEOMETRIES_1D = {
    "pos_conv": (48, 48, 16, 1, 8, 1, 3, "zeros", 2, 50),  # wav2vec2's, scaled down
    "g2_strided": (12, 8, 5, 2, 2, 1, 2, "replicate", 1, 33),
}


def _groups_reference(conv: nn.Module, q, x: torch.Tensor, static: bool) -> torch.Tensor:
    """The module docstring's definition (a fresh layer per group, not the module's own)."""
    g = conv.groups
    cg, ng = conv.in_channels // g, conv.out_channels // g
    float_cls, quant_cls = ((nn.Conv2d, QuantConv2d) if isinstance(conv, nn.Conv2d)
                            else (nn.Conv1d, QuantConv1d))
    outs = []
    for i in range(g):
        part = float_cls(cg, ng, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode)
        with torch.no_grad():
            part.weight.copy_(conv.weight[i * ng:(i + 1) * ng])
            if conv.bias is not None:
                part.bias.copy_(conv.bias[i * ng:(i + 1) * ng])
        layer = quant_cls.from_conv(part, q.config)
        if static:  # calibrated on its own channel slice
            pyquant.calibrate(layer, [x[:, i * cg:(i + 1) * cg]])
        with torch.no_grad():
            outs.append(layer(x[:, i * cg:(i + 1) * cg]))
    return torch.cat(outs, 1)


def _make(geometry, dims):
    torch.manual_seed(3)
    if dims == 2:
        cin, cout, k, s, p, d, g, mode, b, h, w = geometry
        conv = nn.Conv2d(cin, cout, k, s, p, d, groups=g, padding_mode=mode)
        x = torch.randn(b, cin, h, w, generator=torch.Generator().manual_seed(5))
    else:
        cin, cout, k, s, p, d, g, mode, b, length = geometry
        conv = nn.Conv1d(cin, cout, k, s, p, d, groups=g, padding_mode=mode)
        x = torch.randn(b, cin, length, generator=torch.Generator().manual_seed(5))
    return conv, x


def _quant(conv, config):
    cls = QuantGroupedConv2d if isinstance(conv, nn.Conv2d) else QuantGroupedConv1d
    return cls.from_conv(conv, config)


CASES = [(2, g) for g in GEOMETRIES_2D] + [(1, g) for g in GEOMETRIES_1D]


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("dims,geometry", CASES, ids=[f"{d}d-{g}" for d, g in CASES])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_grouped_conv_equals_its_groups(isa, threads, config_name, dims, geometry, static):
    conv, x = _make((GEOMETRIES_2D if dims == 2 else GEOMETRIES_1D)[geometry], dims)
    q = _quant(conv, CONFIGS[config_name])
    if static:
        pyquant.calibrate(q, [x])
    with torch.no_grad():
        y = q(x)
        assert torch.equal(y, _groups_reference(conv, q, x, static))
        assert y.shape == conv(x).shape
        image = x if dims == 2 else x.unsqueeze(-2)
        assert q._native(image) is not None  # (one native call for every group)
        if dims == 2:  # channels_last input: a channels_last output, the same values
            xl = x.contiguous(memory_format=torch.channels_last)
            yl = q(xl)
            assert yl.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(yl, y)
        assert torch.equal(q(x[0]), y[:1][0])  # unbatched


@pytest.mark.parametrize("config_name", ["int8", "w4g32"])
def test_grouped_conv_close_to_float(config_name):
    conv, x = _make(GEOMETRIES_2D["g4_k3"], 2)
    q = _quant(conv, CONFIGS[config_name])
    with torch.no_grad():
        y, f = q(x), conv(x)
    tol = 0.02 if config_name == "int8" else 0.12
    assert ((y - f).norm() / f.norm()).item() < tol
    assert q.weight.shape == conv.weight.shape and q.weight.dtype == torch.float32
    with pytest.warns(UserWarning, match="were read"):
        assert torch.equal(q.weight + 0, q.dequantize_weight())
    assert q.convs[1].weight.shape == (16, 8, 3, 3)
    assert ((q.dequantize_weight() - conv.weight).norm() / conv.weight.norm()).item() < tol
    assert torch.equal(q.bias, conv.bias.detach())


def test_quantize_converts_wide_groups_and_warns_for_narrow():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(96, 96, 16, padding=8, groups=2),  # 48 x 768 per group
                          nn.Conv1d(96, 96, 3, padding=1, groups=96),  # depthwise
                          nn.Conv1d(96, 96, 3, padding=1, groups=8),   # 12 per group
                          nn.Conv1d(96, 192, 3, padding=1, groups=2))  # 96 x 144 per group
    with pytest.warns(UserWarning, match=r"left float 3 nn.Conv2d/nn.Conv1d .*few products.*1, 2, 3"):
        pyquant.quantize_(model, pyquant.Int8Config())
    assert isinstance(model[0], QuantGroupedConv1d)
    assert type(model[1]) is nn.Conv1d and type(model[2]) is nn.Conv1d
    assert type(model[3]) is nn.Conv1d  # (96 x 144 = 13824 < 24576 products a group)
    wide = pyquant.quantize_(nn.Sequential(nn.Conv1d(192, 192, 3, groups=2)), pyquant.Int8Config())
    assert isinstance(wide[0], QuantGroupedConv1d)  # 96 x 288 = 27648: K < 512 per group is fine
    forced = pyquant.quantize_(nn.Sequential(nn.Conv2d(8, 8, 3, groups=8)), pyquant.Int8Config(),
                               filter_fn=lambda m, fqn: isinstance(m, nn.Conv2d))
    assert isinstance(forced[0], QuantGroupedConv2d) and len(forced[0].convs) == 8


def test_state_dict_round_trip_and_tampered_file():
    conv, x = _make(GEOMETRIES_2D["g4_k3"], 2)
    model = pyquant.quantize_(nn.Sequential(copy.deepcopy(conv)), pyquant.WeightOnlyConfig(4, 32),
                              filter_fn=lambda m, fqn: isinstance(m, nn.Conv2d))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    fresh = pyquant.quantize_(nn.Sequential(nn.Conv2d(32, 64, 3, padding=1, groups=4)),
                              pyquant.WeightOnlyConfig(4, 32),
                              filter_fn=lambda m, fqn: isinstance(m, nn.Conv2d))
    buf.seek(0)
    state = torch.load(buf)
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    bad = dict(state)
    bad["0.convs.2.packed"] = bad["0.convs.2.packed"][:-1].clone()  # a truncated group weight
    with pytest.raises(ValueError, match="packed"):
        fresh.load_state_dict(bad)


@pytest.mark.parametrize("cfg", [pyquant.WeightOnlyConfig(4, 32), pyquant.SparqConfig(sparse24=True)],
                         ids=["w4g32", "sparq24"])
def test_gptq_per_group_hessians(cfg):
    """GPTQ (and SparseGPT for 2:4) with one Hessian per group, from the group's channels: each
    group's codes equal a layer quantized alone with the Hessian of its own channel slice (the
    groups' inputs differ in scale and correlation, so a swapped or shared Hessian would not)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 128, 3, padding=1, groups=2)
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.randn(4, 128, 10, 10)
    x[:, 64:] = 5 * x[:, 64:] + x[:, 64:65]  # group 1: larger, correlated channels
    with torch.no_grad():
        f = model(x)
    rtn = pyquant.quantize_(copy.deepcopy(model), cfg)
    g = pyquant.nn.gptq_(copy.deepcopy(model), cfg, [x])
    assert isinstance(g[0], QuantGroupedConv2d)
    for i in range(2):
        part = nn.Conv2d(64, 64, 3, padding=1)
        with torch.no_grad():
            part.weight.copy_(conv.weight[64 * i:64 * (i + 1)])
            part.bias.copy_(conv.bias[64 * i:64 * (i + 1)])
        rows = im2col(part, x[:, 64 * i:64 * (i + 1)])[0]
        hs = gptq_module._Hessians()  # (gptq_'s float32 x^T x, bit for bit)
        hs.add(part, rows, shared=False)
        alone = QuantConv2d.from_conv(part, cfg, hessian=hs.of()[part], damp=0.2)
        assert torch.equal(g[0].convs[i].packed, alone.packed)
    with torch.no_grad():
        assert (g(x) - f).norm() < (rtn(x) - f).norm()


def test_gptq_rounds_to_nearest_where_group_hessians_are_too_large(monkeypatch):
    monkeypatch.setattr(gptq_module, "_MAX_GROUPED_HESSIAN_BYTES", 2 * 288 * 288 * 4 - 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=2))
    cfg = pyquant.WeightOnlyConfig(4, 32)
    g = pyquant.nn.gptq_(copy.deepcopy(model), cfg, [torch.randn(2, 64, 6, 6)],
                         filter_fn=lambda m, fqn: isinstance(m, nn.Conv2d))
    rtn = pyquant.quantize_(copy.deepcopy(model), cfg, filter_fn=lambda m, fqn: fqn == "0")
    assert all(torch.equal(a.packed, b.packed) for a, b in zip(g[0].convs, rtn[0].convs))


def test_compiled_grouped_conv_matches_eager():
    conv, x = _make(GEOMETRIES_1D["pos_conv"], 1)
    q = _quant(conv, pyquant.Int8Config())
    model = nn.Sequential(q).eval()
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    assert torch.equal(compiled, eager)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="QuantGroupedConv2d"):
        QuantConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), pyquant.Int8Config())
    with pytest.raises(ValueError, match="groups=1"):
        QuantGroupedConv2d.from_conv(nn.Conv2d(4, 4, 3), pyquant.Int8Config())
    with pytest.raises(TypeError, match="nn.Conv1d|Conv1d"):
        QuantGroupedConv1d.from_conv(nn.Conv2d(4, 4, 3, groups=2), pyquant.Int8Config())
    with pytest.raises(ValueError, match="hessians"):
        QuantGroupedConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), pyquant.WeightOnlyConfig(4, 32),
                                     hessians=[torch.eye(18)])
    q = QuantGroupedConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2), pyquant.Int8Config())
    with pytest.raises(ValueError, match=r"expected \[B, 8, H, W\]"):
        q(torch.randn(1, 6, 5, 5))


def test_native_call_validates_its_weights():
    """The binding checks the groups against the image and against each other."""
    q = QuantGroupedConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2), pyquant.Int8Config())
    args = [c.grouped_args() for c in q.convs]
    geometry = (3, 3, 1, 1, 0, 0, 1, 1, 1)
    x = np.zeros((1, 8, 5, 5), np.float32)
    assert _C.forward_int8_conv_groups(x, args, 1, 8, geometry).shape == (1, 8, 3, 3)
    with pytest.raises(ValueError, match="multiple of groups"):
        _C.forward_int8_conv_groups(np.zeros((1, 7, 5, 5), np.float32), args, 1, 8, geometry)
    with pytest.raises(ValueError, match="K = 36"):  # three groups of 8 / 3 channels
        _C.forward_int8_conv_groups(np.zeros((1, 9, 5, 5), np.float32), args + args[:1], 1, 8,
                                    geometry)
    other = QuantGroupedConv2d.from_conv(nn.Conv2d(8, 6, 3, groups=2), pyquant.Int8Config())
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        _C.forward_int8_conv_groups(x, [args[0], other.convs[1].grouped_args()], 1, 8, geometry)
    with pytest.raises(ValueError, match="at least one"):
        _C.forward_int8_conv_groups(x, [], 1, 8, geometry)
    w4 = QuantGroupedConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2), pyquant.WeightOnlyConfig(4, 32))
    with pytest.raises(ValueError, match="bits"):
        _C.forward_lowbit_conv_groups(x, [c.grouped_args() for c in w4.convs], 2, 32, 1, geometry)
    lut = QuantGroupedConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2), pyquant.LUT2Config())
    largs = [c.grouped_args() for c in lut.convs]
    levels = list(lut.config.a_levels), list(lut.config.w_levels)
    assert _C.forward_lut_conv_groups(x, largs, *levels, True, 1, geometry).shape == (1, 8, 3, 3)
    with pytest.raises(ValueError, match=r"weights\[0\].packed: packed with other w_levels"):
        _C.forward_lut_conv_groups(x, largs, levels[0], [-2, -1, 0, 1], True, 1, geometry)
    sparq = QuantGroupedConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2),
                                         pyquant.SparqConfig(negative="error"))
    sargs = [c.grouped_args() for c in sparq.convs]
    run = lambda x, bits=4, options=5, sparse24=False: _C.forward_sparq_conv_groups(  # noqa: E731
        x, sargs, bits, options, True, True, False, sparse24, 1, geometry)
    assert run(np.abs(np.random.randn(1, 8, 5, 5)).astype(np.float32)).shape == (1, 8, 3, 3)
    with pytest.raises(ValueError, match="negative='error'"):
        run(-np.ones((1, 8, 5, 5), np.float32))
    with pytest.raises(ValueError, match="another SPARQ configuration"):
        run(x, options=3)
    with pytest.raises(ValueError, match="not a SPARQ configuration"):
        run(x, options=4)
    with pytest.raises(ValueError, match="sparq24_gemm|packed for|op"):
        run(x, sparse24=True)  # (a dense SPARQ weight is not a 2:4 one)


def test_copies_and_dtypes():
    conv, x = _make(GEOMETRIES_2D["g4_k3"], 2)
    q = _quant(conv, pyquant.WeightOnlyConfig(4, 32))
    with torch.no_grad():
        y = q(x)
        assert torch.equal(copy.deepcopy(q)(x), y)
        assert torch.equal(pickle.loads(pickle.dumps(q))(x), y)
        xb = x.to(torch.bfloat16)
        yb = q(xb)
        assert yb.dtype == torch.bfloat16
        assert torch.equal(yb, q(xb.float()).to(torch.bfloat16))
        q.half()  # (the layer's scales stay float32; the weight reports the float layer's dtype)
        assert q.weight.dtype == torch.float16 and torch.equal(q(x), y)


def test_grad_inputs_empty_batches_and_autocast():
    conv, x = _make(GEOMETRIES_2D["g4_k3"], 2)
    q = _quant(conv, pyquant.Int8Config())
    with torch.no_grad():
        y = q(x)
        assert torch.equal(q(x.clone().requires_grad_()), y)  # (no graph under no_grad)
        assert q(x[:0]).shape == (0, 64, 9, 7)
    xg = x.clone().requires_grad_()
    out = q(xg)  # a plain call: the output, and a backward through it is a clear error
    assert torch.equal(out.detach(), y)
    with pytest.raises(RuntimeError, match="backward"):
        out.sum().backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert q(x).dtype == torch.bfloat16


@pytest.mark.parametrize("hooked", ["weight_norm", "prune", "spectral_norm"])
def test_weights_computed_by_forward_hooks_are_quantized_fresh(hooked):
    """Old-style weight_norm (fairseq's and torchaudio's wav2vec2 positional conv) and prune masks
    recompute ``weight`` in a forward pre-hook: after load_state_dict the attribute is stale until
    a forward, so the conversion runs the hook itself (dense and grouped convs, linears)."""
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv1d(96, 96, 16, padding=8, groups=2), nn.Conv1d(96, 64, 3),
                              nn.Linear(39, 64))  # (on the 39 output positions)
        for layer in model:
            if hooked == "weight_norm":
                torch.nn.utils.weight_norm(layer, dim=0)
            elif hooked == "spectral_norm":
                torch.nn.utils.spectral_norm(layer)
            else:
                torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=0.3)
        return model.eval()
    trained = build()
    with torch.no_grad():
        for layer in trained:
            if hooked == "spectral_norm":  # (a new direction: its norm is divided out)
                layer.weight_orig.add_(3 * layer.weight_orig.std() *
                                       torch.randn_like(layer.weight_orig))
            else:
                (layer.weight_g if hooked == "weight_norm" else layer.weight_orig).mul_(3.0)
    def loaded():
        model = build()
        model.load_state_dict(trained.state_dict())  # (weight itself: stale until a forward)
        return model
    model, x = loaded(), torch.randn(1, 96, 40)  # (a weight_norm module cannot be deep-copied)
    q = pyquant.quantize_(loaded(), pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    assert isinstance(q[0], QuantGroupedConv1d) and isinstance(q[1], QuantConv1d)
    with torch.no_grad():
        want, got = model(x), q(x)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), 0) > 0.99
    assert 0.95 < (got.norm() / want.norm()).item() < 1.05


def test_grouped_gptq_default_damp_and_small_input_message():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, groups=2)
    hessians = [torch.eye(32 * 9, dtype=torch.float64)] * 2
    q = QuantGroupedConv2d.from_conv(conv, pyquant.WeightOnlyConfig(4, 32), hessians=hessians)
    assert len(q.convs) == 2
    with pytest.raises(ValueError, match=r"input of shape \(2, 64, 1, 1\) is smaller"):
        q(torch.randn(2, 64, 1, 1))
