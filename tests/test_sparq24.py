"""SPARQ with 2:4-sparse weights (issue 17 part 1): sparq_gemm(..., sparse24=True) against the
numpy reference written from the issue's text (tests/reference_sparq.py), on every ISA path, for
every config; the packed format, pruning and errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import pyquant
from pyquant import _C
from forced_kernels import forced_kernel
from reference_sparq import CONFIGS, prune_24_ref, sparq24_ref, sparq_ref
from reference import gemm_ref

ROUNDINGS = ("round", "trunc")
ALL_CFG = [(b, o, r, p) for b, o in CONFIGS for r in ROUNDINGS for p in (False, True)]
CFG_IDS = [f"b{b}o{o}-{r}-{'v' if p else 'b'}" for b, o, r, p in ALL_CFG]


def kw_of(cfg):
    b, o, r, p = cfg
    return dict(bits=b, options=o, rounding=r, pairs=p)


def sparse_weight(rng, n, k, p_zero_group=0.15, p_single=0.25):
    """int8 [n, k] 2:4 sparse, mixing groups with 0, 1 and 2 non-zeros (every pair placement)."""
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w[w == 0] = 1
    g = -(-k // 4)
    u = rng.random((n, g))
    cnt = np.where(u < p_zero_group, 0, np.where(u < p_zero_group + p_single, 1, 2))
    rank = rng.random((n, g, 4)).argsort(-1).argsort(-1)  # a random order of the 4 positions
    mask = (rank < cnt[..., None]).reshape(n, 4 * g)
    return np.where(mask[:, :k], w, 0).astype(np.int8)


def activations(rng, m, k, p_zero=0.3):
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    a[rng.random(a.shape) < p_zero] = 0
    return a


# --- the reference itself ---

def test_reference_dense_equivalences(rng):
    """Independent checks of the oracle: with pairs=False it is dense bSPARQ on the pruned
    weight; a weight whose groups are all (0,1)/(2,3) pairs or singles at an even/odd position
    with the partner weight... (pairs at (0,1) and (2,3) are exactly dense vSPARQ's pairs)."""
    a = activations(rng, 5, 23)
    w = sparse_weight(rng, 7, 23)
    for b, o in CONFIGS:
        for r in ROUNDINGS:
            np.testing.assert_array_equal(
                sparq24_ref(a, w, b, o, r, pairs=False),
                gemm_ref(sparq_ref(a, b, o, r, pairs=False), w))
    # every group a full (0,1) + (2,3)... only two non-zeros: use (0,1) pairs everywhere, and the
    # dense vSPARQ of activations whose positions 2,3 are zero agrees
    a2 = a.copy()
    a2[:, 2::4] = 0
    a2[:, 3::4] = 0
    w01 = np.zeros_like(w)
    w01[:, 0::4] = 5
    w01[:, 1::4] = -7
    for b, o in CONFIGS:
        np.testing.assert_array_equal(sparq24_ref(a2, w01, b, o), gemm_ref(sparq_ref(a2, b, o), w01))


def test_prune_24(rng):
    torch = pytest.importorskip("torch")
    for shape in [(5, 16), (3, 7), (2, 3, 10), (4, 1), (4, 2)]:
        w = rng.standard_normal(shape).astype(np.float32)
        w[..., ::3] = np.round(w[..., ::3])  # ties
        got = pyquant.prune_24(w)
        np.testing.assert_array_equal(got, prune_24_ref(w))
        kp = -(-shape[-1] // 4) * 4
        padded = np.concatenate([got, np.zeros(shape[:-1] + (kp - shape[-1],), got.dtype)], -1)
        assert ((padded.reshape(-1, 4) != 0).sum(1) <= 2).all()
        t = pyquant.prune_24(torch.from_numpy(w))
        assert isinstance(t, torch.Tensor)
        np.testing.assert_array_equal(t.numpy(), got)
    wi = rng.integers(-128, 128, (6, 12)).astype(np.int8)
    np.testing.assert_array_equal(pyquant.prune_24(wi), prune_24_ref(wi))
    # ties go to the lower index
    np.testing.assert_array_equal(pyquant.prune_24(np.array([[1, -1, 1, 1]], np.int8)),
                                  [[1, -1, 0, 0]])
    # float32 takes a native pass: the same as the other dtypes' numpy path, ties, zeros, NaN
    for shape in [(37, 203), (3, 4), (2, 5, 9), (1, 1)]:
        w = rng.integers(-2, 3, shape).astype(np.float32)
        w.reshape(-1)[::17] = np.nan
        got = pyquant.prune_24(w)
        assert got.dtype == np.float32 and got.shape == w.shape
        np.testing.assert_array_equal(got, pyquant.prune_24(w.astype(np.float64)).astype(np.float32))
        finite = np.nan_to_num(w, nan=0.0)
        np.testing.assert_array_equal(pyquant.prune_24(finite), prune_24_ref(finite))
    for dtype in (np.float16, np.int16, np.int64):
        w = rng.integers(-3, 4, (9, 22)).astype(dtype)
        np.testing.assert_array_equal(pyquant.prune_24(w), prune_24_ref(w))
    assert pyquant.prune_24(np.zeros((3, 0), np.float32)).shape == (3, 0)


# --- the GEMM against the reference ---

SHAPES = [(1, 1, 1), (1, 32, 4), (1, 33, 5), (3, 31, 7), (2, 64, 8), (5, 70, 37), (7, 96, 130),
          (1, 40, 4100), (3, 17, 4097), (9, 45, 259)]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm24_shapes(isa, rng, m, n, k):
    a = activations(rng, m, k)
    w = sparse_weight(rng, n, k)
    for cfg in [(4, 5, "round", True), (4, 2, "trunc", False), (3, 6, "round", True),
                (2, 7, "trunc", True)]:
        kw = kw_of(cfg)
        got = pyquant.sparq_gemm(a, w, sparse24=True, **kw)
        assert got.dtype == np.int32 and got.shape == (m, n)
        np.testing.assert_array_equal(got, sparq24_ref(a, w, **kw))


@pytest.mark.parametrize("cfg", ALL_CFG, ids=CFG_IDS)
def test_gemm24_every_config_prepacked(isa, rng, cfg):
    kw = kw_of(cfg)
    a = activations(rng, 6, 131)
    a[:, :8] = rng.integers(0, 2, (6, 8)) * 255  # zeros and 255s at selected positions
    w = sparse_weight(rng, 67, 131)
    pw = pyquant.prepack(w, "sparq24_gemm", **kw)
    assert pw.op == "sparq24_gemm"
    want = sparq24_ref(a, w, **kw)
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, pw, sparse24=True, **kw), want)
    # prepack(w, "sparq_gemm", sparse24=True) is the same weight
    pw2 = pyquant.prepack(w, "sparq_gemm", sparse24=True, **kw)
    np.testing.assert_array_equal(pw2.buffer, pw.buffer)


