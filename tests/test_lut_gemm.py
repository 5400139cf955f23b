"""pyquant.lut_gemm: bit-exact against a numpy oracle on every ISA path and every kernel."""
import numpy as np
import pytest
import torch

import pyquant
from pyquant import _C
from pyquant.lut import _lut_gemm, lut_kernel


def lut_ref(a, w, a_levels, w_levels):
    """sum_k a_levels[a[m,k]] * w_levels[w[n,k]] in int64, then int32 (exact for K < 2^24)."""
    av = np.asarray(a_levels, np.int64)[np.asarray(a)]
    wv = np.asarray(w_levels, np.int64)[np.asarray(w)]
    return (av @ wv.T).astype(np.int32)


def codes(rng, shape):
    return rng.integers(0, 4, size=shape).astype(np.uint8)


# (a_levels, w_levels) chosen to hit every accumulation schedule (products summed per 8-bit lane
# by deepgemm: floor(255 / (pmax - pmin)); lookups per uint8 lane by vpermb:
# floor(255 / (3 * (pmax - pmin))) and by pair: floor(255 / (2 * (pmax - pmin)))): default
# (28 / 9 / 14); non-uniform signed (8 / 2 / 4); the int8 extreme -8 * 16 = -128 with
# 7 * 16 = 112 (1 / no vpermb / no pair); range 72 (3 / 1 / 1); all-equal products; range 85
# (3 / 1 / 1, the widest vpermb accepts); range 127 (2 / no vpermb / 1, the widest pair
# accepts); range 128 (1 / no vpermb / no pair).
CODEBOOKS = [
    ((0, 1, 2, 3), (-2, -1, 0, 1)),
    ((-3, -1, 1, 3), (0, 1, 2, 5)),
    ((-8, -4, 0, 7), (16, -8, 3, 0)),
    ((-7, -1, 0, 1), (9, 0, 1, 2)),
    ((2, 2, 2, 2), (-3, -3, -3, -3)),
    ((0, 1, 5, 17), (-1, 0, 1, 4)),
    ((0, 1, 1, 1), (63, -64, 0, 1)),
    ((-1, 0, 1, 1), (64, -64, 0, 1)),
]
# every kernel that can run a codebook on a path
KERNELS_BY_ISA = {"scalar": ("scalar",), "avx2": ("scalar", "deepgemm", "pair"),
                  "avx512": ("scalar", "deepgemm", "vpermb", "pair"),
                  "neon": ("scalar", "deepgemm")}

# M over 1..MR (4 or 6) and beyond, N tails around the 64-column panel (and the 2-panel vpermb
# step), K below/at/above the 12-code block, the int16 widening blocks and pair's 512-code
# K-block (odd and even group counts per block: its loop takes 2 groups at a time), and M past
# its 256-row chunk with a 1- or 2-row remainder (its register-only path; N >= 8 panels keeps
# all rows in one call for 1 and 2 threads).
SHAPES = [(m, n, k) for m in (1, 2, 3, 5, 6, 7, 13) for n, k in ((1, 1), (7, 11), (64, 12), (65, 13), (130, 37))]
SHAPES += [(9, 200, 1000), (4, 129, 3073), (2, 64, 12289), (3, 64, 512), (2, 70, 516), (1, 33, 524),
           (257, 520, 40), (258, 520, 24)]


def kernels_for(isa, a_levels, w_levels):
    return [k for k in KERNELS_BY_ISA[isa] if lut_kernel(a_levels, w_levels, k)]


@pytest.mark.parametrize("levels", CODEBOOKS, ids=lambda l: "x".join(map(str, l)))
def test_codebooks_every_kernel(isa, rng, levels):
    al, wl = levels
    for m, n, k in SHAPES:
        a, w = codes(rng, (m, k)), codes(rng, (n, k))
        pw = pyquant.prepack(w, "lut_gemm", w_levels=wl)
        expected = lut_ref(a, w, al, wl)
        for kern in kernels_for(isa, al, wl):
            np.testing.assert_array_equal(_lut_gemm(a, pw, al, wl, kern), expected,
                                          err_msg=f"{isa}/{kern} {m}x{n}x{k}")


