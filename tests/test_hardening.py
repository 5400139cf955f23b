"""Property tests (hypothesis), hostile inputs and concurrency for the public ops."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyquant
from reference import gemm_ref, pack_ref

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def code_arrays(draw):
    bits = draw(st.sampled_from([1, 2, 4]))
    signed = draw(st.booleans())
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    shape = draw(st.lists(st.integers(0, 70), min_size=1, max_size=3))
    seed = draw(st.integers(0, 2**32 - 1))
    codes = np.random.default_rng(seed).integers(lo, hi + 1, size=shape)
    return codes.astype(np.int8 if signed else np.uint8), bits, signed


@SETTINGS
@given(code_arrays())
def test_pack_roundtrip_property(case):
    codes, bits, signed = case
    packed = pyquant.pack(codes, bits, signed=signed)
    np.testing.assert_array_equal(packed, pack_ref(codes, bits))
    np.testing.assert_array_equal(pyquant.unpack(packed, bits, codes.shape[-1], signed=signed), codes)


@SETTINGS
@given(st.integers(0, 20), st.integers(0, 150), st.integers(0, 300), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_int8_gemm_property(m, n, k, signed, seed):
    rng = np.random.default_rng(seed)
    dtype = np.int8 if signed else np.uint8
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, size=(m, k)).astype(dtype)
    w = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    c = pyquant.int8_gemm(a, w)
    assert c.shape == (m, n) and c.dtype == np.int32
    np.testing.assert_array_equal(c, gemm_ref(a, w))


HOSTILE = [None, 3, 2.5, "abc", [1, 2], [[1, 2]], (1, 2), object(), np.float64(1.0)]


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
def test_hostile_inputs_raise_typed_errors(bad):
    good_a = np.zeros((2, 4), np.uint8)
    good_w = np.zeros((3, 4), np.int8)
    for call in (
        lambda: pyquant.pack(bad, 2),
        lambda: pyquant.unpack(bad, 2, 4),
        lambda: pyquant.int8_gemm(bad, good_w),
        lambda: pyquant.int8_gemm(good_a, bad),
        lambda: pyquant.prepack(bad, "int8_gemm"),
    ):
        with pytest.raises((TypeError, ValueError)):
            call()


@pytest.mark.parametrize("n", [-1, 2**62, -(2**40)])
def test_absurd_sizes_are_value_errors(n):
    with pytest.raises(ValueError, match="n"):
        pyquant.unpack(np.zeros((1, 3), np.uint8), 4, n)


def test_unknown_op_and_bad_op_type():
    with pytest.raises(ValueError, match="op"):
        pyquant.prepack(np.zeros((2, 2), np.int8), "int3_gemm")
    with pytest.raises(TypeError, match="op"):
        pyquant.prepack(np.zeros((2, 2), np.int8), 3)


def test_concurrent_calls_match_serial(rng):
    """Many Python threads call the kernels at once (the GIL is released, so they really run in
    parallel, some inside the thread pool and some serially beside it): results equal serial."""
    a = rng.integers(0, 256, size=(33, 1000)).astype(np.uint8)
    ws = [rng.integers(-128, 128, size=(130, 1000)).astype(np.int8) for _ in range(4)]
    pws = [pyquant.prepack(w, "int8_gemm") for w in ws]
    codes = rng.integers(0, 4, size=(64, 999)).astype(np.uint8)
    expected = [gemm_ref(a, w) for w in ws]
    expected_pack = pack_ref(codes, 2)
    errors = []
    pyquant.set_num_threads(2)

    def worker(i):
        try:
            for _ in range(10):
                np.testing.assert_array_equal(pyquant.int8_gemm(a, pws[i % 4]), expected[i % 4])
                np.testing.assert_array_equal(pyquant.pack(codes, 2), expected_pack)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        pyquant.set_num_threads(None)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors[0]


def test_pyquant_and_torch_threads_in_one_process(rng):
    """torch's OpenMP pool and pyquant's std::thread pool side by side, both thread settings."""
    import torch

    a = rng.integers(0, 256, size=(64, 512)).astype(np.uint8)
    w = rng.integers(-128, 128, size=(256, 512)).astype(np.int8)
    ref = gemm_ref(a, w)
    x = torch.randn(64, 512)
    for n in (1, 2):
        torch.set_num_threads(n)
        for _ in range(3):
            torch.nn.functional.linear(x, torch.randn(256, 512))
            np.testing.assert_array_equal(pyquant.int8_gemm(a, w), ref)


# ---- the other ops: properties against their references --------------------------------------

@st.composite
def gemm_shapes(draw):
    return (draw(st.integers(0, 13)), draw(st.integers(0, 140)), draw(st.integers(0, 260)),
            draw(st.integers(0, 2**32 - 1)))


@st.composite
def codebooks(draw):
    """4 integer levels per side whose 16 products fit int8."""
    while True:
        a = tuple(draw(st.lists(st.integers(-12, 12), min_size=4, max_size=4)))
        w = tuple(draw(st.lists(st.integers(-12, 12), min_size=4, max_size=4)))
        if all(-128 <= x * y <= 127 for x in a for y in w):
            return a, w


@SETTINGS
@given(gemm_shapes(), codebooks())
def test_lut_gemm_property(shape, levels):
    m, n, k, seed = shape
    a_levels, w_levels = levels
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=(m, k)).astype(np.uint8)
    w = rng.integers(0, 4, size=(n, k)).astype(np.uint8)
    c = pyquant.lut_gemm(a, w, a_levels=a_levels, w_levels=w_levels)
    ref = np.asarray(a_levels, np.int64)[a] @ np.asarray(w_levels, np.int64)[w].T
    assert c.shape == (m, n)
    np.testing.assert_array_equal(c, ref.astype(np.int32))


@SETTINGS
@given(gemm_shapes(), st.sampled_from([2, 4]), st.booleans())
def test_lowbit_gemm_property(shape, bits, signed):
    m, n, k, seed = shape
    rng = np.random.default_rng(seed)
    dtype = np.int8 if signed else np.uint8
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, size=(m, k)).astype(dtype)
    half = 1 << (bits - 1)
    w = rng.integers(-half, half, size=(n, k)).astype(np.int8)
    c = pyquant.lowbit_gemm(a, w, bits=bits)
    assert c.shape == (m, n)
    np.testing.assert_array_equal(c, gemm_ref(a, w))


SPARQ_CONFIGS = [(4, 5), (4, 3), (4, 2), (3, 6), (2, 7)]


@SETTINGS
@given(gemm_shapes(), st.sampled_from(SPARQ_CONFIGS), st.sampled_from(["round", "trunc"]),
       st.booleans())
def test_sparq_property(shape, config, rounding, pairs):
    from reference_sparq import sparq_ref

    m, n, k, seed = shape
    bits, options = config
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(m, k)).astype(np.uint8)
    a[rng.random(a.shape) < 0.4] = 0
    w = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    kw = dict(bits=bits, options=options, rounding=rounding, pairs=pairs)
    q = pyquant.sparq_quantize(a, **kw)
    np.testing.assert_array_equal(q, sparq_ref(a, **kw))
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, **kw), gemm_ref(q, w))


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
def test_hostile_inputs_other_ops(bad):
    a2 = np.zeros((2, 4), np.uint8)
    w2 = np.zeros((3, 4), np.int8)
    for call in (
        lambda: pyquant.lut_gemm(bad, a2),
        lambda: pyquant.lut_gemm(a2, bad),
        lambda: pyquant.lowbit_gemm(bad, w2, bits=4),
        lambda: pyquant.lowbit_gemm(a2, bad, bits=4),
        lambda: pyquant.lowbit_gemm(a2, w2, bits=bad),
        lambda: pyquant.sparq_quantize(bad),
        lambda: pyquant.sparq_gemm(bad, w2),
        lambda: pyquant.sparq_gemm(a2, bad),
        lambda: pyquant.sparq_quantize(a2, rounding=bad),
        *([] if bad == 3 else [lambda: pyquant.sparq_quantize(a2, bits=bad)]),  # 3: a width
    ):
        with pytest.raises((TypeError, ValueError)):
            call()


def test_argument_errors_name_the_argument():
    """prepack names the op's missing or unknown keyword arguments (not an internal function),
    a torch dtype numpy lacks names the argument, numpy integers are thread counts."""
    import torch

    w = np.zeros((4, 8), np.int8)
    with pytest.raises(TypeError, match="op 'lowbit_gemm' needs the keyword argument.*bits"):
        pyquant.prepack(w, "lowbit_gemm")
    with pytest.raises(TypeError, match="takes no keyword argument.*foo.*it takes: bits"):
        pyquant.prepack(w, "lowbit_gemm", bits=4, foo=1)
    with pytest.raises(TypeError, match="a: torch dtype torch.bfloat16"):
        pyquant.int8_gemm(torch.zeros(2, 8, dtype=torch.bfloat16), w)
    try:
        pyquant.set_num_threads(np.int64(2))
        assert pyquant.get_num_threads() == 2
    finally:
        pyquant.set_num_threads(None)


# --------------------------------------------------------------------- module and API arguments
def _quantized(module, config=None):
    import torch
    from torch import nn
    torch.manual_seed(0)
    kinds = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.LSTM, nn.MultiheadAttention)
    return pyquant.quantize_(module.eval(), config or pyquant.Int8Config(),  # (small convs too)
                             filter_fn=lambda m, fqn: isinstance(m, kinds))


def test_module_inputs_that_are_not_dense_tensors_are_type_errors():
    """A numpy array, a list or a sparse tensor given to a quantized module: a TypeError naming
    the argument (an AttributeError or an error from inside torch before)."""
    import torch
    from torch import nn
    cases = [
        (_quantized(nn.Sequential(nn.Linear(64, 16))), (8, 64), "x"),
        (_quantized(nn.Sequential(nn.Conv2d(8, 16, 3))), (1, 8, 6, 6), "x"),
        (_quantized(nn.Sequential(nn.ConvTranspose2d(64, 64, 2, stride=2))), (1, 64, 4, 4), "x"),
        (_quantized(nn.LSTM(16, 32, batch_first=True)), (2, 3, 16), "input"),
    ]
    for model, shape, name in cases:
        assert any(type(m).__name__.startswith("Quant") for m in model.modules())
        x = torch.randn(*shape)
        for bad in (x.numpy(), x.tolist(), x.to_sparse()):
            with pytest.raises(TypeError, match=f"{name}: expected a"):
                model(bad)
    convt = cases[2][0][0]
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        convt(np.zeros((1, 64, 4, 4), np.float32), output_size=(8, 8))
    mha = _quantized(nn.MultiheadAttention(32, 4, batch_first=True))
    q = torch.randn(2, 5, 32)
    with pytest.raises(TypeError, match="query: expected a torch.Tensor"):
        mha(q.numpy(), q, q)
    with pytest.raises(TypeError, match="key_padding_mask: expected a torch.Tensor"):
        mha(q, q, q, key_padding_mask=np.zeros((2, 5), bool))
    with pytest.raises(TypeError, match="attn_mask: expected a dense"):
        mha(q, q, q, attn_mask=torch.zeros(5, 5).to_sparse())


def test_quant_gru_checks_x_and_h0_like_nn_gru():
    import torch
    from torch import nn
    from pyquant.nn.gru import QuantGRU
    torch.manual_seed(0)
    m = QuantGRU.from_gru(nn.GRU(16, 8, batch_first=True), 8, calib=torch.randn(4, 6, 16))
    x = torch.randn(3, 5, 16)
    out, h = m(x, torch.zeros(1, 3, 8))
    assert out.shape == (3, 5, 8) and h.shape == (1, 3, 8)
    for h0, match in ((torch.randn(2, 3, 8), r"h0: expected shape \[1, 3, 8\]"),  # (was accepted)
                      (torch.zeros(3, 8), r"h0: expected shape \[1, 3, 8\]"),
                      (torch.tensor(0.0), r"h0: expected shape \[1, 3, 8\]")):
        with pytest.raises(ValueError, match=match):
            m(x, h0)
    with pytest.raises(TypeError, match="h0: expected a torch.Tensor"):
        m(x, np.zeros((1, 3, 8), np.float32))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        m(x.numpy())
    with pytest.raises(ValueError, match="x: expected"):
        m(torch.randn(16))
    with pytest.raises(ValueError, match=r"h0: expected shape \[1, 8\]"):
        m(torch.randn(5, 16), torch.zeros(1, 1, 8))  # unbatched x: h0 [1, H]
    for backend in ("python", "torch"):  # an empty batch, as the native backend gives
        m.backend = backend
        assert m(x[:0])[0].shape == (0, 5, 8)


def test_api_arguments_are_named():
    import torch
    from torch import nn
    from pyquant.packed import PackedWeight
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        pyquant.quantize_(None, pyquant.Int8Config())
    with pytest.raises(TypeError, match="filter_fn: expected a callable"):
        pyquant.quantize_(nn.Sequential(nn.Linear(8, 8)), pyquant.Int8Config(), filter_fn=3)
    with pytest.raises(TypeError, match="batches: expected an iterable"):
        pyquant.calibrate(nn.Sequential(nn.Linear(8, 8)), 5)
    for value in (5, None):
        with pytest.raises(ValueError, match="w_levels: expected 4 distinct integers"):
            pyquant.LUT2Config(w_levels=value)
    assert pyquant.LUT2Config(a_levels=iter((0, 1, 2, 3))).a_levels == (0, 1, 2, 3)
    buf = pyquant.prepack(np.zeros((4, 8), np.int8), "int8_gemm").buffer
    for op in (1, ["int8_gemm"]):
        with pytest.raises(TypeError, match="op: expected a str"):
            PackedWeight(buf, op)
    with pytest.raises(ValueError, match="op: expected one of"):
        PackedWeight(buf, "int9_gemm")
    from torch.utils.data import TensorDataset  # (map-style: iterable through __getitem__)
    model = nn.Sequential(nn.Linear(8, 8))
    pyquant.quantize_(model, pyquant.Int8Config())
    pyquant.calibrate(model, TensorDataset(torch.randn(3, 2, 8)))
    assert not torch.isnan(model[0].act_range).any()
    with pytest.raises(TypeError, match="n: expected an int"):
        pyquant.unpack(pyquant.pack(np.zeros((2, 8), np.uint8), 2), 2, True)


def test_huge_views_fail_fast():
    """A zero-copy view of 2^40 elements: an error at once, not a scan of every element."""
    w = np.broadcast_to(np.zeros((1, 64), np.int8), (2**40, 64))
    with pytest.raises(ValueError, match="w: N = "):
        pyquant.prepack(w, "lowbit_gemm", bits=4)
    # (2^49 bytes: past a 47-bit address space, so the copy fails whatever the overcommit policy)
    codes = np.broadcast_to(np.zeros((1, 1), np.uint8), (2**24, 2**25))
    with pytest.raises(MemoryError):
        pyquant.pack(codes, 1)
