"""The Int8Config front end's native helpers: the per-row activation quantizer and the int8 GEMM
with its fused float epilogue. Same bits on every path, and equal to numpy float32 references."""
import numpy as np
import pytest
import torch

import pyquant
from pyquant.int8 import int8_gemm_dequant, quantize_rows_u8
from reference import gemm_ref


def quantize_ref(x):
    x = x.astype(np.float32)
    lo = np.minimum(x.min(1), 0).astype(np.float32)
    hi = np.maximum(x.max(1), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    s = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    zp = np.clip(np.round(-lo / s), 0, 255).astype(np.float32) + np.float32(0)  # half to even
    t = x * (np.float32(1) / s)[:, None]
    t = (t + (zp + np.float32(0.5))[:, None]).astype(np.float32)
    q = np.clip(t, 0, np.float32(255.25)).astype(np.uint8)
    return q, s, zp


@pytest.mark.parametrize("m,k", [(1, 1), (3, 15), (7, 16), (5, 17), (33, 384), (2, 1000)])
def test_quantize_rows_matches_reference(isa, rng, m, k):
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 100)).astype(np.float32)
    x[0, : k // 2] = np.abs(x[0, : k // 2])  # a row that is mostly positive
    q, s, zp = quantize_rows_u8(x)
    rq, rs, rzp = quantize_ref(x)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(zp, rzp)


def test_quantize_rows_edge_rows():
    x = np.zeros((3, 20), np.float32)
    x[1] = 5.0
    x[2] = -3.0
    q, s, zp = quantize_rows_u8(x)
    assert s[0] == 1.0 and zp[0] == 0 and not q[0].any()
    assert q[1].max() == 255 and zp[1] == 0
    assert zp[2] == 255 and q[2].max() == 0


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 65, 130), (13, 200, 1500), (6, 64, 0)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_dequant_matches_reference(isa, rng, m, n, k, with_bias):
    a = rng.integers(0, 256, size=(m, k)).astype(np.uint8)
    w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
    rs, ro = rng.random(m, dtype=np.float32), rng.random(m, dtype=np.float32)
    cs, co = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    bias = rng.random(n, dtype=np.float32) if with_bias else None
    y = int8_gemm_dequant(a, pyquant.prepack(w, "int8_gemm"), rs, ro, cs, co, bias)
    acc = gemm_ref(a, w).astype(np.float32)
    ref = (acc * rs[:, None]).astype(np.float32) * cs[None, :]
    ref = (ref - (ro[:, None] * co[None, :]).astype(np.float32)).astype(np.float32)
    if with_bias:
        ref = (ref + bias[None, :]).astype(np.float32)
    assert y.dtype == np.float32 and y.shape == (m, n)
    np.testing.assert_array_equal(y, ref)


def test_torch_in_torch_out_and_errors(rng):
    x = torch.randn(4, 32)
    q, s, zp = quantize_rows_u8(x)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.uint8 and s.shape == (4,)
    pw = pyquant.prepack(torch.randint(-127, 127, (8, 32), dtype=torch.int8), "int8_gemm")
    y = int8_gemm_dequant(q, pw, s, s * zp, torch.ones(8), torch.zeros(8))
    assert isinstance(y, torch.Tensor) and y.shape == (4, 8)
    with pytest.raises(TypeError, match="x"):
        quantize_rows_u8(x.double())
    with pytest.raises(ValueError, match="col_scale"):
        int8_gemm_dequant(q, pw, s, s, torch.ones(7), torch.zeros(8))
