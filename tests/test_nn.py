"""PyTorch front end: QuantLinear / QuantConv2d / quantize_ against pure-PyTorch references.

Every config runs twice: through pyquant's kernels ("kernel", skipped while the op is not in this
build) and through the pure-PyTorch reference ops ("reference", always). The reference for the
output is dequantize-then-matmul in float64 on the scheme's own codes; the integer parts are exact,
so the only slack is the float32 epilogue (tolerance scaled by the output's magnitude). An SQNR
bound against the float module checks the quantization itself is sane.
"""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyquant
from pyquant.nn import _backend
from pyquant.nn.schemes import asym_u8, int8_weight, scheme_for

CONFIGS = [
    pytest.param(pyquant.Int8Config(), 30.0, id="int8"),
    pytest.param(pyquant.WeightOnlyConfig(bits=4, group_size=64), 18.0, id="w4g64"),
    pytest.param(pyquant.WeightOnlyConfig(bits=4, group_size=32), 18.0, id="w4g32"),
    pytest.param(pyquant.WeightOnlyConfig(bits=2, group_size=128), 4.0, id="w2g128"),
    pytest.param(pyquant.LUT2Config(), 3.0, id="lut2-mse"),
    pytest.param(pyquant.LUT2Config(w_levels=(-2, -1, 0, 1), a_scale="minmax"), 1.0, id="lut2-minmax"),
    pytest.param(pyquant.SparqConfig(), 20.0, id="sparq-5opt"),
    pytest.param(pyquant.SparqConfig(options=2, rounding="trunc", pairs=False), 12.0, id="sparq-2opt"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Tiny tensors: torch's thread pool only adds spin-wait overhead (badly so on a loaded machine).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(params=["kernel", "reference"])
def backend(request):
    return request.param


def _ctx(config, backend):
    """Context in which modules are built for `backend`; skips kernel runs of missing ops."""
    if backend == "kernel":
        missing = [op for op in scheme_for(config).ops if not _backend.available(op)]
        if missing:
            pytest.skip(f"pyquant.{missing[0]} is not in this build yet (lands with its issue)")
    return _backend.use_reference(backend == "reference")


def _sqnr(y, ref):
    return (10 * torch.log10(ref.double().pow(2).mean() / (y.double() - ref.double()).pow(2).mean())).item()


def _fq_linear(m, lin, x2d):
    """Dequantize-then-matmul reference in float64 (uses the module's static range if set)."""
    rng = None if torch.isnan(m.act_range).any() else m.act_range
    ref = m.scheme.fake_quant_act(x2d, rng) @ m.scheme.fake_quant_weight(lin.weight.detach()).T
    return ref + (0 if lin.bias is None else lin.bias.detach().double())


def _assert_matches(y, ref):
    tol = 2e-5 * ref.abs().max().item() + 1e-6
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=tol)


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
@pytest.mark.parametrize("m,k,n", [(1, 7, 5), (3, 65, 33), (17, 130, 67), (40, 256, 96)])
def test_linear_matches_reference(config, min_sqnr, backend, m, k, n):
    torch.manual_seed(m * 1000 + k + n)
    lin = nn.Linear(k, n, bias=(m != 3))
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    x = torch.randn(m, k) + 0.3 * torch.rand(1, k)  # skewed rows
    with torch.no_grad():
        y = q(x)
        _assert_matches(y, _fq_linear(q, lin, x))
        if k >= 64:
            assert _sqnr(y, lin(x)) > min_sqnr


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
def test_batch_dims_and_dtype(config, min_sqnr, backend):
    torch.manual_seed(1)
    lin = nn.Linear(48, 19)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    x = torch.randn(2, 3, 5, 48)
    with torch.inference_mode():
        y = q(x)
        assert y.shape == (2, 3, 5, 19) and y.dtype == torch.float32
        torch.testing.assert_close(y.reshape(-1, 19), q(x.reshape(-1, 48)), rtol=0, atol=0)
        assert q(x[0, 0, 0]).shape == (19,)  # no batch dim at all


def test_int8_accumulator_exact(backend):
    """The int32 part (zero point removed in integers) equals an int64 matmul exactly."""
    torch.manual_seed(3)
    lin = nn.Linear(300, 70)
    with _ctx(pyquant.Int8Config(), backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, pyquant.Int8Config())
    x = torch.randn(9, 300) * torch.rand(9, 1) * 10 + 1.0
    codes, sa, zp = asym_u8(x)
    wq, _ = int8_weight(lin.weight.detach())
    b = {n: getattr(q, n) for n in q._buf_names}
    acc = q.scheme.int_acc(codes, zp, b, 70, 300, q.reference)
    ref = (codes.long() - zp.long()) @ wq.long().T
    assert acc.dtype == torch.int32 and torch.equal(acc.long(), ref)


# ----------------------------------------------------------------------------- SPARQ reference
@pytest.mark.parametrize("value,expected", [
    (27, (26, 28, 24, 28, 16, 32)), (92, (88, 96, 80, 96, 80, 96)), (85, (80, 88, 80, 80, 80, 80)),
    (124, (120, 120, 112, 128, 112, 128)), (17, (16,) * 6), (255, (240,) * 6), (3, (3,) * 6)])
def test_sparq_reference_worked_examples(value, expected):
    """algorithms.md section 5 worked examples (5opt/3opt/2opt x trunc/round)."""
    got = []
    for options in (5, 3, 2):
        for rounding in ("trunc", "round"):
            narrow, _ = _backend.sparq_tables(4, options, rounding)
            got.append(int(narrow[value]))
    assert tuple(got) == expected


def test_sparq_reference_pairs():
    a = torch.tensor([[27, 0, 27, 5, 200]], dtype=torch.uint8)
    out = _backend.sparq_quantize_ref(a, bits=4, options=5, rounding="trunc", pairs=True)
    # 27 keeps 8 bits (partner zero); 27/5 both trimmed; 200 pairs with an implicit zero
    assert out.tolist() == [[27, 0, 26, 5, 200]]


@pytest.mark.skipif(not hasattr(pyquant, "sparq_quantize"), reason="pyquant.sparq_quantize not in this build yet")
@pytest.mark.parametrize("bits,options", [(4, 5), (4, 3), (4, 2), (3, 6), (2, 7)])
@pytest.mark.parametrize("rounding", ["round", "trunc"])
@pytest.mark.parametrize("pairs", [True, False])
def test_sparq_reference_matches_kernel(bits, options, rounding, pairs):
    a = torch.randint(0, 256, (7, 33), dtype=torch.uint8)
    a[a < 60] = 0
    kw = dict(bits=bits, options=options, rounding=rounding, pairs=pairs)
    assert torch.equal(pyquant.sparq_quantize(a, **kw), _backend.sparq_quantize_ref(a, **kw))


def test_sparq_negative_modes():
    lin = nn.Linear(16, 4)
    with _backend.use_reference():
        q = pyquant.nn.QuantLinear.from_linear(lin, pyquant.SparqConfig(negative="error"))
    with torch.no_grad():
        q(torch.rand(3, 16))  # non-negative: fine
        with pytest.raises(ValueError, match="negative"):
            q(torch.randn(3, 16))


# ----------------------------------------------------------------------------- conv
def _conv_reference(m, conv, x):
    """Independent im2col (one strided slice per tap, K ordered (ky, kx, c)) + fake-quant GEMM."""
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        xp, _ = m._pad(x)
    else:
        ph, pw = conv.padding
        xp = F.pad(x, (pw, pw, ph, ph))
    kh, kw = conv.kernel_size
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[:, :, ky * dh: ky * dh + sh * (ho - 1) + 1: sh, kx * dw: kx * dw + sw * (wo - 1) + 1: sw]
            for ky in range(kh) for kx in range(kw)]
    cols = torch.stack(taps, -1).permute(0, 2, 3, 4, 1).reshape(-1, kh * kw * x.shape[1])
    w2d = conv.weight.detach().permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
    rng = None if torch.isnan(m.act_range).any() else m.act_range
    y = m.scheme.fake_quant_act(cols, rng) @ m.scheme.fake_quant_weight(w2d).T
    if conv.bias is not None:
        y = y + conv.bias.detach().double()
    return y.reshape(x.shape[0], ho, wo, -1).permute(0, 3, 1, 2)