def test_codebooks_alternating_on_one_thread(isa, rng):
    """The vpermb / pair tables are kept per thread for the last codebook (lut_gemm_driver.cc):
    codebooks that differ in one level (three products), alternating call by call on one
    kernel, and kernel switches between calls of one codebook, each give their own exact
    result."""
    books = [((0, 1, 2, 3), (-2, -1, 0, 1)), ((0, 1, 2, 3), (-2, -1, 0, 2)),
             ((0, 1, 2, 4), (-2, -1, 0, 1))]
    a, w = codes(rng, (3, 301)), codes(rng, (70, 301))
    kerns = sorted({k for al, wl in books for k in kernels_for(isa, al, wl)})
    calls = [(kern, book) for kern in kerns for book in books]  # codebook changes, one kernel
    calls += [(kern, book) for book in books for kern in kerns]  # kernel changes, one codebook
    for kern, (al, wl) in calls:
        if kern in kernels_for(isa, al, wl):
            np.testing.assert_array_equal(_lut_gemm(a, w, al, wl, kern), lut_ref(a, w, al, wl),
                                          err_msg=f"{isa}/{kern} {al} {wl}")


def test_default_codebook_public_api(isa, rng, threads):
    a, w = codes(rng, (37, 777)), codes(rng, (300, 777))
    expected = lut_ref(a, w, (0, 1, 2, 3), (-2, -1, 0, 1))
    np.testing.assert_array_equal(pyquant.lut_gemm(a, w), expected)
    pw = pyquant.prepack(w, "lut_gemm")
    np.testing.assert_array_equal(pyquant.lut_gemm(a, pw), expected)


@pytest.mark.parametrize("kern", ["scalar", "deepgemm", "vpermb", "pair"])
def test_k65536_extreme_product(isa, kern):
    # every product is the codebook's extreme: -128 (int8 minimum) for deepgemm/scalar; for
    # vpermb / pair the widest product range each accepts (85 / 127), all at the top of its
    # unsigned range
    k = 65536
    if kern == "vpermb":
        al, wl, ac, wc = (0, 0, 0, 85), (0, 0, 0, 1), 3, 3
    elif kern == "pair":
        al, wl, ac, wc = (0, 0, 0, 127), (0, 0, 0, 1), 3, 3
    else:
        al, wl, ac, wc = (-8, 0, 0, 7), (16, 0, 0, -8), 0, 0
    if not lut_kernel(al, wl, kern):
        pytest.skip(f"{kern} is not available on {isa}")
    a = np.full((3, k), ac, np.uint8)
    w = np.full((5, k), wc, np.uint8)
    out = _lut_gemm(a, w, al, wl, kern)
    np.testing.assert_array_equal(out, lut_ref(a, w, al, wl))
    # the top of the range everywhere (7 * 16 = 112: the largest biased lane value, 240)
    if kern not in ("vpermb", "pair"):
        np.testing.assert_array_equal(_lut_gemm(np.full_like(a, 3), w, al, wl, kern),
                                      lut_ref(np.full_like(a, 3), w, al, wl))
    # and a mix of both extremes of the range
    a[:, ::2] = 3
    w[:, 1::3] = 3
    np.testing.assert_array_equal(_lut_gemm(a, w, al, wl, kern), lut_ref(a, w, al, wl))


def test_all_paths_and_kernels_identical(rng):
    a, w = codes(rng, (11, 1001)), codes(rng, (150, 1001))
    al, wl = (-3, -1, 1, 3), (0, 1, 2, 5)
    pw = pyquant.prepack(w, "lut_gemm", w_levels=wl)
    expected = lut_ref(a, w, al, wl)
    previous = _C.active_isa()
    try:
        for isa in pyquant.cpu_info()["available"]:
            _C.set_isa(isa)
            for kern in kernels_for(isa, al, wl):
                np.testing.assert_array_equal(_lut_gemm(a, pw, al, wl, kern), expected)
    finally:
        _C.set_isa(previous)


