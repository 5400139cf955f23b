"""QuantConv2d's native forward (csrc/forward/conv.h: im2col rows made chunk by chunk in cache and
fed to the fused linear forward) against the same layer run as an explicit im2col matrix through
QuantLinear's forward (itself checked against independent references in test_nn.py and
test_nn_forward.py). Per-row quantization makes the chunks independent, so the two must agree
bit for bit: every config, dynamic and static, every geometry below, NCHW and channels_last,
1 and 2 threads (chunks run one per thread or one after the other), every ISA path.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import pyquant
from pyquant import _C
from pyquant.nn.modules import im2col

CONFIGS = {
    "int8": pyquant.Int8Config(),
    "int8_7bit": pyquant.Int8Config(act_bits=7),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "w2g64": pyquant.WeightOnlyConfig(2, 64),
    "lut_minmax": pyquant.LUT2Config(a_scale="minmax"),
    "lut_mse": pyquant.LUT2Config(a_scale="mse"),
    "sparq_signed": pyquant.SparqConfig(negative="sign_magnitude"),
    "sparq24": pyquant.SparqConfig(sparse24=True, negative="error"),
    "sparq24_signed": pyquant.SparqConfig(sparse24=True),
}
NON_NEGATIVE = {"sparq24"}  # (negative='error': post-ReLU inputs)

# (in, out, kernel, stride, padding, dilation, padding_mode, batch, H, W)
GEOMETRIES = {
    "3x3": (8, 16, 3, 1, 1, 1, "zeros", 2, 9, 11),
    "rgb7x7s2": (3, 8, 7, 2, 3, 1, "zeros", 1, 23, 20),  # K = 147: a tail in every block
    "1x1": (16, 24, 1, 1, 0, 1, "zeros", 3, 5, 7),
    "dilated": (4, 6, 3, 1, 2, 2, "zeros", 1, 12, 10),
    "asym": (5, 7, (3, 1), (2, 1), (1, 0), 1, "zeros", 2, 8, 6),
    "same": (6, 5, 4, 1, "same", 1, "zeros", 1, 7, 9),  # even kernel: uneven padding
    "valid": (6, 5, 3, 2, "valid", 1, "zeros", 1, 9, 9),
    "reflect": (4, 8, 3, 1, 1, 1, "reflect", 1, 6, 6),
    "circular": (4, 8, 3, 2, 2, 1, "circular", 2, 7, 5),
    "pad_gt_kernel": (2, 3, 2, 1, 3, 1, "zeros", 1, 3, 4),  # whole patches in the padding
    "kernel_eq_input": (3, 4, 5, 1, 0, 1, "zeros", 2, 5, 5),  # one output pixel
    "c1": (1, 4, 3, 1, 1, 1, "zeros", 1, 10, 10),
    "many_chunks": (8, 40, 3, 1, 1, 1, "zeros", 2, 48, 40),  # 3840 rows of K = 72: 5 chunks
    "wide_k": (130, 20, 3, 1, 1, 1, "zeros", 1, 6, 5),  # K = 1170 > the 64 KiB chunk's rows
    # 3 chunks (of 64 Ki floats / (K + N) = 771 rows): at 2 threads one after the other, each
    # forward on both threads; the last chunk a single row (the GEMV paths)
    "three_chunks_1row_tail": (8, 13, 3, 1, 1, 1, "zeros", 1, 1, 1543),
}


def _conv(geometry, seed, bias=True):
    cin, cout, k, s, p, d, mode, *_ = geometry
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, s, p, d, bias=bias, padding_mode=mode)


def _input(geometry, config_name, seed):
    *_, b, h, w = geometry
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, geometry[0], h, w, generator=g)
    return x.abs() if config_name in NON_NEGATIVE else x


def _native_calls(q):
    """Counts the native calls made with a conv geometry (proof the native conv path ran)."""
    run, calls = q._run, []

    def spy(x, threads, conv=None):
        calls.append(conv)
        return run(x, threads, conv)
    q._run = spy
    q._bound = ()  # (keeps _native_run from rebinding over the spy)
    return calls


def _through_im2col(q, x):
    """The same layer as an explicit im2col matrix through the linear fused forward."""
    cols, (b, ho, wo) = im2col(q, x)
    y = q._gemm(cols.contiguous())
    return y.view(b, ho, wo, q.out_channels).permute(0, 3, 1, 2).contiguous()


def _convert(config, conv, calib=None):
    if getattr(config, "sparse24", False):
        with torch.no_grad():  # 2:4 prune so that every config sees its own layer
            w = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
            k4 = w.shape[1] // 4 * 4
            g = w[:, :k4].reshape(w.shape[0], -1, 4)
            g.mul_(g.abs().argsort(-1).argsort(-1) >= 2)
    q = pyquant.nn.QuantConv2d.from_conv(conv, config)
    if calib is not None:
        pyquant.calibrate(q, [calib])
    return q


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_native_conv_equals_im2col_forward(isa, threads, config_name, geometry, static):
    geom = GEOMETRIES[geometry]
    x = _input(geom, config_name, seed=len(geometry))
    q = _convert(CONFIGS[config_name], _conv(geom, seed=3), calib=x if static else None)
    calls = _native_calls(q)
    with torch.inference_mode():
        y = q(x)
        assert len(calls) == 1 and calls[0] is not None  # the native conv ran
        ref = _through_im2col(q, x)
        assert y.shape == ref.shape
        assert y.is_contiguous()
        assert torch.equal(y, ref), (isa, config_name, geometry)
        # channels_last in, channels_last out (as nn.Conv2d), the same values
        ycl = q(x.contiguous(memory_format=torch.channels_last))
        assert torch.equal(ycl, ref)
        if geom[0] > 1 and min(ycl.shape[2:]) > 1 and ycl.shape[1] > 1:
            assert ycl.is_contiguous(memory_format=torch.channels_last)


def test_native_conv_bits_equal_across_isas_and_threads():
    geom = GEOMETRIES["many_chunks"]
    x = _input(geom, "int8", seed=1)
    outs = []
    previous = _C.active_isa()
    try:
        for isa in pyquant.cpu_info()["available"]:
            _C.set_isa(isa)
            for name in ("int8", "w4g32", "lut_mse", "sparq_signed"):
                q = _convert(CONFIGS[name], _conv(geom, seed=5))
                for t in (1, 2):
                    pyquant.set_num_threads(t)
                    with torch.inference_mode():
                        outs.append(((isa, name, t), q(x)))
    finally:
        _C.set_isa(previous)
        pyquant.set_num_threads(None)
    by_config = {}
    for (isa, name, t), y in outs:
        first = by_config.setdefault(name, y)
        assert torch.equal(y, first), (isa, name, t)


def test_native_conv_dtypes_batches_and_grad():
    q = _convert(pyquant.Int8Config(), _conv(GEOMETRIES["3x3"], seed=1))
    x = torch.randn(2, 8, 9, 11)
    with torch.inference_mode():
        ref = _through_im2col(q, x)
        assert torch.equal(q(x[0]), ref[0])  # unbatched
        assert q(x[:0]).shape == (0, 16, 9, 11)  # empty batch
        y16 = q(x.half())
        assert y16.dtype == torch.float16
        assert torch.equal(y16, _through_im2col(q, x.half().float()).half())
        # a non-contiguous input (a strided view)
        xs = torch.randn(2, 8, 18, 11)[:, :, ::2]
        assert torch.equal(q(xs), _through_im2col(q, xs.contiguous()))
    # a plain call after float layers with parameters: runs (in-place ops after it too, NCHW and
    # channels_last); only a backward fails
    for fmt in (torch.contiguous_format, torch.channels_last):
        pre = nn.Conv2d(8, 8, 1).to(memory_format=fmt)
        xf = x.contiguous(memory_format=fmt)
        y = torch.relu_(q(pre(xf)))
        with torch.no_grad():
            assert torch.equal(y, torch.relu(_through_im2col(q, pre(xf))))
        with pytest.raises(RuntimeError, match="inference-only"):
            y.sum().backward()


def test_native_conv_geometry_beyond_native_limit_falls_back():
    conv = nn.Conv2d(2, 3, 1, stride=(1 << 16) + 1)
    q = _convert(pyquant.Int8Config(), conv)
    x = torch.randn(1, 2, 3, (1 << 16) + 3)
    calls = _native_calls(q)
    with torch.inference_mode():
        y = q(x)
        assert calls == [None]  # the linear forward on im2col rows, not the native conv
        assert torch.equal(y, _through_im2col(q, x))


def test_native_conv_too_small_input():
    q = _convert(pyquant.Int8Config(), _conv(GEOMETRIES["3x3"], seed=1))
    q_valid = _convert(pyquant.Int8Config(), _conv(GEOMETRIES["valid"], seed=1))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        q_valid(torch.randn(1, 6, 2, 9))
    assert q(torch.randn(1, 8, 1, 1)).shape == (1, 16, 1, 1)  # padding makes room


@pytest.mark.parametrize("conv, message", [
    ((3, 3, 1, 1, 1, 1, 1, 1), "conv: expected"),  # 8 fields
    ((3, 3, 0, 1, 1, 1, 1, 1, 1), "kernel, stride and dilation"),
    ((3, 3, 1, 1, -1, 1, 1, 1, 1), "padding"),
    ((3, 3, 1, 1, 1, 1, 1, 1, 2), "nchw"),
    ((3, 3, 1, 1, 1, 1, 1, 1 << 20, 1), "dilation"),
    ((2, 3, 1, 1, 1, 1, 1, 1, 1), "kernel_h \\* kernel_w \\* C"),  # K mismatch
])
def test_native_conv_binding_rejects_bad_geometry(conv, message):
    q = _convert(pyquant.Int8Config(), _conv(GEOMETRIES["3x3"], seed=1))
    run = q._native_run()
    x = np.zeros((1, 8, 9, 11), np.float32)  # NCHW (nchw = 1)
    with pytest.raises(ValueError, match=message):
        run(x, 1, conv)
    with pytest.raises(ValueError, match="x: expected"):
        run(np.zeros((9, 11, 8), np.float32), 1, (3, 3, 1, 1, 1, 1, 1, 1, 1))


@pytest.mark.parametrize("config_name", ["int8", "w4g32", "lut_mse", "sparq_signed", "sparq24"])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
def test_compiled_conv_runs_the_op_and_matches_eager(config_name, fmt):
    """torch.compile(fullgraph) traces QuantConv2d as the config's op with the conv geometry
    (one opaque call, no im2col in the graph) and gives eager's bits."""
    geom = GEOMETRIES["3x3"]
    conv = _conv(geom, seed=3)
    model = nn.Sequential(_convert(CONFIGS[config_name], conv), nn.ReLU())
    x = _input(geom, config_name, seed=4)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        y = compiled(x)
        assert torch.equal(y, model(x))
    assert y.is_contiguous(memory_format=torch.channels_last if fmt == "channels_last"
                           else torch.contiguous_format)
    if config_name != "sparq24":  # (2:4 SPARQ has no op: the im2col path under compile)
        ep = torch.export.export(model, (x,))
        calls = [n for n in ep.graph.nodes if n.op == "call_function" and "pyquant" in str(n.target)]
        assert len(calls) == 1 and calls[0].args[-1] is not None  # the op with the conv geometry
        assert not any("im2col" in str(n.target) or "unfold" in str(n.target) for n in ep.graph.nodes)
        with torch.no_grad():
            assert torch.equal(ep.module()(x), model(x))