CONV_CASES = [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=5, out_channels=7, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
    dict(in_channels=6, out_channels=5, kernel_size=4, padding="same"),
    dict(in_channels=6, out_channels=5, kernel_size=1, padding="valid"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_matches_reference(config, min_sqnr, backend, case):
    torch.manual_seed(case)
    conv = nn.Conv2d(**CONV_CASES[case])
    with _ctx(config, backend):
        q = pyquant.nn.QuantConv2d.from_conv(conv, config)
    x = torch.relu(torch.randn(2, conv.in_channels, 9, 8))
    with torch.no_grad():
        y = q(x)
        assert y.shape == conv(x).shape and y.is_contiguous()
        _assert_matches(y, _conv_reference(q, conv, x))
        assert q(x[0]).shape == y.shape[1:]  # unbatched input


def test_conv_sparq_pairs_are_adjacent_channels():
    conv = nn.Conv2d(4, 3, 2, bias=False)
    with _backend.use_reference():
        q = pyquant.nn.QuantConv2d.from_conv(conv, pyquant.SparqConfig())
    x = torch.arange(16, dtype=torch.float32).reshape(1, 4, 2, 2)
    cols = F.unfold(x, 2).view(1, 4, 4, -1).permute(0, 3, 2, 1).reshape(-1, 16)
    # row 0, K = (tap0: c0 c1 c2 c3, tap1: ...): adjacent entries are neighbouring channels
    assert cols[0, :4].tolist() == x[0, :, 0, 0].tolist()
    assert q.in_features_k == 16


def test_conv_errors():
    with pytest.raises(ValueError, match="groups"):
        pyquant.nn.QuantConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), pyquant.Int8Config())
    with pytest.raises(TypeError, match="nn.Conv2d"):
        pyquant.nn.QuantConv2d.from_conv(nn.Linear(3, 3), pyquant.Int8Config())
    q = pyquant.nn.QuantConv2d.from_conv(nn.Conv2d(3, 4, 3), pyquant.Int8Config())
    with pytest.raises(ValueError, match="x: expected"):
        q(torch.randn(1, 5, 8, 8))


