"""The AVX2 vpmaddubsw tile's pair route (csrc/int8_gemm/int8_gemm.h, Int8GroupFix): its fast
route taken for any row whose pairs (k, k + 1), k even, sum to at most 255, and 8-bit rows split
into such rows plus sparse fixes (SPARQ's raw op and fused forward, int8_gemm_run: the raw
int8_gemm on uint8 and Int8Config(act_bits=8)). Every case against integer
references, on every int8 kernel this CPU runs, forced in turn (the AVX2 ones are not the
selected kernels on a VNNI CPU)."""
from __future__ import annotations

import numpy as np
import pytest

import pyquant
from pyquant import _C
from forced_kernels import forced_kernel
from reference_sparq import sparq_ref
from test_nn_forward import ref_abs_u8

INT8_KERNELS = [e for e in _C.kernel_table() if e["family"] == "int8_gemm"]
AVX2_KERNELS = [e for e in INT8_KERNELS if e["name"].startswith("avx2_")]


@pytest.fixture
def int8_kernel(request):
    with forced_kernel(request.param) as name:
        yield name


def kernels(entries):
    return pytest.mark.parametrize("int8_kernel", [pytest.param(e, id=e["name"]) for e in entries],
                                   indirect=True)


def edge_rows(rng, m, k):
    """Rows whose pairs sum to 255 at most (the edge: 255 + 0, 128 + 127, 200 + 55), with a few
    pairs at 256 in some rows (the split route's), so either route is at its limit."""
    first = rng.integers(0, 256, (m, (k + 1) // 2))
    pairs = np.stack([first, 255 - first], -1).reshape(m, -1)[:, :k]
    pairs[1::3, 2:6] = 128  # two pairs summing to 256
    return pairs.astype(np.uint8)


def worst_weights(rng, n, k):
    w = rng.choice(np.array([-128, 127, -127], np.int8), size=(n, k))
    w[n // 2:] = -128  # every product at its most negative
    return w


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", [(1, 70, 1030), (2, 65, 300), (5, 64, 64), (16, 130, 2100),
                                   (17, 70, 300), (40, 520, 300), (3, 17, 7)])
def test_int8_gemm_exact_at_the_pair_limit(int8_kernel, rng, m, n, k):
    a = edge_rows(rng, m, k)
    w = worst_weights(rng, n, k)
    ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
    assert np.array_equal(pyquant.int8_gemm(a, w), ref)
    a[1::3] = np.minimum(a[1::3], 127)  # rows all within the limit
    a[:, 0] = 255
    a[:, 1] = 0
    ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
    assert np.array_equal(pyquant.int8_gemm(a, w), ref)


def relu_rows(rng, m, k, dense_rows=()):
    """uint8 codes of post-ReLU rows (per row max|x| -> 255), some rows dense in large pairs."""
    x = np.maximum(rng.standard_normal((m, k)), 0).astype(np.float32)
    for r in dense_rows:
        x[r] = rng.uniform(0.8, 1.0, k)  # every pair past 255: more fixes than a row may take
    return x


SPARQ = dict(bits=4, options=5, rounding="round", pairs=True)


def forward_weights(rng, n, k):
    """Random int8 weights, the first 256 k at the worst case (sums stay exact in float32)."""
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w[:, :256] = worst_weights(rng, n, min(k, 256))
    return w


def forward(x, w, threads=1, act=None):
    n = w.shape[0]
    pw = pyquant.prepack(w, "sparq_gemm", **SPARQ)
    act_t = np.array(act if act else (np.nan, np.nan), np.float32)
    return _C.forward_sparq(x, np.asarray(pw.buffer), 4, 5, True, True, True,
                            np.ones(n, np.float32), None, act_t, threads)


def forward_ref(x, w, act=None):
    q, sa = ref_abs_u8(x, act)
    t = sparq_ref(q, 4, 5, "round", True).astype(np.int64)
    acc = np.where(x < 0, -t, t) @ w.T.astype(np.int64)
    assert np.abs(acc).max() < 2**24  # exact in float32
    return acc.astype(np.float32) * sa[:, None]


# rows per task: 1 (decode), 2-16 (the strip schedule), 17+ (the wide tile's range when rows are
# left whole); K tails past whole 32-byte steps of the split (k_pad % 32 = 4, 8, 28), K blocks
SHAPES = [(1, 70, 1030), (3, 65, 36), (8, 130, 300), (16, 64, 44), (40, 200, 1100),
          (70, 70, 4200), (9, 33, 1)]


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("dense", ["none", "few", "many"])
def test_sparq_forward_relu_rows(int8_kernel, rng, threads, m, n, k, dense):
    """Post-ReLU rows through the pair route; rows too dense in large pairs stay whole (few: the
    split route for them; many, past 1/8 of a block: the block written again in the wide format)."""
    rows = {"none": (), "few": (m // 2,), "many": tuple(range(0, m, 2))}[dense]
    x = relu_rows(rng, m, k, rows)
    w = forward_weights(rng, n, k)
    assert np.array_equal(forward(x, w, threads), forward_ref(x, w))


def signed_rows(rng, m, k, dense_rows=()):
    """LayerNorm-like rows (a few outlier features, so some pairs of either sign pass 255 after
    the trim); dense rows have every pair past 255 with mixed signs (more fixes than a row may
    take)."""
    x = rng.standard_normal((m, k)).astype(np.float32)
    for j in range(4):  # runs of four outliers: some fill a k group, of either sign (two fixes)
        x[:, j:k:37] *= 6
    for r in dense_rows:
        x[r] = rng.uniform(0.8, 1.0, k) * rng.choice([-1, 1], k)
    return x


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("dense", ["none", "few", "many"])
def test_sparq_forward_signed_rows(int8_kernel, rng, threads, m, n, k, dense):
    """Signed rows: on AVX2 |v| with sign bytes through the u8 tile (compute_sign_xor), split by
    the pair route with fixes of either sign; rows left whole take the split route (few) or,
    past 1/8 of a block, the block is written again in the wide format (many)."""
    rows = {"none": (), "few": (m // 2,), "many": tuple(range(0, m, 2))}[dense]
    x = signed_rows(rng, m, k, rows)
    w = forward_weights(rng, n, k)
    assert np.array_equal(forward(x, w, threads), forward_ref(x, w))


@kernels(AVX2_KERNELS + [e for e in INT8_KERNELS if e["name"] == "scalar"])
@pytest.mark.parametrize("k", [1024, 1028])
@pytest.mark.parametrize("m", [1, 7, 40])
@pytest.mark.parametrize("over", [False, True])
def test_sparq_forward_signed_rows_at_the_fix_cap(int8_kernel, rng, threads, k, m, over):
    """Signed rows needing cap - 1, cap and cap + 1 fixes (cap = k groups / 8 + 1), counted with
    k groups whose two pairs pass 255 with opposite signs (two fixes each) and with one sign (one
    fix); m = 1: one row (cap - 1, or cap + 1: left whole); m = 7: rows left whole take the sign
    tile's split route; m = 40: a few of them among rows that split."""
    groups = (k + 3) // 4
    cap = groups // 8 + 1
    counts = [cap + 1 if over else cap - 1, cap, cap + 1, cap, 2 * cap, cap + 1, 0][:m]
    counts += [3] * (m - len(counts))
    x = np.full((m, k), 0.01, np.float32)
    x[:, -1] = 1.0  # the row's scale: |x| = 1 -> 255
    for r, c in enumerate(counts):
        at = rng.choice(groups - 1, size=c // 2 + c % 2, replace=False)
        sign = rng.choice([-1, 1], size=at.size)
        x[r, 4 * at] = sign
        x[r, 4 * at + 1] = 0.9 * sign
        mixed = at[: c // 2]  # the second pair of opposite sign: two fixes
        x[r, 4 * mixed + 2] = -sign[: c // 2]
        x[r, 4 * mixed + 3] = -0.9 * sign[: c // 2]
    w = forward_weights(rng, 70, k)
    assert np.array_equal(forward(x, w, threads), forward_ref(x, w))


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("neg_row", [1, 15, 39])
def test_sparq_forward_negative_after_the_first_row(int8_kernel, rng, threads, neg_row):
    """A block guessed non-negative from its first row, with a negative value further down: the
    block is written again in the signed format (AVX2: sign bytes through the u8 tile; VNNI:
    its wide format)."""
    m, n, k = 40, 130, 300
    x = relu_rows(rng, m, k)
    x[neg_row, 7] = -0.5
    w = forward_weights(rng, n, k)
    assert np.array_equal(forward(x, w, threads), forward_ref(x, w))
    amax = float(np.abs(x).max())
    act = (-amax, amax)  # static range: the same rows per tensor scale
    assert np.array_equal(forward(x, w, threads, act), forward_ref(x, w, act))


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", [(1, 70, 1030), (7, 65, 301), (40, 130, 4200), (20, 64, 36)])
def test_sparq_gemm_raw_rows(int8_kernel, rng, threads, m, n, k):
    """The raw op (uint8 codes): random rows, rows of large values (left whole), edge rows."""
    w = worst_weights(rng, n, k)
    for a in (rng.integers(0, 256, (m, k)).astype(np.uint8),
              np.full((m, k), 255, np.uint8),
              edge_rows(rng, m, k),
              (np.maximum(rng.standard_normal((m, k)), 0) * 80).clip(0, 255).astype(np.uint8)):
        ref = sparq_ref(a, 4, 5, "round", True).astype(np.int64) @ w.T.astype(np.int64)
        assert np.array_equal(pyquant.sparq_gemm(a, w, **SPARQ), ref.astype(np.int32))


def test_avx2_kernels_are_in_the_table():
    assert {e["name"] for e in AVX2_KERNELS} >= {"avx2_1x64", "avx2_4x16"}


# --- int8_gemm_run (raw int8_gemm, Int8Config(act_bits=8)): uint8 rows split when 8-bit ---
def relu_codes(rng, m, k, dense_rows=()):
    """uint8 codes of post-ReLU rows (zero point 0), a few pairs past 255 in each; dense rows
    have every pair past 255 (left whole)."""
    a = (np.maximum(rng.standard_normal((m, k)), 0) * 70).clip(0, 255).astype(np.uint8)
    for r in dense_rows:
        a[r] = rng.integers(200, 256, k)
    return a


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", [(1, 70, 1028), (5, 65, 36), (16, 130, 300), (40, 520, 301),
                                   (70, 64, 4200), (9, 33, 2)])
@pytest.mark.parametrize("dense", ["none", "few", "many"])
def test_int8_gemm_uint8_rows(int8_kernel, rng, threads, m, n, k, dense):
    """In place (K a multiple of 4), converted (K tail) and strided rows; rows left whole by the
    split (few: their split route; many: past 1/8 of the rows, the int16 tile from 8 rows per
    task, its rows prepared again from the input when they had been converted); the pair route
    declined (7-bit rows, a probe row left whole)."""
    probes = {0, m // 2, m - 1}  # the driver tries the pair route if these three split
    rows = {"none": (), "few": (m // 3,), "many": tuple(range(0, m, 2))}[dense]
    wide = relu_codes(rng, m, k + 8, [r for r in rows if r not in probes])
    w = worst_weights(rng, n, k)
    for a in (np.ascontiguousarray(wide[:, :k]), wide[:, :k]):
        keep = a.copy()
        ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
        assert np.array_equal(pyquant.int8_gemm(a, w), ref)
        assert np.array_equal(a, keep)  # the caller's rows are never split in place
    for a in (wide[:, :k] >> 1, relu_codes(rng, m, k, [m - 1])[:, :k]):
        ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
        assert np.array_equal(pyquant.int8_gemm(a, w), ref)


@kernels(AVX2_KERNELS)
@pytest.mark.parametrize("shape", [(1, 300), (12, 1030), (70, 36)])
def test_int8config_8bit_relu_inputs_match_the_scalar_kernel(int8_kernel, rng, threads, shape):
    """QuantLinear(Int8Config(act_bits=8)) on post-ReLU inputs (zero point 0: pairs past 255
    are few): the bits of the scalar kernel."""
    import torch

    m, k = shape
    lin = torch.nn.Linear(k, 130)
    mod = pyquant.nn.QuantLinear.from_linear(lin, pyquant.Int8Config(act_bits=8))
    x = torch.from_numpy(np.maximum(rng.standard_normal((m, k)), 0).astype(np.float32))
    with torch.no_grad():
        got = mod(x)
        _C.set_kernel("int8_gemm", "scalar")
        ref = mod(x)
    assert torch.equal(got, ref)


@kernels(AVX2_KERNELS + [e for e in INT8_KERNELS if e["name"] == "scalar"])
@pytest.mark.parametrize("k", [1024, 1028])
def test_int8_gemm_rows_at_the_fix_cap(int8_kernel, rng, threads, k):
    """Rows needing cap - 1, cap and cap + 1 fixes (cap = k groups / 8 + 1: one fix per k group,
    whichever of its two pairs pass 255), after a first row that splits; in place (k = 1024) and
    converted (1028: the cap's row is K-padded)."""
    groups = (k + 3) // 4
    cap = groups // 8 + 1
    counts = [1, cap - 1, cap, cap + 1, cap, 2 * cap, cap + 1, 0, cap - 1]
    a = np.zeros((len(counts), k), np.uint8)
    for r, c in enumerate(counts):
        at = rng.choice(groups - 1, size=c, replace=False)
        a[r, 4 * at] = 200
        a[r, 4 * at + 1] = 100
        a[r, 4 * at[::2] + 2] = 255  # both pairs of some groups: still one fix
        a[r, 4 * at[::2] + 3] = 1
    w = worst_weights(rng, 70, k)
    ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
    assert np.array_equal(pyquant.int8_gemm(a, w), ref)
    pw = pyquant.prepack(w, "sparq_gemm", **SPARQ)
    t = sparq_ref(a, 4, 5, "round", True)
    ref = t.astype(np.int64) @ w.T.astype(np.int64)
    assert np.array_equal(pyquant.sparq_gemm(a, pw), ref.astype(np.int32))


def gelu_rows(rng, m, k, peaks=0, big_negative_row=None):
    """GELU outputs (a transformer FFN's second input): every negative value small beside the
    row's largest, the offset route's rows (v + c through the plain tile); `peaks` values per row
    at the row's max (each one past 255 - c: an excess fix of its own; k / 3 of them pass the
    row's fix cap), and one row with a large negative value (the block written again with sign
    bytes)."""
    z = rng.standard_normal((m, k)) * 2
    x = (0.5 * z * (1 + np.tanh(0.7978845608 * (z + 0.044715 * z ** 3)))).astype(np.float32)
    if peaks:
        x[:, ::max(1, k // peaks)] = np.abs(x).max(1, keepdims=True) * (1 - 1e-3)
    if big_negative_row is not None:
        x[big_negative_row, k // 2] = -np.abs(x[big_negative_row]).max()
    return x


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("case", ["gelu", "few-peaks", "many-peaks", "big-negative", "static"])
def test_sparq_forward_offset_rows(int8_kernel, rng, threads, m, n, k, case):
    """Rows whose negative values are all small run as u = v + c (c: the row's largest negative
    magnitude) through the plain u8 tile on AVX2, c * colsum(W) taken back out exactly; values
    past 255 - c keep 255 and an excess fix; rows the route cannot take (too many excesses, a
    large negative) send the block to the sign bytes. The same integers as the reference."""
    x = gelu_rows(rng, m, k, peaks={"few-peaks": max(1, k // 64), "many-peaks": k // 3 + 1}
                  .get(case, 0), big_negative_row=m // 2 if case == "big-negative" else None)
    w = forward_weights(rng, n, k)
    act = (float(x.min()), float(np.abs(x).max()) * 1.5) if case == "static" else None
    assert np.array_equal(forward(x, w, threads, act), forward_ref(x, w, act))


def outlier_rows(rng, m, k, dense_row=None):
    """LayerNorm outputs with a few outlier features (BERT's): small values of both signs beside
    outliers at +-amax and +-0.7 amax in about one k group of 200, so on the VNNI kernels the
    block guesses few fixes and takes offset rows with c = 128: the outliers' excess past 255
    (positive) and below 0 (negative) as fixes of either sign, two in a group holding both; one
    dense row (Gaussian: fixes in most of its k groups, past any per-row cap of the pair route)."""
    x = rng.uniform(-0.3, 0.3, (m, k)).astype(np.float32)
    cols = np.arange(3, k, 800)
    x[:, cols] = rng.choice([-1.0, 1.0, -0.7, 0.7], size=(m, len(cols)))
    x[:, cols[::2] + 1] = -x[:, cols[::2]]  # a group holding an excess of each sign
    if dense_row is not None:
        x[dense_row] = rng.standard_normal(k)
    return x


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("case", ["outliers", "dense-row", "static"])
def test_sparq_forward_outlier_rows(int8_kernel, rng, threads, m, n, k, case):
    """Signed rows whose magnitudes past 127 are rare: on the VNNI kernels offset rows u = v + c
    (c = min(largest negative, 128)) through the plain tile with excess fixes of either sign
    (Int8GemmKernels::offset_fix_share_max), c * colsum(W) taken back out; elsewhere their sign
    routes. The same integers as the reference."""
    x = outlier_rows(rng, m, k, dense_row=m // 2 if case == "dense-row" else None)
    w = forward_weights(rng, n, k)
    act = (-1.2, 1.2) if case == "static" else None
    assert np.array_equal(forward(x, w, threads, act), forward_ref(x, w, act))


@kernels(INT8_KERNELS)
def test_sparq_forward_plain_then_sign_then_wide(int8_kernel, rng, threads):
    """A block guessed non-negative (its first, middle and last rows are), written again with
    sign bytes for a negative row, and once more in the wide format because more than 1/8 of its
    signed rows stay whole (AVX2; other paths take their wide format at once)."""
    m, n, k = 40, 70, 300
    x = relu_rows(rng, m, k)
    for r in range(1, m - 1, 2):  # dense mixed-sign rows, none of the three probed
        x[r] = rng.uniform(0.8, 1.0, k) * rng.choice([-1, 1], k)
    w = forward_weights(rng, n, k)
    assert np.array_equal(forward(x, w, threads), forward_ref(x, w))


@kernels(INT8_KERNELS)
@pytest.mark.parametrize("m,n,k", [(1, 70, 1028), (5, 65, 36), (16, 130, 300), (40, 70, 1029),
                                   (70, 64, 4200)])
def test_int8_gemm_signed_rows(int8_kernel, rng, threads, m, n, k):
    """int8 activations (AVX2: |a| and sign bytes through the u8 tile; a pair of two -128s is the
    only one past 255, a fix): random rows, rows at cap - 1 / cap / cap + 1 such pairs (the last
    left whole: the split route), rows of -128 only, against -128 / 127 weights."""
    groups = (k + 3) // 4
    cap = groups // 8 + 1
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    for r, c in zip(range(1, m), [cap - 1, cap, cap + 1]):
        at = rng.choice(groups - 1, size=min(c, groups - 1), replace=False)
        a[r, 4 * at] = a[r, 4 * at + 1] = -128
        a[r, 4 * at[::3] + 2] = a[r, 4 * at[::3] + 3] = -128  # two such pairs in a group
    if m > 4:
        a[4] = -128
    w = worst_weights(rng, n, k)
    ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
    assert np.array_equal(pyquant.int8_gemm(a, w), ref)


@kernels(AVX2_KERNELS)
def test_sparq_forward_over_several_blocks(int8_kernel, rng, threads):
    """Blocks of about 1 MiB of rows (249 rows at K = 4200): a pair-route block, a block made
    signed by a negative value in its 100th row, a pair-route block after it (the row bias and
    pair_safe reset between blocks), a last short block with rows left whole."""
    m, n, k = 800, 40, 4200
    x = relu_rows(rng, m, k, dense_rows=range(760, 800, 3))
    x[249 + 100, 5] = -1.0
    w = forward_weights(rng, n, k)
    assert np.array_equal(forward(x, w, threads), forward_ref(x, w))
