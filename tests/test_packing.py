import itertools

import numpy as np
import pytest
import torch

import pyquant
from reference import pack_ref

SIZES = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000]


def code_range(bits, signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("signed", [False, True])
def test_exhaustive_every_code_in_every_lane(isa, bits, signed):
    # every code value at every position of a 64-code block (and a tail), rows x lanes
    lo, hi = code_range(bits, signed)
    values = np.arange(lo, hi + 1)
    n = 64 + 13
    rows = np.stack([np.roll(np.resize(values, n), shift) for shift in range(len(values))])
    rows = rows.astype(np.int8 if signed else np.uint8)
    packed = pyquant.pack(rows, bits, signed=signed)
    np.testing.assert_array_equal(packed, pack_ref(rows, bits))
    back = pyquant.unpack(packed, bits, n, signed=signed)
    assert back.dtype == (np.int8 if signed else np.uint8)
    np.testing.assert_array_equal(back, rows)


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("n", SIZES)
def test_random_sizes_match_reference(isa, rng, bits, signed, n):
    lo, hi = code_range(bits, signed)
    codes = rng.integers(lo, hi + 1, size=(5, n)).astype(np.int8 if signed else np.uint8)
    packed = pyquant.pack(codes, bits, signed=signed)
    assert packed.shape == (5, (n * bits + 7) // 8)
    np.testing.assert_array_equal(packed, pack_ref(codes, bits))
    np.testing.assert_array_equal(pyquant.unpack(packed, bits, n, signed=signed), codes)


def test_all_paths_give_identical_bytes(rng):
    codes = rng.integers(0, 16, size=(3, 4099)).astype(np.uint8)
    results = {}
    for name in pyquant.cpu_info()["available"]:
        pyquant._C.set_isa(name)
        results[name] = pyquant.pack(codes, 4)
    pyquant._C.set_isa(pyquant.cpu_info()["available"][-1])
    for value in results.values():
        np.testing.assert_array_equal(value, results["scalar"])


def test_large_and_threaded(rng, threads):
    codes = rng.integers(0, 4, size=(257, 10001)).astype(np.uint8)
    packed = pyquant.pack(codes, 2)
    np.testing.assert_array_equal(pyquant.unpack(packed, 2, 10001), codes)


def test_leading_dims_noncontiguous_and_wider_dtypes(rng):
    base = rng.integers(-2, 2, size=(4, 6, 40)).astype(np.int64)
    view = base.transpose(1, 0, 2)[:, ::2]  # non-contiguous, 3-D
    packed = pyquant.pack(view, 2, signed=True)
    assert packed.shape == (6, 2, 10)
    np.testing.assert_array_equal(pyquant.unpack(packed, 2, 40, signed=True), view)


def test_torch_in_torch_out(rng):
    codes = torch.from_numpy(rng.integers(0, 16, size=(3, 33)).astype(np.uint8))
    packed = pyquant.pack(codes, 4)
    assert isinstance(packed, torch.Tensor) and packed.dtype == torch.uint8
    back = pyquant.unpack(packed, 4, 33)
    assert isinstance(back, torch.Tensor)
    assert torch.equal(back, codes)
    signed = pyquant.unpack(pyquant.pack(codes.to(torch.int8) - 8, 4, signed=True), 4, 33, signed=True)
    assert signed.dtype == torch.int8 and torch.equal(signed, codes.to(torch.int8) - 8)


def test_zero_sizes():
    assert pyquant.pack(np.zeros((0, 5), np.uint8), 4).shape == (0, 3)
    assert pyquant.pack(np.zeros((3, 0), np.uint8), 4).shape == (3, 0)
    assert pyquant.unpack(np.zeros((3, 0), np.uint8), 2, 0).shape == (3, 0)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: pyquant.pack(np.array([0, 16], np.uint8), 4), ValueError, "codes"),
        (lambda: pyquant.pack(np.array([-1], np.int8), 4), ValueError, "codes"),
        (lambda: pyquant.pack(np.array([8], np.int8), 4, signed=True), ValueError, "codes"),
        (lambda: pyquant.pack(np.array([0.0]), 4), TypeError, "codes"),
        (lambda: pyquant.pack([0, 1], 4), TypeError, "codes"),
        (lambda: pyquant.pack(None, 4), TypeError, "codes"),
        (lambda: pyquant.pack(np.array([0], np.uint8), 3), ValueError, "bits"),
        (lambda: pyquant.pack(np.array([0], np.uint8), 2.0), TypeError, "bits"),
        (lambda: pyquant.pack(np.uint8(1), 2), ValueError, "codes"),
        (lambda: pyquant.unpack(np.zeros(2, np.uint8), 4, 5), ValueError, "n"),
        (lambda: pyquant.unpack(np.zeros(2, np.uint8), 4, -1), ValueError, "n"),
        (lambda: pyquant.unpack(np.zeros(2, np.int8), 4, 4), TypeError, "packed"),
        (lambda: pyquant.unpack(np.zeros(2, np.uint8), 4, 4.0), TypeError, "n"),
    ],
)
def test_bad_input_raises_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