# ----------------------------------------------------------------------------- module behaviour
def _net():
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 32), nn.GELU(), nn.Linear(32, 10))


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
def test_save_load_bit_identical(config, min_sqnr, backend, tmp_path):
    with _ctx(config, backend):
        model = pyquant.quantize_(_net(), config)
        fresh = _net()
        for p in fresh.parameters():
            p.data.normal_()
        fresh = pyquant.quantize_(fresh, config)
    x = torch.randn(3, 3, 6, 6)
    pyquant.calibrate(model[:1], [x, x * 0.5])  # one static module among dynamic ones
    with torch.no_grad():
        y = model(x)
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(fresh(x), y)
        path = tmp_path / "m.pt"
        torch.save(model, path)
        assert torch.equal(torch.load(path, weights_only=False)(x), y)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        buf.seek(0)
        fresh.load_state_dict(torch.load(buf))
        assert torch.equal(fresh(x), y)
    assert str(config) in repr(model) and "static_act_range" in repr(model[0])


def test_state_dict_has_uint8_packed_buffers():
    q = pyquant.nn.QuantLinear.from_linear(nn.Linear(40, 8), pyquant.Int8Config())
    sd = q.state_dict()
    assert sd["packed"].dtype == torch.uint8 and sd["packed"].dim() == 1
    assert set(sd) == {"packed", "w_scale", "w_sum", "bias", "act_range"}
    assert not list(q.parameters())