def every_selector_weight():
    """int8 [11, 4]: one row per selector (6 pairs, 4 singles, empty group)."""
    rows = []
    for i in range(4):
        for j in range(i, 4):
            r = [0, 0, 0, 0]
            r[i] = 100 - 7 * j
            r[j] = -77 + 11 * i
            rows.append(r)
    rows.append([0, 0, 0, 0])
    return np.array(rows, np.int8)


def test_gemm24_every_selector_and_zero_activations(isa):
    """Every selector (6 pairs, 4 singles, empty) against every activation pattern of zeros and
    non-zeros in a group, for every config."""
    patterns = []
    for mask in range(16):
        for vals in ((255, 1, 128, 17), (27, 92, 85, 124)):
            patterns.append([v if (mask >> j) & 1 else 0 for j, v in enumerate(vals)])
    a = np.array(patterns, np.uint8).reshape(len(patterns), 4)
    w = every_selector_weight()
    for cfg in ALL_CFG:
        kw = kw_of(cfg)
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True, **kw),
                                      sparq24_ref(a, w, **kw))


@pytest.mark.parametrize("pairs", [False, True])
def test_gemm24_worst_case_values(isa, pairs):
    k = 8192 + 4 * 7 + 3  # several AVX2 K blocks, K tail
    a = np.full((3, k), 255, np.uint8)
    a[1, ::2] = 0
    w = np.zeros((35, k), np.int8)
    w[:, 0::4] = -128
    w[:, 3::4] = -128
    w[1::2, 0::4] = 127
    got = pyquant.sparq_gemm(a, w, sparse24=True, pairs=pairs)
    np.testing.assert_array_equal(got, sparq24_ref(a, w, pairs=pairs))
    # signed: -255 against -128 and 127 over many 64-group chunks, one row (decode) and three
    s = -a.astype(np.int16)
    for rows in (s[:1], s):
        np.testing.assert_array_equal(pyquant.sparq_gemm(rows, w, sparse24=True, pairs=pairs),
                                      sparq24_ref(rows, w, pairs=pairs))


