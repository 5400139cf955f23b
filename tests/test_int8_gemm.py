import numpy as np
import pytest
import torch

import pyquant
from reference import gemm_ref

# XNNPACK-style sweep: M over 1..MR and beyond (MR is 6 on AVX-512, 3 on AVX2, 4 elsewhere), N tails around
# the 64-column panel and the 8/16-column vectors, K below/at/above the 4-wide group and the
# 1024-wide K block.
SHAPES = [
    (m, n, k)
    for m in (1, 2, 3, 4, 5, 6, 7, 13)
    for n, k in ((1, 1), (7, 3), (16, 4), (63, 5), (64, 64), (65, 1023), (130, 1025))
] + [(256, 96, 2051), (33, 200, 4096),
      (50, 16, 100), (40, 20, 300), (27, 32, 1030)]  # narrow panels: 24- and 12-row tiles + tails


def rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_reference(isa, rng, a_dtype, m, n, k):
    a, w = rand(rng, a_dtype, (m, k)), rand(rng, np.int8, (n, k))
    np.testing.assert_array_equal(pyquant.int8_gemm(a, w), gemm_ref(a, w))


@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
def test_prepacked_and_threads(isa, rng, threads, a_dtype):
    a, w = rand(rng, a_dtype, (37, 3001)), rand(rng, np.int8, (300, 3001))
    pw = pyquant.prepack(w, "int8_gemm")
    np.testing.assert_array_equal(pyquant.int8_gemm(a, pw), gemm_ref(a, w))