def test_inference_only():
    q = pyquant.nn.QuantLinear.from_linear(nn.Linear(8, 4), pyquant.Int8Config())
    x = torch.randn(2, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        q(x)
    with torch.no_grad():
        y = q(x)
    assert not y.requires_grad
    with pytest.raises(RuntimeError):
        y.sum().backward()


def test_threads_do_not_change_results():
    q = pyquant.nn.QuantLinear.from_linear(nn.Linear(200, 130), pyquant.Int8Config())
    x = torch.randn(70, 200)
    with torch.no_grad():
        pyquant.set_num_threads(1)
        y1 = q(x)
        pyquant.set_num_threads(2)
        y2 = q(x)
        pyquant.set_num_threads(None)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("config,min_sqnr", CONFIGS)
def test_calibration_static_range(config, min_sqnr, backend):
    """calibrate() sets act_range = mean of batch min / max; the static path matches its reference."""
    torch.manual_seed(11)
    lin = nn.Linear(32, 8)
    with _ctx(config, backend):
        q = pyquant.nn.QuantLinear.from_linear(lin, config)
    batches = [torch.randn(4, 32) * s for s in (1.0, 2.0)]
    pyquant.calibrate(q, batches)
    lo = torch.stack([b.min() for b in batches]).mean()
    hi = torch.stack([b.max() for b in batches]).mean()
    torch.testing.assert_close(q.act_range, torch.stack([lo, hi]))
    x = torch.randn(5, 32) * 3  # partly outside the static range: clipped
    with torch.no_grad():
        _assert_matches(q(x), _fq_linear(q, lin, x))
    pyquant.nn.reset_calibration(q)
    assert torch.isnan(q.act_range).all()


# ----------------------------------------------------------------------------- compile / export
@pytest.mark.parametrize("config", [pyquant.Int8Config(), pyquant.SparqConfig()], ids=["int8", "sparq"])
def test_compile_matches_eager(config, backend):
    with _ctx(config, backend):
        model = pyquant.quantize_(_net(), config)
    x = torch.randn(2, 3, 6, 6)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))


def test_export_sees_opaque_op():
    model = pyquant.quantize_(_net(), pyquant.Int8Config())
    ep = torch.export.export(model, (torch.randn(2, 3, 6, 6),))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("pyquant.int8_linear" in t for t in targets) == 3  # one fused op per layer
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(ep.module()(x), model(x))


# ----------------------------------------------------------------------------- quantize_
def test_quantize_default_filter_and_return():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1, groups=2)),
                          nn.LayerNorm(4))
    out = pyquant.quantize_(model, pyquant.Int8Config())
    assert out is model
    assert isinstance(model[0], pyquant.nn.QuantLinear)
    assert isinstance(model[1][0], pyquant.nn.QuantConv2d)
    assert type(model[1][1]) is nn.Conv2d  # groups != 1 is left alone by the default filter
    assert type(model[2]) is nn.LayerNorm
    pyquant.quantize_(model, pyquant.SparqConfig())  # already quantized modules are not re-wrapped
    assert model[0].config == pyquant.Int8Config()


def test_quantize_filter_fn_gets_fqn():
    model = nn.Sequential()
    model.add_module("enc", nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    model.add_module("head", nn.Linear(4, 2))
    seen = []

    def keep_head(module, fqn):
        seen.append(fqn)
        return isinstance(module, nn.Linear) and fqn != "head"

    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=keep_head)
    assert seen == ["", "enc", "enc.0", "enc.1", "head"]
    assert isinstance(model.enc[0], pyquant.nn.QuantLinear) and type(model.head) is nn.Linear


def test_quantize_root_module_and_errors():
    q = pyquant.quantize_(nn.Linear(4, 3), pyquant.Int8Config())
    assert isinstance(q, pyquant.nn.QuantLinear)
    with pytest.raises(TypeError, match="config"):
        pyquant.quantize_(nn.Linear(4, 3), object())
    with pytest.raises(TypeError, match="nn.Linear"):
        pyquant.nn.QuantLinear.from_linear(nn.Conv2d(1, 1, 1), pyquant.Int8Config())
    with pytest.raises(ValueError, match="last dim"):
        with torch.no_grad():
            q(torch.randn(2, 5))


def test_config_validation():
    with pytest.raises(ValueError, match="bits"):
        pyquant.WeightOnlyConfig(bits=3)
    with pytest.raises(ValueError, match="group_size"):
        pyquant.WeightOnlyConfig(group_size=48)
    with pytest.raises(ValueError, match="int8"):
        pyquant.LUT2Config(w_levels=(-20, -1, 1, 20), a_levels=(0, 1, 2, 12))
    with pytest.raises(ValueError, match="options"):
        pyquant.SparqConfig(bits=4, options=4)
    assert pyquant.SparqConfig(bits=3, options=None).options == 6
    with pytest.raises(Exception):
        pyquant.Int8Config().x = 1  # frozen
    hash(pyquant.LUT2Config())


@pytest.mark.parametrize("op,config", [("lowbit_gemm", pyquant.WeightOnlyConfig()),
                                       ("lut_gemm", pyquant.LUT2Config()),
                                       ("sparq_gemm", pyquant.SparqConfig())])