def _spy_native_forward(monkeypatch):
    """Records the conv argument of every native forward_int8 call made through the ops."""
    calls = []
    real = _C.forward_int8

    def spy(*args):
        calls.append(args[-1])
        return real(*args)
    monkeypatch.setattr(_C, "forward_int8", spy)
    return calls


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_records_the_ops_not_a_constant():
    model = pyquant.quantize_(_cnn(), pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    x1, x2 = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x1,))
        assert torch.equal(traced(x2), model(x2))  # (was x1's output, recorded as a constant)
        assert torch.equal(traced(x1), model(x1))
    assert str(traced.inlined_graph).count("pyquant::int8_linear") == 2  # conv + linear


def test_compiled_plain_call_runs_the_conv_op(monkeypatch):
    """A compiled call with grad enabled (BN parameters require grad) takes the conv op, not the
    im2col path; only a backward fails."""
    model = pyquant.quantize_(_cnn(), pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter,
                              fold_batchnorm=False)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        ref = model(x)
    calls = _spy_native_forward(monkeypatch)
    torch._dynamo.reset()
    y = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    assert torch.equal(y.detach(), ref)
    assert any(c is not None for c in calls)  # the conv layer ran as one native conv call
    with pytest.raises(RuntimeError, match="inference-only"):
        y.sum().backward()