@functools.lru_cache(maxsize=1)
def _block_problem():
    # K = 16384: M blocks of 32 rows (M = 70 spans 3), 32 K blocks of the ymm rows kernels
    rng = np.random.default_rng(17)
    m, n, k = 70, 40, 16384
    a = activations(rng, m, k)
    w = sparse_weight(rng, n, k)
    return a, w, sparq24_ref(a, w)


def test_gemm24_blocks_threads_and_torch(isa, threads):
    torch = pytest.importorskip("torch")
    a, w, want = _block_problem()
    pw = pyquant.prepack(w, "sparq24_gemm")
    got = pyquant.sparq_gemm(torch.from_numpy(a), pw, sparse24=True)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), want)


def signed_activations(rng, m, k, p_zero=0.3, p_neg=0.5):
    """int16 [m, k] in [-255, 255]: sign-magnitude rows with zeros, +-255 and +-1."""
    a = activations(rng, m, k, p_zero).astype(np.int16)
    return np.where(rng.random(a.shape) < p_neg, -a, a).astype(np.int16)


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm24_signed_shapes(isa, rng, m, n, k):
    """Sign-magnitude rows (int16): sign(a) * trim(|a|), pairs judged on magnitudes."""
    a = signed_activations(rng, m, k)
    w = sparse_weight(rng, n, k)
    for cfg in [(4, 5, "round", True), (4, 3, "trunc", False), (2, 7, "round", True)]:
        kw = kw_of(cfg)
        got = pyquant.sparq_gemm(a, w, sparse24=True, **kw)
        assert got.dtype == np.int32 and got.shape == (m, n)
        np.testing.assert_array_equal(got, sparq24_ref(a, w, **kw))
        # independent of the reference: negating every activation negates the product
        np.testing.assert_array_equal(pyquant.sparq_gemm(-a, w, sparse24=True, **kw), -got)


@pytest.mark.parametrize("cfg", ALL_CFG, ids=CFG_IDS)
def test_gemm24_signed_every_config_and_selector(isa, cfg):
    """Every selector against every sign and zero pattern of a group (both members of a pair
    negative, one, none; a negative single), every config; and uint8 rows given as int16."""
    patterns = []
    for mask in range(16):
        for signs in range(16):
            vals = (255, 1, 128, 17) if signs % 2 else (27, 92, 85, 124)
            patterns.append([(-v if (signs >> j) & 1 else v) if (mask >> j) & 1 else 0
                             for j, v in enumerate(vals)])
    a = np.array(patterns, np.int16)
    w = every_selector_weight()
    kw = kw_of(cfg)
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True, **kw),
                                  sparq24_ref(a, w, **kw))
    # one row per call (a signed row alone: the decode tiles, zmm narrow / ymm words): all the
    # patterns in one row against every selector tiled along K
    row = a.reshape(1, -1)
    wk = np.tile(w, (1, a.shape[0]))
    np.testing.assert_array_equal(pyquant.sparq_gemm(row, wk, sparse24=True, **kw),
                                  sparq24_ref(row, wk, **kw))
    u = np.abs(a).astype(np.uint8)
    np.testing.assert_array_equal(pyquant.sparq_gemm(u.astype(np.int16), w, sparse24=True, **kw),
                                  pyquant.sparq_gemm(u, w, sparse24=True, **kw))


@functools.lru_cache(maxsize=1)
def _signed_block_problem():
    rng = np.random.default_rng(19)
    m, n, k = 70, 40, 16384
    a = signed_activations(rng, m, k)
    a[32:64] = np.abs(a[32:64])  # a block without negative values between signed ones
    a[64:68] = -255
    a[64:68, 1::4] = 0
    w = sparse_weight(rng, n, k)
    w[::3, 0::4] = np.where(w[::3, 0::4] != 0, -128, 0)
    return a, w, sparq24_ref(a, w)