def test_pair_eligibility():
    # pair tables hold 2-product sums biased to uint8: product range <= 127
    if "avx2" not in pyquant.cpu_info()["available"]:
        pytest.skip("no AVX2")
    previous = _C.active_isa()
    try:
        _C.set_isa("avx2")
        assert lut_kernel((0, 1, 1, 1), (63, -64, 0, 1), "pair") == "pair"
        assert lut_kernel((0, 1, 1, 1), (63, -64, 0, 1)) == "pair"
        assert lut_kernel((-1, 0, 1, 1), (64, -64, 0, 1), "pair") == ""
        assert lut_kernel((-1, 0, 1, 1), (64, -64, 0, 1)) == "deepgemm"
        with pytest.raises(ValueError, match="kernel: 'pair' is not available"):
            _lut_gemm(np.zeros((1, 4), np.uint8), np.zeros((1, 4), np.uint8),
                      (-1, 0, 1, 1), (64, -64, 0, 1), kernel="pair")
    finally:
        _C.set_isa(previous)


def test_dispatcher_picks_fastest_exact_kernel():
    previous = _C.active_isa()
    try:
        for isa in pyquant.cpu_info()["available"]:
            _C.set_isa(isa)
            chosen = lut_kernel((0, 1, 2, 3), (-2, -1, 0, 1))
            extreme = lut_kernel((-8, 0, 0, 7), (16, 0, 0, -8))
            expected = {"avx512": ("vpermb", "deepgemm"), "avx2": ("pair", "deepgemm"),
                        "neon": ("deepgemm", "deepgemm"), "scalar": ("scalar", "scalar")}[isa]
            assert (chosen, extreme) == expected
    finally:
        _C.set_isa(previous)


def test_torch_in_torch_out(rng):
    a = torch.from_numpy(codes(rng, (5, 70)))
    w = torch.from_numpy(codes(rng, (9, 70)))
    c = pyquant.lut_gemm(a, w, a_levels=(-3, -1, 1, 3), w_levels=(0, 1, 2, 5))
    assert isinstance(c, torch.Tensor) and c.dtype == torch.int32
    assert torch.equal(c, torch.from_numpy(lut_ref(a.numpy(), w.numpy(), (-3, -1, 1, 3), (0, 1, 2, 5))))
    at = torch.from_numpy(codes(rng, (70, 5))).t()  # non-contiguous
    assert torch.equal(pyquant.lut_gemm(at, w), torch.from_numpy(lut_ref(at.numpy(), w.numpy(), (0, 1, 2, 3), (-2, -1, 0, 1))))


def test_empty_and_k0(rng):
    assert pyquant.lut_gemm(codes(rng, (0, 5)), codes(rng, (3, 5))).shape == (0, 3)
    np.testing.assert_array_equal(pyquant.lut_gemm(codes(rng, (2, 0)), codes(rng, (3, 0))),
                                  np.zeros((2, 3), np.int32))