def test_calibrate_a_compiled_model():
    model = pyquant.quantize_(_cnn(), pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(4, 3, 6, 6)
    compiled(x)
    pyquant.calibrate(compiled, [x])
    assert not torch.isnan(model[0].act_range).any()  # (was silently left dynamic)
    with torch.no_grad():
        torch._dynamo.reset()
        assert torch.equal(torch.compile(model, backend="aot_eager")(x), model(x))


def test_strided_channels_last_input_keeps_channels_last():
    q = _convert(pyquant.Int8Config(), _conv(GEOMETRIES["3x3"], seed=1))
    x = torch.randn(2, 8, 18, 22).contiguous(memory_format=torch.channels_last)[:, :, ::2, ::2]
    with torch.inference_mode():
        y = q(x)
        assert torch.equal(y, _through_im2col(q, x.contiguous()))
    assert y.is_contiguous(memory_format=torch.channels_last)  # as nn.Conv2d


def test_autocast_output_dtype_follows_the_float_layer():
    conv = _conv(GEOMETRIES["3x3"], seed=1)
    q = _convert(pyquant.Int8Config(), conv)
    lin = nn.Linear(8, 5)
    ql = pyquant.nn.QuantLinear.from_linear(lin, pyquant.Int8Config())
    x = torch.randn(2, 8, 9, 11)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert q(x).dtype == conv(x).dtype == torch.bfloat16
        assert ql(x[:, :, 0, :8]).dtype == lin(x[:, :, 0, :8]).dtype == torch.bfloat16
        xd = x[:, :, 0, :8].double()  # autocast leaves float64 alone
        assert ql(xd).dtype == lin.double()(xd).dtype == torch.float64


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_cnn_study_models_end_to_end(name):
    """The study's models (pyquant.studies.resnet) through quantize_: the convs with enough
    products per pixel quantized, the stems, narrow and depthwise convs left float (a warning);
    close to fp32, and the same bits in NCHW and channels_last."""
    from pyquant.nn.conv_gain import worth_converting
    from pyquant.studies.resnet import MODELS

    fp32 = MODELS[name](num_classes=10)
    with pytest.warns(UserWarning, match="few products per output pixel"):
        q = pyquant.quantize_(MODELS[name](num_classes=10), pyquant.Int8Config())
    convs = [m for m in fp32.modules() if type(m) is nn.Conv2d]
    quantized = [m for m in q.modules() if isinstance(m, (pyquant.nn.QuantConv2d,
                                                          pyquant.nn.QuantGroupedConv2d))]
    assert len(quantized) == sum(worth_converting(c) for c in convs) > 0
    assert not worth_converting(convs[0])  # (the stem)
    bns = [sum(type(m) is nn.BatchNorm2d for m in model.modules()) for model in (fp32, q)]
    assert bns[1] == bns[0] - len(quantized)  # (each converted conv's BN folded into it)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = q(x)
        assert torch.nn.functional.cosine_similarity(y, fp32(x)).min() > 0.99
        assert torch.equal(q.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)), y)


def test_conv_channels_whose_k_would_wrap_are_refused():
    """kh * kw * C of a zero-size image with a huge C can wrap to the weight's K; the binding
    divides instead of multiplying (this once wrote past a scratch buffer)."""
    taps = 65535 * 65535
    c = pow(taps, -1, 2**64)  # taps * c == 1 (mod 2^64)
    assert c < 2**62
    x = np.zeros((1, 0, 0, c), np.float32)  # NHWC, zero-size
    packed = pyquant.prepack(np.ones((1, 1), np.int8), "int8_gemm").buffer
    geometry = (65535, 65535, 1, 1, 32768, 32768, 1, 1, 0)  # padding: a 2 x 2 output
    with pytest.raises(ValueError, match="K = 1"):
        _C.forward_int8(x, packed, np.ones(1, np.float32), np.zeros(1, np.float32), None,
                        np.full(2, np.nan, np.float32), 1, 8, geometry)