def test_gemm24_signed_blocks_and_threads(isa, threads):
    """Row blocks with and without negative values in one call (K = 16384: M blocks of 32 rows),
    worst-case magnitudes across several K blocks."""
    a, w, want = _signed_block_problem()
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True), want)


def test_gemm24_signed_row_chunks_for_the_output(isa, threads, rng):
    """Signed rows where the task split chunks rows to keep the output in L2 (small weights,
    4096 columns): a row's two parts stay in one task; and short K (many rows per block)."""
    for m, n, k in ((100, 4096, 64), (300, 70, 5)):
        a = signed_activations(rng, m, k)
        a[50:60] = np.abs(a[50:60])
        w = sparse_weight(rng, n, k)
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True), sparq24_ref(a, w))


@pytest.mark.parametrize("p_high", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("n,k", [(1, 4), (31, 4100), (70, 1027), (33, 8195)])
def test_gemm24_one_signed_row(isa, threads, rng, p_high, n, k):
    """One signed row (decode: AVX-512 VBMI's decode tile on narrow tables, its high part in the
    same pass or none; the ymm twins' word tables): K tails, odd group counts (the two K-half
    streams' leftover group), N tails, worst-case weights, a row with no negative value."""
    a = narrow_activations(rng, 1, k, p_high)
    w = sparse_weight(rng, n, k)
    w[::2, 0::4] = np.where(w[::2, 0::4] != 0, -128, 0)
    for cfg in [(4, 5, "round", True), (4, 2, "round", False)]:
        kw = kw_of(cfg)
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True, **kw),
                                      sparq24_ref(a, w, **kw))
    np.testing.assert_array_equal(pyquant.sparq_gemm(np.abs(a), w, sparse24=True),
                                  sparq24_ref(np.abs(a), w))


def narrow_activations(rng, m, k, p_high, p_zero=0.3):
    """int16 [m, k] sign-magnitude rows with magnitudes below 128 except a fraction p_high: the
    signed twins (AVX2, AVX-VNNI, AVX-512) take narrow tables, and with few groups holding a
    magnitude >= 128 a second pass over those groups only; with many (p_high = 0.5: ~90% of the
    groups) the ymm twins subtract the two parts, the zmm twin runs a second full tile."""
    mag = rng.integers(1, 128, (m, k))
    mag = np.where(rng.random((m, k)) < p_high, rng.integers(128, 256, (m, k)), mag)
    mag[rng.random((m, k)) < p_zero] = 0
    return np.where(rng.random((m, k)) < 0.5, -mag, mag).astype(np.int16)


@pytest.mark.parametrize("p_high", [0.0, 0.01, 0.08, 0.5])
@pytest.mark.parametrize("m,n,k", [(2, 33, 4), (3, 64, 511), (9, 40, 1031), (5, 7, 2056)])
def test_gemm24_signed_narrow_tables(isa, threads, rng, p_high, m, n, k):
    """Narrow tables: K tails, one to three K blocks of 128 groups (the last partial), a row
    without negative values among signed ones, high groups none / few / many; a call whose
    blocks (K = 16384: 32 rows each) have negative values or none. (On the AVX2 kernel calls of
    up to 4 rows run as words instead: the 2- and 3-row cases there.)"""
    a = narrow_activations(rng, m, k, p_high)
    a[1] = np.abs(a[1])
    w = sparse_weight(rng, n, k)
    for cfg in [(4, 5, "round", True), (3, 6, "trunc", True), (4, 2, "round", False)]:
        kw = kw_of(cfg)
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True, **kw),
                                      sparq24_ref(a, w, **kw))
    if m == 9 and p_high == 0.08:
        a = narrow_activations(rng, 40, 16384, p_high)
        a[32:] = np.abs(a[32:])  # a block of rows without negative values: the unsigned kernel
        w = sparse_weight(rng, 33, 16384)
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True),
                                      sparq24_ref(a, w))