def test_missing_kernel_is_a_clear_error(op, config):
    if hasattr(pyquant, op):
        pytest.skip(f"pyquant.{op} is built")
    with pytest.raises(RuntimeError, match=op):
        pyquant.nn.QuantLinear.from_linear(nn.Linear(64, 8), config)


# ----------------------------------------------------------------------------- a CNN end to end
def test_digits_cnn_end_to_end():
    """A small CNN trained on sklearn digits keeps its accuracy through QuantConv2d/QuantLinear."""
    pytest.importorskip("sklearn")
    from pyquant.studies.digits_cnn import accuracy, quantized, train_cnn

    model, (xtr, _), (xte, yte) = train_cnn(epochs=6)
    base = accuracy(model, xte, yte)
    assert base > 0.9
    q, _ = quantized(model, pyquant.Int8Config())
    assert sum(isinstance(m, pyquant.nn.QuantConv2d) for m in q.modules()) == 3
    assert accuracy(q, xte, yte) >= base - 0.02
    q, _ = quantized(model, pyquant.SparqConfig(), skip_first_last=True, calib=[xtr[:256]])
    assert isinstance(q[0], nn.Conv2d) and not isinstance(q[0], pyquant.nn.QuantConv2d)
    assert accuracy(q, xte, yte) >= base - 0.03


def test_gptq_beats_round_to_nearest():
    """GPTQ on correlated inputs: lower output error than RTN, same module/format."""
    torch.manual_seed(7)
    lin = nn.Linear(128, 48)
    mix = torch.randn(128, 128) / 128 ** 0.5 + torch.eye(128)
    xs = [torch.randn(64, 128) @ mix for _ in range(4)]
    config = pyquant.WeightOnlyConfig(bits=4, group_size=32)
    with _backend.use_reference():
        rtn = pyquant.quantize_(nn.Sequential(lin), config)
        gq = pyquant.nn.gptq_(nn.Sequential(lin), config, xs)
    assert isinstance(gq[0], pyquant.nn.QuantLinear) and gq[0].packed.shape == rtn[0].packed.shape
    x = torch.randn(256, 128) @ mix
    with torch.no_grad():
        assert _sqnr(gq(x), lin(x)) > _sqnr(rtn(x), lin(x)) + 0.5
    with pytest.raises(TypeError, match="WeightOnlyConfig"):
        pyquant.nn.gptq_(nn.Sequential(lin), pyquant.Int8Config(), xs)


def test_inference_mode_then_normal_mode():
    """Modules converted / run under inference_mode keep working outside it (and vice versa)."""
    lin = nn.Linear(24, 6)
    with torch.inference_mode():
        q = pyquant.nn.QuantLinear.from_linear(lin, pyquant.Int8Config())
        y1 = q(torch.randn(5, 24))
    x = torch.randn(5, 24)
    with torch.no_grad():
        y2 = q(x)
    pyquant.calibrate(q, [x])
    q.load_state_dict(q.state_dict())
    with torch.inference_mode():
        assert torch.equal(q(x), q(x)) and y1.shape == y2.shape


def test_weightonly_per_group_fallback(monkeypatch):
    """Without lowbit_gemm_grouped: one lowbit_gemm per K group, same results (within float)."""
    if not _backend.available("lowbit_gemm"):
        pytest.skip("pyquant.lowbit_gemm is not in this build yet")
    torch.manual_seed(9)
    lin = nn.Linear(200, 33)  # K not a multiple of the group size: a short last group
    config = pyquant.WeightOnlyConfig(bits=4, group_size=64)
    grouped = pyquant.nn.QuantLinear.from_linear(lin, config)
    monkeypatch.setattr(_backend, "available", lambda op: op != "lowbit_gemm_grouped")
    sliced = pyquant.nn.QuantLinear.from_linear(lin, config)
    assert "packed_offsets" in dict(sliced.named_buffers()) and sliced.packed_offsets.numel() == 5
    x = torch.randn(7, 200)
    with torch.no_grad():
        torch.testing.assert_close(sliced(x), grouped(x), rtol=1e-5, atol=1e-5)
        _assert_matches(sliced(x), _fq_linear(sliced, lin, x))