# Small M (2..16 rows) runs the AVX2 streaming tile: 4-row blocks where every row of a 64-byte
# K chunk is <= 127 (vpmaddubsw's fast route), 2- and 1-row blocks otherwise. Rows mix 7-bit,
# 8-bit and extreme values, and one large byte sits only in the last (short) chunk.
@pytest.mark.parametrize("m", [2, 3, 5, 8, 9, 15, 16, 17, 24])
@pytest.mark.parametrize("n,k", [(70, 60), (130, 77), (64, 1029)])
def test_small_m_mixed_routes(isa, rng, m, n, k):
    a = rng.integers(0, 128, size=(m, k)).astype(np.uint8)
    a[1::3] = rng.integers(0, 256, size=a[1::3].shape)  # 8-bit rows
    a[2::4] = 127  # extremes of the fast route: 127 * -128 * 2 = -32512 per pair
    a[m - 1, k - 1] = 255  # the last row turns 8-bit in its last chunk only
    w = rand(rng, np.int8, (n, k))
    w[: n // 2, :] = -128
    np.testing.assert_array_equal(pyquant.int8_gemm(a, w), gemm_ref(a, w))


@pytest.mark.parametrize("rows", [3, 9])  # 9: AVX2 takes 8-bit rows through its int16 tile
@pytest.mark.parametrize("a_value, w_value", [(255, -128), (255, 127), (-128, -128), (127, -128)])
def test_k65536_extremes_do_not_overflow(isa, rows, a_value, w_value):
    # 255 * -128 * 65536 = -2^31 + 2^24...: the largest magnitudes int32 holds; any int16
    # saturation (vpmaddubsw) or int32 overflow of an offset would show here.
    k = 65536
    a_dtype = np.int8 if a_value < 0 or a_value == 127 else np.uint8
    a = np.full((rows, k), a_value, a_dtype)
    w = np.full((5, k), w_value, np.int8)
    np.testing.assert_array_equal(pyquant.int8_gemm(a, w), gemm_ref(a, w))


def test_torch_in_torch_out(rng):
    a = torch.from_numpy(rand(rng, np.int8, (5, 70)))
    w = torch.from_numpy(rand(rng, np.int8, (9, 70)))
    c = pyquant.int8_gemm(a, w)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.int32
    assert torch.equal(c, torch.from_numpy(gemm_ref(a.numpy(), w.numpy())))
    # non-contiguous views are accepted
    at = torch.from_numpy(rand(rng, np.uint8, (70, 5))).t()
    assert torch.equal(pyquant.int8_gemm(at, w), torch.from_numpy(gemm_ref(at.numpy(), w.numpy())))


def test_all_paths_bit_identical(rng):
    a, w = rand(rng, np.int8, (11, 777)), rand(rng, np.int8, (150, 777))
    pw = pyquant.prepack(w, "int8_gemm")
    outs = []
    for name in pyquant.cpu_info()["available"]:
        pyquant._C.set_isa(name)
        outs.append(pyquant.int8_gemm(a, pw))
    pyquant._C.set_isa(pyquant.cpu_info()["available"][-1])
    for out in outs:
        np.testing.assert_array_equal(out, outs[0])


def test_empty_dims():
    assert pyquant.int8_gemm(np.zeros((0, 5), np.uint8), np.zeros((3, 5), np.int8)).shape == (0, 3)
    assert pyquant.int8_gemm(np.zeros((2, 5), np.uint8), np.zeros((0, 5), np.int8)).shape == (2, 0)
    c = pyquant.int8_gemm(np.zeros((2, 0), np.uint8), np.zeros((3, 0), np.int8))
    assert c.shape == (2, 3) and not c.any()


def test_packed_weight_header_is_checked(rng):
    w = rand(rng, np.int8, (8, 16))
    pw = pyquant.prepack(w, "int8_gemm")
    assert "int8_gemm" in repr(pw) and pw.shape == (8, 16)
    with pytest.raises(ValueError, match=r"a: expected shape \[M, 16\]"):
        pyquant.int8_gemm(np.zeros((2, 15), np.uint8), pw)
    broken = pyquant.PackedWeight(pw.buffer.copy(), "int8_gemm")
    broken.buffer[0] = ord("X")
    with pytest.raises(ValueError, match="magic"):
        pyquant.int8_gemm(np.zeros((2, 16), np.uint8), broken)
    truncated = pyquant.PackedWeight(pw.buffer[:-4].copy(), "int8_gemm")
    with pytest.raises(ValueError, match="size"):
        pyquant.int8_gemm(np.zeros((2, 16), np.uint8), truncated)


@pytest.mark.parametrize(
    "a, w, exc, match",
    [
        (np.zeros((2, 4), np.int16), np.zeros((3, 4), np.int8), TypeError, "a: expected dtype"),
        (np.zeros((2, 4), np.uint8), np.zeros((3, 4), np.uint8), TypeError, "w: expected dtype"),
        (np.zeros((2, 4), np.float32), np.zeros((3, 4), np.int8), TypeError, "a"),
        (np.zeros(4, np.uint8), np.zeros((3, 4), np.int8), ValueError, "a: expected a 2-D"),
        (np.zeros((2, 4), np.uint8), np.zeros((3, 5), np.int8), ValueError, "a: expected shape"),
        (np.zeros((2, 4), np.uint8), np.zeros((1, 3, 4), np.int8), ValueError, "w: expected a 2-D"),
        ([[1, 2]], np.zeros((3, 2), np.int8), TypeError, "a"),
        (np.zeros((2, 4), np.uint8), None, TypeError, "w"),
    ],
)
def test_bad_input(a, w, exc, match):
    with pytest.raises(exc, match=match):
        pyquant.int8_gemm(a, w)


def test_packed_for_other_op_is_rejected(rng):
    pw = pyquant.prepack(rand(rng, np.int8, (4, 8)), "int8_gemm")
    pw_other = pyquant.PackedWeight(pw.buffer.copy(), "int8_gemm")
    pw_other.op = "lowbit_gemm"
    with pytest.raises(ValueError, match="packed for"):
        pyquant.int8_gemm(np.zeros((1, 8), np.uint8), pw_other)


# The AVX2 path picks, per micro-tile and K block, a fast route (activations <= 127) or an exact
# split route (any larger activation). These inputs exercise both routes and their boundaries.
@pytest.mark.parametrize("m,n,k", [(1, 70, 1030), (5, 64, 4100), (8, 130, 2049), (37, 17, 1024)])
def test_route_per_tile_and_k_block(isa, rng, m, n, k):
    a = rng.integers(0, 128, size=(m, k)).astype(np.uint8)   # 7-bit rows: fast route
    a[m // 2, -1] = 128                                      # one big value in the last K block
    if m > 3:
        a[-1, 5] = 255                                       # and one in the first block
    w = rand(rng, np.int8, (n, k))
    np.testing.assert_array_equal(pyquant.int8_gemm(a, w), gemm_ref(a, w))


@pytest.mark.parametrize("a_value", [127, 128, 255])
def test_pair_sums_at_the_int16_edge(isa, a_value):
    # Two adjacent products of the same sign: 127*-128*2 = -32512 fits int16, 128*-128*2 does not.
    k = 4096 + 4
    a = np.full((4, k), a_value, np.uint8)
    w = np.full((9, k), -128, np.int8)
    w[1::2] = 127
    np.testing.assert_array_equal(pyquant.int8_gemm(a, w), gemm_ref(a, w))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,k", [(8, 61), (9, 1030), (40, 4100)])
def test_8bit_rows_through_the_int16_tile(isa, rng, threads, m, k):
    """AVX2 runs 8-bit rows from 8 rows per task through its int16 tile (a = q >> 2, a_low =
    q & 3) when every row has a byte above 127, unsigned and signed (flipped) inputs alike."""
    w = rand(rng, np.int8, (70, k))
    w[::3] = -128
    for a in (rng.integers(128, 256, size=(m, k)).astype(np.uint8), rand(rng, np.int8, (m, k))):
        a[0, :] = a.flat[0] | 0x80 if a.dtype == np.uint8 else -128  # extremes in one row
        pyquant.set_num_threads(threads)
        try:
            np.testing.assert_array_equal(pyquant.int8_gemm(a, w), gemm_ref(a, w))
        finally:
            pyquant.set_num_threads(None)