def test_gemm24_signed_narrow_extremes(isa, threads):
    """Narrow tables at their int32 bound: every activation +127 kept whole (partner zero) or
    -127, against -128 / 127 weights over full K blocks of 128 groups, and one group per block
    holding 255 (its high part); all-high rows beside them."""
    m, n, k = 6, 40, 128 * 4 * 3 + 12
    a = np.zeros((m, k), np.int16)
    a[:, 0::4] = 127  # the pair (0, 1) of every group: its partner is 0, so 127 stays whole
    a[1, 0::4] = -127
    a[2, 0::4], a[2, 1::4] = 0, -127
    a[3, 512::512] = 255  # one high group in each later K block
    a[4, 0::4] = -255  # a row of high groups only (few rows: narrow tables still)
    w = np.zeros((n, k), np.int8)
    w[:, 0::4] = -128
    w[:, 1::4] = 127
    w[::2, 1::4] = -128
    for cfg in [(4, 5, "round", True), (4, 5, "trunc", False)]:
        kw = kw_of(cfg)
        np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True, **kw),
                                      sparq24_ref(a, w, **kw))


SPARQ_KERNELS = [e for e in _C.kernel_table() if e["family"] == "sparq_gemm"]


@pytest.mark.parametrize("entry", SPARQ_KERNELS, ids=[e["name"] for e in SPARQ_KERNELS])
def test_gemm24_signed_narrow_every_kernel(entry, threads, rng):
    """Every 2:4 kernel this CPU runs, forced in turn (the `isa` paths reach only the selected
    one per tier: on an AVX-VNNI CPU the AVX2 and EVEX ymm twins would go untested): narrow
    tables with few and many high groups, several K blocks, and row blocks (K = 16400: 32 rows,
    then a block without negative values)."""
    with forced_kernel(entry):
        for p_high, (m, n, k) in ((0.01, (9, 40, 1031)), (0.5, (5, 33, 517)),
                                  (0.05, (40, 7, 16400))):
            a = narrow_activations(rng, m, k, p_high)
            a[2] = np.abs(a[2])
            a[32:] = np.abs(a[32:])
            w = sparse_weight(rng, n, k)
            np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True),
                                          sparq24_ref(a, w))


@pytest.mark.parametrize("entry", SPARQ_KERNELS, ids=[e["name"] for e in SPARQ_KERNELS])
def test_gemm24_decode_every_kernel(entry, threads, rng):
    """Every 2:4 kernel's streaming decode and small-batch paths, forced in turn (dispatch ranks
    the one-stream entries first on AMD and the multi-stream ones on Intel, and only one of each
    pair would be reached): 1-8 rows (from 8 panels on, a task holds several rows: the two-row
    and row tiles), unsigned and signed, a signed row's high groups none, few (high_pairs after
    the low pass) and many (in the same pass), odd k."""
    with forced_kernel(entry):
        for m, n, k in ((1, 40, 1031), (1, 100, 4099), (2, 256, 517), (3, 64, 2052),
                        (5, 256, 1031), (8, 260, 2052)):
            w = sparse_weight(rng, n, k)
            a = activations(rng, m, k)
            np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True),
                                          sparq24_ref(a, w))
            for p_high in (0.0, 0.01, 0.5):
                a = narrow_activations(rng, m, k, p_high)
                np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, sparse24=True),
                                              sparq24_ref(a, w))


def test_signed_rows_empty(rng):
    w24, w = sparse_weight(rng, 5, 10), rng.integers(-128, 128, (5, 10)).astype(np.int8)
    for sparse24, weight in ((True, w24), (False, w)):
        got = pyquant.sparq_gemm(np.zeros((0, 10), np.int16), weight, sparse24=sparse24)
        assert got.shape == (0, 5) and got.dtype == np.int32
        np.testing.assert_array_equal(pyquant.sparq_gemm(np.zeros((3, 0), np.int16), np.zeros((2, 0), np.int8),
                                                         sparse24=sparse24), np.zeros((3, 2), np.int32))


@pytest.mark.parametrize("cfg", [(4, 5, "round", True), (3, 6, "trunc", True),
                                 (4, 2, "round", False)])
