import numpy as np
import pytest
import torch

import pyquant
from reference import gemm_ref

BITS = (4, 2)

# XNNPACK-style sweep: M over 1..MR and beyond (MR is 6 on AVX-512, 2 on AVX2, 4 scalar; M = 1
# is the GEMV kernel), N tails around the 64-column panel and the 16/8-column vectors, K below/at/
# above the 4-wide k-group (K % 4 != 0 exercises the zero-padded tail), the 256-group K block and
# the 4-group GEMV unroll.
SHAPES = [
    (m, n, k)
    for m in (1, 2, 3, 5, 6, 7, 13)
    for n, k in ((1, 1), (7, 3), (16, 4), (63, 5), (64, 17), (65, 1023), (130, 1030))
] + [(256, 96, 2051), (33, 200, 4096), (1, 300, 4099)]


def rand_a(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


def rand_w(rng, bits, shape):
    half = 1 << (bits - 1)
    return rng.integers(-half, half, size=shape).astype(np.int8)


def grouped_ref(a, w, group_size, scales):
    """float32 sum over groups in order of scales[:, g] * exact integer partial sum."""
    k = a.shape[1]
    out = np.zeros((a.shape[0], w.shape[0]), np.float32)
    for g in range(scales.shape[1]):
        sl = slice(g * group_size, min(k, (g + 1) * group_size))
        part = gemm_ref(a[:, sl], w[:, sl]).astype(np.float32)
        out = out + scales[:, g][None, :] * part
    return out


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_reference(isa, rng, bits, a_dtype, m, n, k):
    a, w = rand_a(rng, a_dtype, (m, k)), rand_w(rng, bits, (n, k))
    np.testing.assert_array_equal(pyquant.lowbit_gemm(a, w, bits=bits), gemm_ref(a, w))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("m", [1, 37])
def test_prepacked_and_threads(isa, rng, threads, bits, a_dtype, m):
    a, w = rand_a(rng, a_dtype, (m, 3001)), rand_w(rng, bits, (300, 3001))
    pw = pyquant.prepack(w, "lowbit_gemm", bits=bits)
    assert pw.params == {"bits": bits}
    np.testing.assert_array_equal(pyquant.lowbit_gemm(a, pw, bits=bits), gemm_ref(a, w))


def test_packed_size_is_bits_per_weight():
    w = np.zeros((4096, 4096), np.int8)
    for bits in BITS:
        pw = pyquant.prepack(w, "lowbit_gemm", bits=bits)
        assert pw.nbytes == 4096 * 4096 * bits // 8 + 64
        assert int(pw.header()["bits"]) == bits


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("a_value", [255, -128, 127])
@pytest.mark.parametrize("m,k", [(1, 65536), (2, 65536), (1, 131072), (1, 131076)])
def test_large_k_extremes(isa, bits, a_value, m, k):
    # M = 1 runs the GEMV kernel, whose W2 variant keeps 4x/16x-scaled sums up to K = 131072
    # and switches to plain unpacking above; M = 2 runs the register-tile kernel.
    if isa == "scalar" and k > 65536:
        pytest.skip("scalar is covered at K = 65536; the K > 65536 switch is in the SIMD GEMV")
    half = 1 << (bits - 1)
    a_dtype = np.uint8 if a_value == 255 else np.int8
    a = np.full((m, k), a_value, a_dtype)
    w = np.stack([np.full(k, -half, np.int8), np.full(k, half - 1, np.int8),
                  np.where(np.arange(k) % 2 == 0, -half, half - 1).astype(np.int8)])
    np.testing.assert_array_equal(pyquant.lowbit_gemm(a, w, bits=bits), gemm_ref(a, w))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("m,n,k,group_size", [
    (1, 70, 256, 32), (7, 130, 1000, 64), (13, 64, 130, 128), (1, 5, 3, 32), (6, 64, 4096, 128),
    (1, 100, 2100, 32), (1, 64, 4096, 64), (2, 65, 520, 32),
    (1, 70, 4200, 32), (1, 33, 4136, 32),  # decode: past the two-stream chunks, a short last group
])
def test_grouped_matches_reference(isa, rng, bits, a_dtype, m, n, k, group_size):
    a, w = rand_a(rng, a_dtype, (m, k)), rand_w(rng, bits, (n, k))
    groups = -(-k // group_size)
    scales = rng.uniform(-0.01, 0.02, size=(n, groups)).astype(np.float32)
    pw = pyquant.prepack(w, "lowbit_gemm", bits=bits)
    out = pyquant.lowbit_gemm_grouped(a, pw, bits=bits, group_size=group_size, scales=scales)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, grouped_ref(a, w, group_size, scales))


def test_all_paths_bit_identical(rng):
    for bits in BITS:
        a, w = rand_a(rng, np.int8, (11, 777)), rand_w(rng, bits, (150, 777))
        scales = rng.uniform(0, 1, size=(150, 25)).astype(np.float32)
        pw = pyquant.prepack(w, "lowbit_gemm", bits=bits)
        outs, fouts = [], []
        previous = pyquant._C.active_isa()
        try:
            for name in pyquant.cpu_info()["available"]:
                pyquant._C.set_isa(name)
                outs.append(pyquant.lowbit_gemm(a, pw, bits=bits))
                fouts.append(pyquant.lowbit_gemm_grouped(a, pw, bits=bits, group_size=32,
                                                         scales=scales))
        finally:
            pyquant._C.set_isa(previous)
        for out, fout in zip(outs, fouts):
            np.testing.assert_array_equal(out, outs[0])
            np.testing.assert_array_equal(fout, fouts[0])


def test_torch_in_torch_out(rng):
    a = torch.from_numpy(rand_a(rng, np.int8, (5, 70)))
    w = torch.from_numpy(rand_w(rng, 4, (9, 70)))
    c = pyquant.lowbit_gemm(a, w, bits=4)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.int32
    assert torch.equal(c, torch.from_numpy(gemm_ref(a.numpy(), w.numpy())))
    at = torch.from_numpy(rand_a(rng, np.uint8, (70, 5))).t()  # non-contiguous view
    assert torch.equal(pyquant.lowbit_gemm(at, w, bits=4),
                       torch.from_numpy(gemm_ref(at.numpy(), w.numpy())))


def test_empty_dims():
    assert pyquant.lowbit_gemm(np.zeros((0, 5), np.uint8), np.zeros((3, 5), np.int8),
                               bits=4).shape == (0, 3)
    assert pyquant.lowbit_gemm(np.zeros((2, 5), np.uint8), np.zeros((0, 5), np.int8),
                               bits=2).shape == (2, 0)
    c = pyquant.lowbit_gemm(np.zeros((2, 0), np.uint8), np.zeros((3, 0), np.int8), bits=4)
    assert c.shape == (2, 3) and not c.any()


def test_bad_inputs(rng):
    a = rand_a(rng, np.uint8, (2, 8))
    w4 = rand_w(rng, 4, (3, 8))
    with pytest.raises(ValueError, match="w: 2-bit codes must be in \\[-2, 1\\], found"):
        pyquant.lowbit_gemm(a, w4 * 0 + 2, bits=2)
    with pytest.raises(ValueError, match="w: .*found -9"):
        pyquant.lowbit_gemm(a, np.full((3, 8), -9, np.int8), bits=4)
    with pytest.raises(ValueError, match="found 8"):
        pyquant.prepack(np.full((3, 8), 8, np.int8), "lowbit_gemm", bits=4)
    for bits in (1, 3, 8, 0):
        with pytest.raises(ValueError, match="bits: expected 2 or 4"):
            pyquant.lowbit_gemm(a, w4, bits=bits)
    with pytest.raises(TypeError, match="bits"):
        pyquant.lowbit_gemm(a, w4, bits=4.0)
    with pytest.raises(TypeError):
        pyquant.lowbit_gemm(a, w4)  # bits is required
    with pytest.raises(ValueError, match="a: expected K = 8 columns to match w, got 9"):
        pyquant.lowbit_gemm(rand_a(rng, np.uint8, (2, 9)), w4, bits=4)
    with pytest.raises(TypeError, match="a: expected dtype uint8 or int8"):
        pyquant.lowbit_gemm(a.astype(np.int16), w4, bits=4)
    with pytest.raises(TypeError, match="w: expected dtype int8"):
        pyquant.lowbit_gemm(a, w4.astype(np.uint8), bits=4)
    with pytest.raises(ValueError, match="a: expected a 2-D"):
        pyquant.lowbit_gemm(a[0], w4, bits=4)
    with pytest.raises(ValueError, match="w: expected a 2-D"):
        pyquant.lowbit_gemm(a, w4[0], bits=4)
    # PackedWeight for another bit width or another op
    pw4 = pyquant.prepack(w4, "lowbit_gemm", bits=4)
    with pytest.raises(ValueError, match="packed with bits=4 but called with bits=2"):
        pyquant.lowbit_gemm(a, pw4, bits=2)
    with pytest.raises(ValueError, match="packed for 'int8_gemm'"):
        pyquant.lowbit_gemm(a, pyquant.prepack(w4, "int8_gemm"), bits=4)
    with pytest.raises(ValueError, match="packed for 'lowbit_gemm'"):
        pyquant.int8_gemm(a, pw4)
    # the native layer checks the header's bits on its own too
    with pytest.raises(ValueError, match="packed with bits=4 but called with bits=2"):
        pyquant._C.lowbit_gemm(a, False, pw4.buffer, 2, 1)
    with pytest.raises(ValueError, match="invalid packed weight"):
        pyquant._C.lowbit_gemm(a, False, pw4.buffer[:-1].copy(), 4, 1)
    with pytest.raises(ValueError, match="bits: expected 2 or 4"):
        pyquant._C.lowbit_gemm(a, False, pw4.buffer, 3, 1)


def test_grouped_bad_inputs(rng):
    a = rand_a(rng, np.uint8, (2, 64))
    pw = pyquant.prepack(rand_w(rng, 4, (3, 64)), "lowbit_gemm", bits=4)
    ok = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="group_size: expected a positive multiple of 4"):
        pyquant.lowbit_gemm_grouped(a, pw, bits=4, group_size=30, scales=ok)
    with pytest.raises(ValueError, match="scales: expected shape \\[3, 2\\]"):
        pyquant.lowbit_gemm_grouped(a, pw, bits=4, group_size=32,
                                    scales=np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="scales: expected dtype float32"):
        pyquant.lowbit_gemm_grouped(a, pw, bits=4, group_size=32, scales=ok.astype(np.float64))
    with pytest.raises(ValueError, match="packed with bits=4"):
        pyquant.lowbit_gemm_grouped(a, pw, bits=2, group_size=32, scales=ok)
    # past the packed K limit (one group covers any K): 2^64 was pybind's "incompatible function
    # arguments", and 2^64 - 4 wrapped the native group count to 0 (a [3, 0] scales array passed)
    for gs in (2**24, 2**64 - 4, 2**64, 2**70):
        with pytest.raises(ValueError, match=r"group_size: .* up to 16777215 \(the packed K limit\)"):
            pyquant.lowbit_gemm_grouped(a, pw, bits=4, group_size=gs, scales=ok[:, :1])
    for gs, groups in ((2**64 - 4, 0), (2**63, 1)):
        with pytest.raises(ValueError, match="group_size: .* up to 16777215"):
            pyquant._C.lowbit_gemm_grouped(a, False, pw.buffer, 4, gs,
                                           np.ones((3, groups), np.float32), 1)
    assert pyquant.lowbit_gemm_grouped(a, pw, bits=4, group_size=2**24 - 4,
                                       scales=ok[:, :1]).shape == (2, 3)
