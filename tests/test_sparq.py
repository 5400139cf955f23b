"""SPARQ: trimming against the numpy oracle (every value, every pair, every config and path),
the worked examples of algorithms.md, sparq_gemm == sparq_quantize(a) @ w.T, encoding, errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import pyquant
from pyquant import _C
from reference import gemm_ref
from reference_sparq import CONFIGS, decode_ref, encode_ref, sparq_ref
from test_nn_forward import ref_abs_u8

ROUNDINGS = ("round", "trunc")
ALL_CFG = [(b, o, r, p) for b, o in CONFIGS for r in ROUNDINGS for p in (False, True)]
CFG_IDS = [f"b{b}o{o}-{r}-{'v' if p else 'b'}" for b, o, r, p in ALL_CFG]

# every ordered pair (x, y) of uint8 values, as one row: pairs (2i, 2i+1)
ALL_PAIRS = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(1, -1)
ALL_PAIRS = ALL_PAIRS.astype(np.uint8)


def cfg_kwargs(cfg):
    b, o, r, p = cfg
    return dict(bits=b, options=o, rounding=r, pairs=p)


# --- the worked examples (algorithms.md section 5): 5opt trunc/round, 3opt, 2opt ---
EXAMPLES = {
    27: (26, 28, 24, 28, 16, 32), 92: (88, 96, 80, 96, 80, 96), 85: (80, 88, 80, 80, 80, 80),
    124: (120, 120, 112, 128, 112, 128), 17: (16,) * 6, 255: (240,) * 6, 3: (3,) * 6,
}


@pytest.mark.parametrize("value", sorted(EXAMPLES))
def test_worked_examples(isa, value):
    got = []
    for opts in (5, 3, 2):
        for rounding in ("trunc", "round"):
            # bSPARQ, and vSPARQ with a nonzero partner, are the same thing here
            for pairs, row in ((False, [value]), (True, [value, 1])):
                out = pyquant.sparq_quantize(np.array(row, np.uint8), bits=4, options=opts,
                                             rounding=rounding, pairs=pairs)
                got.append(int(out[0]))
    assert got[0::2] == list(EXAMPLES[value]) and got[1::2] == list(EXAMPLES[value])
    # a zero partner keeps the full 8 bits for n = 4
    assert pyquant.sparq_quantize(np.array([value, 0], np.uint8))[0] == value


def test_reference_matches_worked_examples():
    vals = np.array(sorted(EXAMPLES), np.uint8)
    cols = [sparq_ref(vals, 4, o, r, pairs=False) for o in (5, 3, 2) for r in ("trunc", "round")]
    assert np.array(cols).T.tolist() == [list(EXAMPLES[v]) for v in sorted(EXAMPLES)]


@pytest.mark.parametrize("cfg", ALL_CFG, ids=CFG_IDS)
def test_every_value_and_every_pair(isa, cfg):
    kw = cfg_kwargs(cfg)
    every = np.arange(256, dtype=np.uint8)
    if not kw["pairs"]:
        np.testing.assert_array_equal(pyquant.sparq_quantize(every, **kw), sparq_ref(every, **kw))
    got = pyquant.sparq_quantize(ALL_PAIRS, **kw)
    np.testing.assert_array_equal(got, sparq_ref(ALL_PAIRS, **kw))
    # trimming a trimmed row changes nothing (zeros and windows are preserved)
    np.testing.assert_array_equal(pyquant.sparq_quantize(got, **kw), got)


def test_reference_properties():
    """Independent sanity checks of the oracle itself."""
    for b, o in CONFIGS:
        for r in ROUNDINGS:
            q = sparq_ref(np.arange(256, dtype=np.uint8), b, o, r, pairs=False).astype(int)
            assert (q[1:] > 0).all() and q[0] == 0  # zero stays zero, nonzero stays nonzero
            assert (np.diff(q) >= 0).all()          # monotone
            if r == "trunc":
                assert (q <= np.arange(256)).all()
    # n = 4 with a zero partner keeps the exact value; n = 2 with a zero partner is 5opt
    a = np.stack([np.arange(256), np.zeros(256, int)], -1).reshape(1, -1).astype(np.uint8)
    assert (sparq_ref(a, 4, 5, "round")[0, ::2] == np.arange(256)).all()
    np.testing.assert_array_equal(sparq_ref(a, 2, 7, "round")[0, ::2],
                                  sparq_ref(np.arange(256, dtype=np.uint8), 4, 5, "round", False))


@pytest.mark.parametrize("shape", [(1,), (3,), (7, 5), (2, 3, 129), (4, 64), (5, 200), (0, 4), (3, 0)])
def test_shapes_odd_tails_and_rows(isa, rng, shape):
    a = rng.integers(0, 256, shape).astype(np.uint8)
    a[rng.random(shape) < 0.4] = 0
    for cfg in [(4, 5, "round", True), (3, 6, "trunc", True), (2, 7, "round", False)]:
        kw = cfg_kwargs(cfg)
        got = pyquant.sparq_quantize(a, **kw)
        assert got.shape == a.shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, sparq_ref(a, **kw))


def test_threads_and_torch(rng, threads):
    torch = pytest.importorskip("torch")
    a = rng.integers(0, 256, (300, 333)).astype(np.uint8)
    a[rng.random(a.shape) < 0.5] = 0
    got = pyquant.sparq_quantize(torch.from_numpy(a), bits=3, options=None)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), sparq_ref(a, 3, 6))
    # non-contiguous input
    np.testing.assert_array_equal(pyquant.sparq_quantize(a[:, ::2]), sparq_ref(a[:, ::2]))


# --- GEMM ---

def sparq_gemm_ref(a, w, **kw):
    return gemm_ref(sparq_ref(a, **kw), w)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 64, 2), (2, 65, 3), (5, 63, 5), (6, 64, 64),
                                   (7, 130, 67), (13, 70, 255), (3, 1, 1027)])
def test_gemm_matches_reference(isa, rng, m, n, k):
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    a[rng.random(a.shape) < 0.5] = 0
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    for cfg in [(4, 5, "round", True), (4, 2, "trunc", False), (3, 6, "round", True),
                (2, 7, "trunc", True)]:
        kw = cfg_kwargs(cfg)
        got = pyquant.sparq_gemm(a, w, **kw)
        assert got.dtype == np.int32 and got.shape == (m, n)
        np.testing.assert_array_equal(got, sparq_gemm_ref(a, w, **kw))
        np.testing.assert_array_equal(
            got, gemm_ref(pyquant.sparq_quantize(a, **kw), w))


@pytest.mark.parametrize("cfg", ALL_CFG, ids=CFG_IDS)
def test_gemm_every_config_prepacked(isa, rng, cfg):
    kw = cfg_kwargs(cfg)
    a = rng.integers(0, 256, (9, 131)).astype(np.uint8)
    a[rng.random(a.shape) < 0.5] = 0
    w = rng.integers(-128, 128, (67, 131)).astype(np.int8)
    pw = pyquant.prepack(w, "sparq_gemm", **kw)
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, pw, **kw), sparq_gemm_ref(a, w, **kw))


@functools.lru_cache(maxsize=1)
def _block_problem():
    # K = 16384: a trimmed block holds 64 rows (32 on AVX2), so M = 150 spans several blocks
    rng = np.random.default_rng(616)
    m, n, k = 150, 70, 16384
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    a[rng.random(a.shape) < 0.5] = 0
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    return a, w, sparq_gemm_ref(a, w)


def test_gemm_blocks_over_m_and_threads(isa, threads):
    a, w, want = _block_problem()
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, pyquant.prepack(w, "sparq_gemm")), want)


@pytest.mark.parametrize("pairs", [False, True])
def test_gemm_large_k_extremes(isa, pairs):
    k = 65535  # odd: the tail keeps its 8 bits under vSPARQ
    a = np.full((2, k), 255, np.uint8)
    a[1, ::2] = 0
    w = np.full((3, k), 127, np.int8)
    w[1] = -128
    got = pyquant.sparq_gemm(a, w, pairs=pairs)
    np.testing.assert_array_equal(got, sparq_gemm_ref(a, w, pairs=pairs))


def test_gemm_paths_bit_identical(rng):
    a = rng.integers(0, 256, (37, 301)).astype(np.uint8)
    a[rng.random(a.shape) < 0.5] = 0
    w = rng.integers(-128, 128, (129, 301)).astype(np.int8)
    prev = _C.active_isa()
    outs = []
    try:
        for name in pyquant.cpu_info()["available"]:
            _C.set_isa(name)
            outs.append(pyquant.sparq_gemm(a, w, bits=3, options=6, rounding="trunc"))
    finally:
        _C.set_isa(prev)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_gemm_torch_and_empty(rng):
    torch = pytest.importorskip("torch")
    a = torch.from_numpy(rng.integers(0, 256, (4, 10)).astype(np.uint8))
    w = torch.from_numpy(rng.integers(-128, 128, (5, 10)).astype(np.int8))
    got = pyquant.sparq_gemm(a, w)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), sparq_gemm_ref(a.numpy(), w.numpy()))
    assert pyquant.sparq_gemm(np.zeros((0, 10), np.uint8), w.numpy()).shape == (0, 5)
    np.testing.assert_array_equal(
        pyquant.sparq_gemm(np.zeros((3, 0), np.uint8), np.zeros((2, 0), np.int8)), 0)


# --- encoding ---

@pytest.mark.parametrize("cfg", ALL_CFG, ids=CFG_IDS)
def test_encoding_round_trips_every_pair(isa, cfg):
    kw = cfg_kwargs(cfg)
    payload, meta = pyquant.sparq_encode(ALL_PAIRS, **kw)
    assert payload.dtype == np.uint8
    # byte-identical to the numpy oracle of the documented format, which decodes it too
    q = sparq_ref(ALL_PAIRS, **kw)
    np.testing.assert_array_equal(payload, encode_ref(q, kw["bits"], kw["options"], kw["pairs"]))
    np.testing.assert_array_equal(
        decode_ref(payload, q.shape[1], kw["bits"], kw["options"], kw["pairs"]), q)
    codes = ALL_PAIRS.shape[1] // (2 if kw["pairs"] else 1)
    assert payload.shape == (1, -(-codes * meta["code_bits"] // 8))
    np.testing.assert_array_equal(pyquant.sparq_decode(payload, meta), sparq_ref(ALL_PAIRS, **kw))
    assert meta["bytes_per_activation"] < 1.0


@pytest.mark.parametrize("shape", [(1,), (5,), (3, 7), (2, 2, 9), (4, 0), (0, 6)])
def test_encoding_shapes(rng, threads, shape):
    a = rng.integers(0, 256, shape).astype(np.uint8)
    a[rng.random(shape) < 0.5] = 0
    for cfg in [(4, 5, "round", True), (4, 2, "trunc", True), (2, 7, "round", True),
                (4, 3, "round", False)]:
        kw = cfg_kwargs(cfg)
        payload, meta = pyquant.sparq_encode(a, **kw)
        assert payload.shape[:-1] == a.shape[:-1]
        q = sparq_ref(a, **kw)
        np.testing.assert_array_equal(pyquant.sparq_decode(payload, meta), q)
        if a.size == 0:
            continue
        flat = q.reshape(-1, a.shape[-1])
        np.testing.assert_array_equal(
            payload.reshape(flat.shape[0], -1),
            encode_ref(flat, kw["bits"], kw["options"], kw["pairs"]))


def test_encoding_sizes():
    expect = {  # bits per activation: bSPARQ n + pb; vSPARQ (2(n + pb) [+1 for 2opt]) / 2
        (4, 5, False): 7, (4, 3, False): 6, (4, 2, False): 5, (3, 6, False): 6, (2, 7, False): 5,
        (4, 5, True): 7, (4, 3, True): 6, (4, 2, True): 5.5, (3, 6, True): 6, (2, 7, True): 5,
    }
    a = np.zeros((1, 16), np.uint8)
    for (b, o, p), bpa in expect.items():
        payload, meta = pyquant.sparq_encode(a, bits=b, options=o, pairs=p)
        assert meta["bytes_per_activation"] * 8 == bpa
        assert payload.shape[-1] == int(np.ceil(16 * bpa / 8))


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 65, 5), (13, 130, 67), (70, 33, 16384)])
def test_gemm_from_compact_format(isa, rng, threads, m, n, k):
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    a[rng.random(a.shape) < 0.5] = 0
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    cfgs = ALL_CFG if k < 1000 else [(4, 5, "round", True), (4, 2, "trunc", True)]
    for cfg in cfgs:
        kw = cfg_kwargs(cfg)
        payload, meta = pyquant.sparq_encode(a, **kw)
        got = pyquant.sparq_gemm_encoded(payload, meta, pyquant.prepack(w, "sparq_gemm", **kw))
        np.testing.assert_array_equal(got, pyquant.sparq_gemm(a, w, **kw))
        if k < 1000:
            np.testing.assert_array_equal(got, sparq_gemm_ref(a, w, **kw))


def test_gemm_from_compact_format_bad_inputs(rng):
    a = rng.integers(0, 256, (4, 10)).astype(np.uint8)
    w = rng.integers(-128, 128, (3, 10)).astype(np.int8)
    payload, meta = pyquant.sparq_encode(a)
    with pytest.raises(ValueError, match="payload"):
        pyquant.sparq_gemm_encoded(payload[:, :-1], meta, w)
    with pytest.raises(ValueError, match="payload"):
        pyquant.sparq_gemm_encoded(payload[:3], meta, w)
    with pytest.raises(ValueError, match="payload: encodes K"):
        pyquant.sparq_gemm_encoded(payload, meta, w[:, :8])
    with pytest.raises(ValueError, match="options"):
        pyquant.sparq_gemm_encoded(payload, meta, pyquant.prepack(w, "sparq_gemm", options=3))
    p3, m3 = pyquant.sparq_encode(a.reshape(2, 2, 10))
    with pytest.raises(ValueError, match="meta"):
        pyquant.sparq_gemm_encoded(p3, m3, w)


def test_encoding_torch_and_bad_payload():
    torch = pytest.importorskip("torch")
    a = torch.arange(256, dtype=torch.uint8).reshape(4, 64)
    payload, meta = pyquant.sparq_encode(a)
    assert isinstance(payload, torch.Tensor)
    np.testing.assert_array_equal(pyquant.sparq_decode(payload, meta).numpy(),
                                  sparq_ref(a.numpy()))
    with pytest.raises(ValueError, match="payload"):
        pyquant.sparq_decode(payload.numpy()[:, :-1], meta)
    with pytest.raises(ValueError, match="payload"):
        pyquant.sparq_decode(payload.numpy()[:3], meta)
    with pytest.raises(TypeError, match="payload"):
        pyquant.sparq_decode(payload.numpy().astype(np.int8), meta)


def test_bad_meta_is_a_value_error():
    a = np.arange(5 * 37, dtype=np.uint8).reshape(5, 37)
    payload, meta = pyquant.sparq_encode(a)
    w = np.ones((4, 37), np.int8)
    for key in ("bits", "shape", "pairs"):
        bad = {k: v for k, v in meta.items() if k != key}
        with pytest.raises(ValueError, match=f"meta: missing key '{key}'"):
            pyquant.sparq_decode(payload, bad)
        with pytest.raises(ValueError, match=f"meta: missing key '{key}'"):
            pyquant.sparq_gemm_encoded(payload, bad, w)
    for shape in ((5.5, 37.9), (5, -37), "5x37", (True, 37)):
        with pytest.raises(ValueError, match="meta: shape"):
            pyquant.sparq_decode(payload, {**meta, "shape": shape})
    with pytest.raises(TypeError, match="meta"):
        pyquant.sparq_decode(payload, list(meta.items()))
    # K past the packed K limit: 2^64 was pybind's "incompatible function arguments", and
    # 2635249153387078839 wrapped the encoded row size to the payload's (then numpy's size error)
    for k in (2**24, 2635249153387078839, 2**64):
        with pytest.raises(ValueError, match=r"meta: shape's K .* at most 16777215"):
            pyquant.sparq_decode(payload, {**meta, "shape": (5, k)})
        with pytest.raises(ValueError, match=r"meta: shape's K"):
            pyquant.sparq_gemm_encoded(payload, {**meta, "shape": (5, k)}, w)
    with pytest.raises(ValueError, match=r"k: expected at most 16777215"):
        pyquant._C.sparq_decode(payload, 2635249153387078839, 4, 5, True)


# --- errors ---

@pytest.mark.parametrize("kw,exc,match", [
    (dict(bits=5), ValueError, "bits"),
    (dict(bits=8), ValueError, "bits"),
    (dict(bits=4.0), TypeError, "bits"),
    (dict(bits=4, options=4), ValueError, "options"),
    (dict(bits=4, options=7), ValueError, "options"),
    (dict(bits=3, options=5), ValueError, "options"),
    (dict(bits=2, options=5), ValueError, "options"),
    (dict(rounding="nearest"), ValueError, "rounding"),
    (dict(rounding=None), ValueError, "rounding"),
    (dict(pairs="yes"), TypeError, "pairs"),
])
def test_bad_config(kw, exc, match):
    a = np.zeros((2, 4), np.uint8)
    with pytest.raises(exc, match=match):
        pyquant.sparq_quantize(a, **kw)
    with pytest.raises(exc, match=match):
        pyquant.sparq_gemm(a, np.zeros((3, 4), np.int8), **kw)
    with pytest.raises(exc, match=match):
        pyquant.prepack(np.zeros((3, 4), np.int8), "sparq_gemm", **kw)


def test_full_count_options_accepted():
    a = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(pyquant.sparq_quantize(a, bits=3, options=None),
                                  pyquant.sparq_quantize(a, bits=3, options=6))
    np.testing.assert_array_equal(pyquant.sparq_quantize(a, bits=2, options=None),
                                  pyquant.sparq_quantize(a, bits=2, options=7))


@pytest.mark.parametrize("a,exc,match", [
    (np.zeros((2, 4), np.int8), TypeError, "a: expected dtype uint8"),
    (np.zeros((2, 4), np.float32), TypeError, "a: expected dtype uint8"),
    (np.zeros((2, 4), np.int32), TypeError, "a: expected dtype uint8"),
    ([[1, 2]], TypeError, "a: expected a numpy array"),
])
def test_bad_activations(a, exc, match):
    with pytest.raises(exc, match=match):
        pyquant.sparq_quantize(a)
    with pytest.raises(exc, match=match):
        pyquant.sparq_gemm(a, np.zeros((3, 4), np.int8))


def test_bad_gemm_shapes_and_packed_weights(rng):
    w = rng.integers(-128, 128, (3, 4)).astype(np.int8)
    with pytest.raises(ValueError, match="a: expected a 2-D"):
        pyquant.sparq_gemm(np.zeros(4, np.uint8), w)
    with pytest.raises(ValueError, match="a: expected shape"):
        pyquant.sparq_gemm(np.zeros((2, 5), np.uint8), w)
    with pytest.raises(TypeError, match="w: expected dtype int8"):
        pyquant.sparq_gemm(np.zeros((2, 4), np.uint8), w.astype(np.uint8))
    a = np.zeros((2, 4), np.uint8)
    pw = pyquant.prepack(w, "sparq_gemm", bits=4, options=3, rounding="trunc", pairs=False)
    with pytest.raises(ValueError, match="options"):
        pyquant.sparq_gemm(a, pw)
    with pytest.raises(ValueError, match="sparq_gemm"):
        pyquant.sparq_gemm(a, pyquant.prepack(w, "int8_gemm"))
    with pytest.raises(ValueError, match="int8_gemm"):
        pyquant.int8_gemm(a, pyquant.prepack(w, "sparq_gemm"))
    # the header flags are checked by the kernel too, even if the Python params are forged
    forged = pyquant.PackedWeight(pw.buffer, "sparq_gemm", dict(bits=4, options=5,
                                                                 rounding="round", pairs=True))
    with pytest.raises(ValueError, match="SPARQ configuration"):
        pyquant.sparq_gemm(a, forged)
    np.testing.assert_array_equal(
        pyquant.sparq_gemm(a, pw, bits=4, options=3, rounding="trunc", pairs=False), 0)


# --- the raw op on int16 sign-magnitude rows (one pass: the fused forward's signed route) ---
def signed_codes(rng, m, k):
    """int16 rows in [-255, 255]: zeros, the +-255 extremes, small and LayerNorm-like values."""
    a = (rng.standard_normal((m, k)) * 40).clip(-255, 255).astype(np.int16)
    a[:, ::5] = 0
    a[:, 1::17] = rng.choice(np.array([-255, 255], np.int16), size=a[:, 1::17].shape)
    if m > 2:
        a[1] = rng.integers(-255, 256, k)  # a row dense in pairs past 255
    return a


@pytest.mark.parametrize("m,n,k", [(1, 70, 1030), (3, 65, 36), (16, 130, 300), (40, 64, 4200),
                                   (300, 65, 37), (2, 17, 1)])
def test_sparq_gemm_signed_rows(isa, rng, threads, m, n, k):
    """int16 rows: sign(a) * trim(|a|) against the reference on every path, with -128 weights;
    negating every row negates the product; non-negative int16 rows equal their uint8 copy."""
    a = signed_codes(rng, m, k)
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    w[:, : k // 3] = rng.choice(np.array([-128, 127], np.int8), size=(n, k // 3))
    for cfg in [dict(), dict(bits=4, options=3, rounding="trunc", pairs=False),
                dict(bits=2, options=7, pairs=True)]:
        pw = pyquant.prepack(w, "sparq_gemm", **cfg)
        p = dict(bits=4, options=5, rounding="round", pairs=True) | cfg
        t = sparq_ref(np.abs(a).astype(np.uint8), p["bits"], p["options"], p["rounding"],
                      p["pairs"]).astype(np.int64)
        want = (np.where(a < 0, -t, t) @ w.T.astype(np.int64)).astype(np.int32)
        got = pyquant.sparq_gemm(a, pw, **cfg)
        assert got.dtype == np.int32 and np.array_equal(got, want)
        assert np.array_equal(pyquant.sparq_gemm(-a, pw, **cfg), -got)
    u = np.abs(a).astype(np.uint8)
    assert np.array_equal(pyquant.sparq_gemm(u.astype(np.int16), w), pyquant.sparq_gemm(u, w))


def test_sparq_gemm_signed_rows_out_of_range(rng):
    w = rng.integers(-127, 128, size=(8, 16), dtype=np.int8)
    a = np.zeros((3, 16), np.int16)
    a[2, 5] = -256
    with pytest.raises(ValueError, match=r"\[-255, 255\]; got -256 at row 2, column 5"):
        pyquant.sparq_gemm(a, w)


# --- the fused forward on signed inputs (the AVX2 9-bit rows; two passes elsewhere) ---
@pytest.mark.parametrize("wide_range", [False, True], ids=["to-255", "to-127"])
@pytest.mark.parametrize("shape", [(1, 70, 130), (5, 300, 67), (2, 4200, 70), (13, 4200, 70)],
                         ids=lambda s: "x".join(map(str, s)))
def test_sparq_signed_exact_with_any_int8_weight(isa, rng, shape, wide_range):
    """Signed inputs on raw int8 weights (-128 included, which no QuantLinear makes): the 9-bit
    kernel (AVX2: v + 256 as top 7 and low 2 bits) and the two-pass route give the exact integer
    sums, with small magnitudes (a wide static range keeps them <= 127) and up to 255."""
    m, k, n = shape
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    w[:, : k // 3] = rng.choice(np.array([-128, 127], np.int8), size=(n, k // 3))  # worst case
    cfg = dict(bits=4, options=5, rounding="round", pairs=True)
    pw = pyquant.prepack(w, "sparq_gemm", **cfg)
    x = rng.standard_normal((m, k)).astype(np.float32)
    amax = np.float32(4 * np.abs(x).max())
    act = (-amax, amax) if wide_range else None
    act_t = np.array(act if act else (np.nan, np.nan), np.float32)
    # the fused forward (QuantLinear's SparqConfig path) on a raw packed weight
    y = _C.forward_sparq(x, np.asarray(pw.buffer), 4, 5, True, True, True,
                         np.ones(n, np.float32), None, act_t, 1)
    q, sa = ref_abs_u8(x, act)
    assert (q.max() <= 127) == wide_range
    t = sparq_ref(q, 4, 5, "round", True).astype(np.int64)
    acc = np.where(x < 0, -t, t) @ w.T.astype(np.int64)
    assert np.abs(acc).max() < 2**24  # exact in float32, so the epilogue's result is known
    assert np.array_equal(y, acc.astype(np.float32) * sa[:, None])


def test_sparq_relu_rows_exact(isa, rng, threads):
    """Post-ReLU rows of 8+ per task take the 9-bit format on AVX2 (the int16 tile is faster
    there): 16 rows give 16 (1 thread) or 8 (2 threads) rows per task, over two of its K blocks;
    the exact integer sums on every path."""
    m, k, n = 16, 1100, 260
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    cfg = dict(bits=4, options=5, rounding="round", pairs=True)
    pw = pyquant.prepack(w, "sparq_gemm", **cfg)
    x = np.abs(rng.standard_normal((m, k)).astype(np.float32))
    y = _C.forward_sparq(x, np.asarray(pw.buffer), 4, 5, True, True, True,
                         np.ones(n, np.float32), None, np.array((np.nan, np.nan), np.float32),
                         threads)
    q, sa = ref_abs_u8(x, None)
    acc = sparq_ref(q, 4, 5, "round", True).astype(np.int64) @ w.T.astype(np.int64)
    assert np.abs(acc).max() < 2**24  # exact in float32
    assert np.array_equal(y, acc.astype(np.float32) * sa[:, None])


def test_options_default_is_the_papers_choice_per_width():
    """options=None (the default) is 5 / 6 / 7 placements for 4 / 3 / 2 bits in every raw
    function, as in SparqConfig (a fixed default of 5 refused bits=3 and bits=2)."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 16), dtype=np.uint8)
    w = rng.integers(-128, 128, (5, 16), dtype=np.int8)
    for bits, full in ((4, 5), (3, 6), (2, 7)):
        np.testing.assert_array_equal(pyquant.sparq_quantize(a, bits=bits),
                                      pyquant.sparq_quantize(a, bits=bits, options=full))
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, bits=bits),
                                      pyquant.sparq_gemm(a, w, bits=bits, options=full))
        pw = pyquant.prepack(w, "sparq_gemm", bits=bits)
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, pw, bits=bits, options=full),
                                      pyquant.sparq_gemm(a, w, bits=bits, options=full))
        payload, meta = pyquant.sparq_encode(a, bits=bits)
        np.testing.assert_array_equal(pyquant.sparq_decode(payload, meta),
                                      pyquant.sparq_quantize(a, bits=bits))