def test_dense_signed_rows(rng, cfg):
    """The dense op takes the same int16 sign-magnitude rows: trim |a| (pairs (k, k+1) judged on
    magnitudes), then the signed product."""
    kw = kw_of(cfg)
    a = signed_activations(rng, 7, 67)
    w = rng.integers(-128, 128, (13, 67)).astype(np.int8)
    t = sparq_ref(np.abs(a).astype(np.uint8), *cfg).astype(np.int64)
    want = gemm_ref(np.where(a < 0, -t, t), w)
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, w, **kw), want)
    np.testing.assert_array_equal(pyquant.sparq_gemm(a, pyquant.prepack(w, "sparq_gemm", **kw), **kw),
                                  want)


@pytest.mark.parametrize("sparse24", [False, True])
def test_signed_rows_out_of_range(rng, sparse24):
    w = sparse_weight(rng, 5, 12)
    for bad, where in ((256, (1, 3)), (-256, (0, 11)), (-32768, (2, 0))):
        a = np.zeros((3, 12), np.int16)
        a[where] = bad
        with pytest.raises(ValueError, match=rf"\[-255, 255\]; got {bad} at row {where[0]}, column {where[1]}"):
            pyquant.sparq_gemm(a, w, sparse24=sparse24)
    with pytest.raises(TypeError, match="uint8 or int16"):
        pyquant.sparq_gemm(np.zeros((3, 12), np.int32), w, sparse24=sparse24)


def test_gemm24_paths_bit_identical(rng):
    a = activations(rng, 11, 301)
    signed = signed_activations(rng, 11, 301)
    w = sparse_weight(rng, 129, 301)
    prev = _C.active_isa()
    outs = []
    try:
        for name in pyquant.cpu_info()["available"]:
            _C.set_isa(name)
            outs.append(pyquant.sparq_gemm(a, w, sparse24=True, bits=3, options=6))
            outs.append(pyquant.sparq_gemm(signed, w, sparse24=True, bits=3, options=6))
    finally:
        _C.set_isa(prev)
    for i in range(2, len(outs)):  # per path: uint8 rows, then signed rows
        np.testing.assert_array_equal(outs[i], outs[i % 2])


def test_gemm24_empty(rng):
    w = sparse_weight(rng, 5, 10)
    assert pyquant.sparq_gemm(np.zeros((0, 10), np.uint8), w, sparse24=True).shape == (0, 5)
    np.testing.assert_array_equal(
        pyquant.sparq_gemm(np.zeros((3, 0), np.uint8), np.zeros((2, 0), np.int8), sparse24=True), 0)


def test_packed_size_is_five_bits_per_weight(rng):
    n, k = 64, 4096
    pw = pyquant.prepack(sparse_weight(rng, n, k), "sparq24_gemm")
    assert pw.nbytes == 64 + n * k * 5 // 8
    dense = pyquant.prepack(np.zeros((n, k), np.int8), "int8_gemm")
    assert dense.nbytes > 1.6 * (pw.nbytes - 64)
    info = pw.validate()
    assert info["op"] == "sparq24_gemm" and info["params"]["bits"] == 4


# --- errors ---

def test_not_sparse_is_a_value_error(rng):
    w = sparse_weight(rng, 4, 20)
    w[2, 8:11] = [1, -2, 3]  # row 2, group 2: three non-zeros
    a = np.zeros((1, 20), np.uint8)
    for call in (lambda: pyquant.sparq_gemm(a, w, sparse24=True),
                 lambda: pyquant.prepack(w, "sparq24_gemm"),
                 lambda: pyquant.prepack(w, "sparq_gemm", sparse24=True)):
        with pytest.raises(ValueError, match=r"w: not 2:4 sparse: row 2, k group 2 \(columns 8..11\)"):
            call()
    w2 = np.zeros((1, 7), np.int8)
    w2[0, 4:7] = 1  # the partial tail group
    with pytest.raises(ValueError, match="k group 1"):
        pyquant.prepack(w2, "sparq24_gemm")