def test_bad_inputs(rng):
    a, w = codes(rng, (4, 10)), codes(rng, (3, 10))
    bad = a.copy()
    bad[1, 2] = 4
    with pytest.raises(ValueError, match="a: 2-bit codes"):
        pyquant.lut_gemm(bad, w)
    with pytest.raises(ValueError, match="w: 2-bit codes"):
        pyquant.lut_gemm(a, np.where(w == 0, 7, w).astype(np.uint8))
    with pytest.raises(ValueError, match="w: 2-bit codes"):
        pyquant.prepack(np.full((2, 3), 255, np.uint8), "lut_gemm")
    with pytest.raises(ValueError, match=r"a_levels=.*w_levels=.*does not fit int8"):
        pyquant.lut_gemm(a, w, a_levels=(0, 1, 2, 9), w_levels=(-16, 0, 1, 2))
    with pytest.raises(ValueError, match=r"w_levels: level 200"):
        pyquant.lut_gemm(a, w, w_levels=(0, 0, 0, 200))
    with pytest.raises(ValueError, match="a_levels: expected 4 levels"):
        pyquant.lut_gemm(a, w, a_levels=(0, 1, 2))
    with pytest.raises(TypeError, match="a_levels: levels must be integers"):
        pyquant.lut_gemm(a, w, a_levels=(0, 1, 2, 3.5))
    with pytest.raises(ValueError, match=r"a: expected shape \[M, 10\]"):
        pyquant.lut_gemm(codes(rng, (4, 11)), w)
    with pytest.raises(TypeError, match="a: expected dtype uint8"):
        pyquant.lut_gemm(a.astype(np.int8), w)
    with pytest.raises(TypeError, match="w: expected dtype uint8"):
        pyquant.lut_gemm(a, w.astype(np.int32))
    with pytest.raises(ValueError, match="a: expected a 2-D"):
        pyquant.lut_gemm(a[0], w)
    with pytest.raises(TypeError):
        pyquant.lut_gemm([[0, 1]], w)
    # packed for another op, or with other w_levels
    with pytest.raises(ValueError, match="packed for 'int8_gemm'"):
        pyquant.lut_gemm(a, pyquant.prepack(w.astype(np.int8), "int8_gemm"))
    pw = pyquant.prepack(w, "lut_gemm", w_levels=(0, 1, 2, 5))
    with pytest.raises(ValueError, match="w_levels"):
        pyquant.lut_gemm(a, pw)
    with pytest.raises(ValueError, match="packed for 'lut_gemm'"):
        pyquant.int8_gemm(a, pw)
    # the C++ layer checks on its own too
    with pytest.raises(ValueError, match="w: weight was packed with w_levels"):
        _C.lut_gemm(a, pw.buffer, [0, 1, 2, 3], [-2, -1, 0, 1], 1, "auto")
    with pytest.raises(ValueError, match="a: codes must be in"):
        _C.lut_gemm(bad, pw.buffer, [0, 1, 2, 3], [0, 1, 2, 5], 1, "auto")
    with pytest.raises(ValueError, match="kernel:"):
        _lut_gemm(a, w, kernel="nope")


def test_forcing_an_unavailable_kernel_is_an_error(rng):
    a, w = codes(rng, (2, 12)), codes(rng, (3, 12))
    previous = _C.active_isa()
    try:
        _C.set_isa("scalar")
        with pytest.raises(ValueError, match="kernel: 'deepgemm' is not available"):
            _lut_gemm(a, w, kernel="deepgemm")
        if "avx512" in pyquant.cpu_info()["available"]:
            _C.set_isa("avx512")
            with pytest.raises(ValueError, match="kernel: 'vpermb' is not available"):
                _lut_gemm(a, w, (-8, 0, 0, 7), (16, 0, 0, -8), kernel="vpermb")
    finally:
        _C.set_isa(previous)


def test_largest_k_wraps_exactly(isa):
    # K = 2^24 - 1 (the format's maximum): the biased 8-bit sums reach 240 * K > 2^31 and the
    # corrections K_pad * pmin < -2^31; the kernels work modulo 2^32 and the true result
    # (112 * K < 2^31) must come out exactly.
    k = (1 << 24) - 1
    al, wl = (-8, 0, 0, 7), (16, 0, 0, -8)
    a = np.full((1, k), 3, np.uint8)
    w = np.zeros((2, k), np.uint8)
    w[1, ::5] = 3
    pw = pyquant.prepack(w, "lut_gemm", w_levels=wl)
    expected = lut_ref(a, w, al, wl)
    for kern in kernels_for(isa, al, wl):
        np.testing.assert_array_equal(_lut_gemm(a, pw, al, wl, kern), expected, err_msg=kern)


def test_largest_k_wraps_exactly_pair(isa):
    # pair at K = 2^24 - 1 with its widest codebook (range 127): biased sums 127 * K > 2^31
    al, wl = (0, 1, 1, 1), (63, -64, 0, 1)
    if not lut_kernel(al, wl, "pair"):
        pytest.skip(f"pair is not available on {isa}")
    k = (1 << 24) - 1
    a = np.full((1, k), 3, np.uint8)
    w = np.zeros((2, k), np.uint8)
    w[1, ::7] = 1
    expected = lut_ref(a, w, al, wl)
    np.testing.assert_array_equal(_lut_gemm(a, w, al, wl, "pair"), expected)