def test_bad_inputs(rng):
    w = sparse_weight(rng, 3, 8)
    a = np.zeros((2, 8), np.uint8)
    with pytest.raises(TypeError, match="w: expected dtype int8"):
        pyquant.sparq_gemm(a, w.astype(np.int16), sparse24=True)
    with pytest.raises(ValueError, match="w: expected a 2-D"):
        pyquant.sparq_gemm(a, w[0], sparse24=True)
    with pytest.raises(ValueError, match="a: expected shape"):
        pyquant.sparq_gemm(np.zeros((2, 9), np.uint8), w, sparse24=True)
    with pytest.raises(TypeError, match="a: expected dtype uint8"):
        pyquant.sparq_gemm(a.astype(np.int8), w, sparse24=True)
    with pytest.raises(TypeError, match="sparse24"):
        pyquant.sparq_gemm(a, w, sparse24="yes")
    pw = pyquant.prepack(w, "sparq24_gemm", bits=3, options=6)
    with pytest.raises(ValueError, match="bits"):
        pyquant.sparq_gemm(a, pw, sparse24=True)
    with pytest.raises(ValueError, match="sparse24=True"):
        pyquant.sparq_gemm(a, pw, bits=3, options=6)
    with pytest.raises(ValueError, match="sparq24_gemm"):
        pyquant.sparq_gemm(a, pyquant.prepack(w, "sparq_gemm"), sparse24=True)
    # forged params: the kernel checks the header flags
    forged = pyquant.PackedWeight(pw.buffer, "sparq24_gemm",
                                  dict(bits=4, options=5, rounding="round", pairs=True))
    with pytest.raises(ValueError, match="SPARQ configuration"):
        pyquant.sparq_gemm(a, forged, sparse24=True)


def test_arbitrary_selectors_stay_in_bounds(isa, rng):
    """Any payload bytes (selectors 10..15 included) run without reading out of bounds: the
    result equals the scalar path's on the same bytes."""
    w = sparse_weight(rng, 40, 64)
    pw = pyquant.prepack(w, "sparq24_gemm")
    buf = pw.buffer.copy()
    buf[64:] = rng.integers(0, 256, buf.size - 64, dtype=np.uint8)
    forged = pyquant.PackedWeight(buf, "sparq24_gemm", pw.params)
    # unsigned rows, signed rows with many and with few magnitudes >= 128 (the narrow tables'
    # second pass over the few), and one signed row (the decode tiles: zmm narrow, ymm words)
    signed = signed_activations(rng, 3, 64)
    for a in (activations(rng, 3, 64), signed, narrow_activations(rng, 3, 64, 0.03), signed[:1]):
        got = pyquant.sparq_gemm(a, forged, sparse24=True)
        prev = _C.active_isa()
        try:
            _C.set_isa("scalar")
            want = pyquant.sparq_gemm(a, forged, sparse24=True)
        finally:
            _C.set_isa(prev)
        np.testing.assert_array_equal(got, want)


# --- the module config ---

def test_module_sparse24(rng):
    torch = pytest.importorskip("torch")
    from pyquant.nn import use_reference
    from pyquant.nn.schemes import int8_weight, sparq_act

    torch.manual_seed(0)
    lin = torch.nn.Linear(37, 21)
    x = torch.relu(torch.randn(6, 37))
    x[0] = 0
    cfg = pyquant.SparqConfig(bits=4, options=3, sparse24=True)
    q = pyquant.nn.QuantLinear.from_linear(lin, cfg)
    assert q._buffers["packed"].numpy()[:64].view(pyquant.packed._HEADER)[0]["op"] == 5
    y = q(x)
    # by hand: prune the float weight, int8 per channel, the 2:4 reference, scales, bias
    wq, sw = int8_weight(pyquant.prune_24(lin.weight.detach()))
    qa, sa = sparq_act(x)
    acc = sparq24_ref(qa.numpy(), wq.numpy(), 4, 3, "round", True)
    want = (torch.from_numpy(acc.astype(np.float32)) * sa * sw + lin.bias.detach())
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    # the fused native forward gives the bits of the op + PyTorch scaling path
    from pyquant.nn import ops
    bufs = {n: q._buffers[n] for n in q._buf_names}
    for act_range in (q.act_range, torch.tensor([0.0, 2.5])):
        py = ops.run_reference(x, bufs, act_range, q.bias, 21, q.scheme, False)
        nat = torch.from_numpy(q.scheme.bind(bufs, act_range, q.bias)(x.numpy(), 1))
        assert torch.equal(nat, py)
    with use_reference():
        r = pyquant.nn.QuantLinear.from_linear(lin, cfg)
    torch.testing.assert_close(r(x), y, rtol=1e-5, atol=1e-5)
    # state dict round trip, and a dense SPARQ weight is refused
    q2 = pyquant.nn.QuantLinear.from_linear(lin, cfg)
    q2.load_state_dict(q.state_dict())
    torch.testing.assert_close(q2(x), y)
    dense = pyquant.nn.QuantLinear.from_linear(lin, pyquant.SparqConfig(bits=4, options=3))
    with pytest.raises(ValueError):
        q2.load_state_dict(dense.state_dict())
    with pytest.raises(ValueError, match="sparse24"):
        pyquant.SparqConfig(sparse24=1)


def test_forward_sparse24_signed_blocks_threads_and_paths(threads):
    """The fused forward over several row blocks (K = 8192: 32 signed rows per block) mixing
    blocks with and without negative values: every path and thread count gives the bits of the
    op + PyTorch scaling path."""
    torch = pytest.importorskip("torch")
    from pyquant.nn import ops

    torch.manual_seed(2)
    lin = torch.nn.Linear(8192, 45)
    x = torch.randn(70, 8192)
    x[32:64] = x[32:64].abs()
    q = pyquant.nn.QuantLinear.from_linear(lin, pyquant.SparqConfig(bits=3, sparse24=True))
    bufs = {n: q._buffers[n] for n in q._buf_names}
    want = ops.run_reference(x, bufs, q.act_range, q.bias, 45, q.scheme, False)
    prev = _C.active_isa()
    try:
        for name in pyquant.cpu_info()["available"]:
            _C.set_isa(name)
            got = torch.from_numpy(q.scheme.bind(bufs, q.act_range, q.bias)(x.numpy(), threads))
            assert torch.equal(got, want), name
    finally:
        _C.set_isa(prev)


@pytest.mark.parametrize("static", [False, True])
def test_module_sparse24_signed_inputs(rng, static):
    """Inputs with negative values (a transformer's Linear): sign-magnitude, against the 2:4
    reference on the signed magnitudes by hand; the fused native forward gives the bits of the
    op + PyTorch scaling path; negative='error' refuses them."""
    torch = pytest.importorskip("torch")
    from pyquant.nn import ops
    from pyquant.nn.schemes import int8_weight, sparq_act

    torch.manual_seed(1)
    lin = torch.nn.Linear(70, 33)
    x = torch.randn(9, 70)
    x[2] = torch.relu(x[2])  # one row without negative values
    x[3, :8] = 0
    cfg = pyquant.SparqConfig(sparse24=True)
    assert cfg.negative == "sign_magnitude"
    q = pyquant.nn.QuantLinear.from_linear(lin, cfg)
    act_range = torch.tensor([-3.0, 2.5]) if static else q.act_range
    if static:
        q.act_range.copy_(act_range)
    y = q(x)
    wq, sw = int8_weight(pyquant.prune_24(lin.weight.detach()))
    qa, sa = sparq_act(x, act_range if static else None)
    signed = np.where(x.numpy() < 0, -qa.numpy().astype(np.int16), qa.numpy())
    acc = sparq24_ref(signed, wq.numpy(), 4, 5, "round", True)
    want = torch.from_numpy(acc.astype(np.float32)) * sa * sw + lin.bias.detach()
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    bufs = {n: q._buffers[n] for n in q._buf_names}
    py = ops.run_reference(x, bufs, act_range, q.bias, 33, q.scheme, False)
    for threads in (1, 2):
        nat = torch.from_numpy(q.scheme.bind(bufs, act_range, q.bias)(x.numpy(), threads))
        assert torch.equal(nat, py)
    with pyquant.nn.use_reference():
        r = pyquant.nn.QuantLinear.from_linear(lin, cfg)
    if static:
        r.act_range.copy_(act_range)
    torch.testing.assert_close(r(x), y, rtol=1e-5, atol=1e-5)
    strict = pyquant.nn.QuantLinear.from_linear(lin, pyquant.SparqConfig(sparse24=True, negative="error"))
    strict.act_range.copy_(q.act_range)
    with pytest.raises(ValueError, match="negative='error'"):
        strict(x)
    torch.testing.assert_close(strict(torch.relu(x)), q(torch.relu(x)))
