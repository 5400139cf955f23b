"""pyquant.search: HGQ quantizer gradients, QuantGRU (float closeness, integer exactness),
NSGA-II on a toy problem with a known front, front.json schema from a tiny CLI run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("pymoo")

from pyquant.nn.gru import GRU_OPS, QuantGRU, gru_size_bits  # noqa: E402
from pyquant.search.quantizers import (hgq_quantize, project_width, quantize_signed,  # noqa: E402
                                       scale_grad)
from reference_gru import gru_reference  # noqa: E402

LN2 = math.log(2.0)


# -- quantizer --------------------------------------------------------------------------------
def test_hgq_quantize_value_and_gradients():
    x = torch.tensor([0.3, -0.71, 1.26, 0.05], requires_grad=True)
    f = torch.tensor(2.0, requires_grad=True)
    xq = hgq_quantize(x, f)
    expect = torch.round(x.detach() * 4) / 4
    assert torch.equal(xq.detach(), expect)
    g = torch.tensor([1.0, -2.0, 0.5, 3.0])
    (xq * g).sum().backward()
    assert torch.allclose(x.grad, g)  # straight-through for x
    surrogate = (g * (-LN2) * (expect - x.detach())).sum()  # d x_q / d f = -ln2 (x_q - x)
    assert torch.allclose(f.grad, surrogate, atol=1e-6)


def test_hgq_quantize_clip_keeps_straight_through_and_surrogate():
    x = torch.tensor([3.9, -5.0, 0.4], requires_grad=True)
    b = torch.tensor(4.0, requires_grad=True)  # signed 4-bit, integer bits 1 -> f = 2
    xq = quantize_signed(x, b, torch.tensor(1.0))
    assert torch.equal(xq.detach(), torch.tensor([7 / 4, -8 / 4, 2 / 4]))
    xq.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))
    assert torch.allclose(b.grad, (-LN2 * (xq.detach() - x.detach())).sum())


def test_scale_grad_and_projection():
    b = torch.tensor([2.9, 3.0, 5.9, 6.0, 7.2, 1.4], requires_grad=True)
    p = project_width(b)
    assert p.tolist() == [2, 4, 4, 8, 8, 2]
    (scale_grad(p, 0.25) * torch.arange(6.0)).sum().backward()
    assert torch.allclose(b.grad, 0.25 * torch.arange(6.0))


def test_hgq_linear_shared_width_gradient_is_scaled_by_inv_sqrt_n():
    from pyquant.search.hgq import HGQLinear
    from pyquant.search.quantizers import integer_bits

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    layer = HGQLinear(lin, groups=2, init_bits=4.0)
    x = torch.rand(5, 16)
    layer.train()
    layer(x).sum().backward()
    # manual: per group, (1/sqrt(n)) * sum over its weights of dL/dwq * (-ln2)(wq - w)
    w = lin.weight.detach()
    i_w = integer_bits(w, dim=1)
    wq = torch.clamp(torch.round(w * 2 ** (3 - i_w)), -8, 7) / 2 ** (3 - i_w)
    xq = torch.round(x * 2 ** 8) / 2 ** 8  # unsigned 8 bits, max x < 1 -> i = 0, f = 8
    dwq = torch.ones(5, 8).T @ xq
    per = (dwq * (-LN2) * (wq - w)).reshape(2, 4 * 16).sum(1) / math.sqrt(4 * 16)
    assert torch.allclose(layer.bits.grad, per, atol=1e-5)


# -- QuantGRU --------------------------------------------------------------------------------
def _gru(rng_seed=0, i=6, h=12, batch_first=True):
    torch.manual_seed(rng_seed)
    return torch.nn.GRU(i, h, batch_first=batch_first)


def test_quantgru_8bit_close_to_nn_gru():
    gru = _gru()
    x = torch.randn(16, 10, 6)
    q = QuantGRU.from_gru(gru, 8, calib=x)
    out, hn = q(x)
    with torch.no_grad():
        ref, ref_hn = gru(x)
    assert out.shape == ref.shape and hn.shape == ref_hn.shape
    err = (out - ref).abs()
    assert err.mean() < 0.02 and err.max() < 0.15, (err.mean(), err.max())
    assert torch.equal(hn[0], out[:, -1])


def test_quantgru_seq_first_unbatched_and_h0():
    gru = _gru(batch_first=False)
    x = torch.randn(7, 3, 6)  # [T, B, I]
    h0 = torch.rand(1, 3, 12) - 0.5
    q = QuantGRU.from_gru(gru, 8, calib=x)
    out, hn = q(x, h0)
    with torch.no_grad():
        ref, _ = gru(x, h0)
    assert out.shape == (7, 3, 12) and hn.shape == (1, 3, 12)
    assert (out - ref).abs().mean() < 0.02
    o1, h1 = q(x[:, 1], h0[:, 1])
    assert o1.shape == (7, 12) and h1.shape == (1, 12)
    assert torch.equal(o1, out[:, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_quantgru_matches_integer_reference_exactly(seed):
    rng = np.random.default_rng(seed)
    gru = _gru(seed, i=5, h=7)
    widths = {op: int(rng.choice([2, 4, 8]) if op.startswith("w_") else rng.integers(2, 9))
              for op in GRU_OPS}
    x = torch.randn(4, 6, 5) * 1.5
    q = QuantGRU.from_gru(gru, widths, calib=x[:2])  # calibrate on part: out-of-range values clip
    ref = gru_reference(q, x.numpy())
    assert np.array_equal(q.forward_codes(x).numpy(), ref)  # through pyquant's GEMM kernels
    q.backend = "torch"
    assert np.array_equal(q.forward_codes(x).numpy(), ref)


def test_quantgru_state_dict_round_trip():
    import io

    gru = _gru(2, i=5, h=7)
    x = torch.randn(3, 4, 5)
    widths = {**{op: 4 for op in GRU_OPS}, "add_r": 6, "w_hz": 2, "add_h": 7}
    q = QuantGRU.from_gru(gru, widths, calib=x)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    q2 = QuantGRU(5, 7, batch_first=True)
    q2.load_state_dict(torch.load(buf))
    assert q2.widths == q.widths
    assert torch.equal(q2.forward_codes(x), q.forward_codes(x))
    with pytest.raises(RuntimeError):
        QuantGRU(5, 8, batch_first=True).load_state_dict(q.state_dict())


def test_quantgru_widths_validation_and_size():
    gru = _gru()
    with pytest.raises(ValueError, match="w_hr"):
        QuantGRU.from_gru(gru, {**{op: 8 for op in GRU_OPS}, "w_hr": 3})
    with pytest.raises(ValueError, match="missing"):
        QuantGRU.from_gru(gru, {"w_ir": 8})
    s8, s4 = gru_size_bits(6, 12, 8), gru_size_bits(6, 12, 4)
    assert s8 == 36 * 6 * 8 + 36 * 12 * 8 + 3 * 256 * 8 + 32 * 72
    assert s4 < s8


# -- deployment ------------------------------------------------------------------------------
def test_deployed_mlp_matches_fake_quant():
    from pyquant.search.hgq import HGQMLP
    from pyquant.search.tasks import make_mlp

    torch.manual_seed(0)
    m = HGQMLP(make_mlp((20, 24, 16, 5)), groups=2, init_bits=8)
    for L, bits in zip(m.layers, ([2, 4], [8, 2], [4, 4])):
        L.bits.data = torch.tensor(bits, dtype=torch.float32)
    x = torch.randn(33, 20)
    m.train()
    with torch.no_grad():
        m(x)
    m.eval()
    with torch.no_grad():
        ref = m(x).numpy()
    got = m.deploy()(x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


# -- NSGA-II -----------------------------------------------------------------------------------
def _zdt1(genome):
    x = np.asarray(genome) / 10.0
    f1 = x[0]
    g = 1 + 9 * x[1:].mean()
    return f1, g * (1 - math.sqrt(f1 / g))


def test_nsga2_finds_known_front_and_is_reproducible():
    from pyquant.search.nsga import nsga2

    choices = [list(range(11))] * 4
    cache = nsga2(choices, _zdt1, 2, pop=20, gens=25, seed=3)
    front = [g for g, _ in cache.front()]
    true_front = {(k, 0, 0, 0) for k in range(11)}  # x2.. = 0, any x1
    assert set(front) <= true_front
    assert len(front) >= 9
    assert cache.calls < 20 * 25  # the fitness cache skipped repeats
    again = nsga2(choices, _zdt1, 2, pop=20, gens=25, seed=3)
    assert [g for g, _ in again.front()] == [g for g, _ in cache.front()]


# -- CLI / front.json ------------------------------------------------------------------------
def test_cli_tiny_run_writes_valid_front(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from pyquant.__main__ import main
    from pyquant.search.front import validate_front

    out = tmp_path / "run"
    assert main(["search", "--task", "mlp", "--method", "hgq", "--budget", "tiny", "--quiet",
                 "--out", str(out), "--epochs", "2"]) == 0
    doc = json.loads((out / "front.json").read_text())
    assert doc["epochs"] == 2  # --epochs reaches the MLP's HGQ too (it took the budget's)
    validate_front(doc)
    assert (out / "front.png").stat().st_size > 1000
    uni = {p["uniform"]: p for p in doc["points"] if p["uniform"]}
    assert set(uni) == {2, 4, 8}
    assert uni[2]["size_bits"] < uni[4]["size_bits"] < uni[8]["size_bits"]
    for p in doc["points"]:
        assert 0.0 <= p["accuracy"] <= 1.0
        assert abs(p["accuracy"] - p["deployed_accuracy"]) <= 0.005
    with pytest.raises(ValueError):
        validate_front({"points": [{"config": {}, "size_bits": 1.5, "accuracy": 0.5,
                                    "uniform": None}]})


def test_latency_table_cache(tmp_path):
    from pyquant.search.latency import measure_latency_table

    path = str(tmp_path / "lat.json")
    t = measure_latency_table([(2, 16, 32)], cache=path, repeats=1, min_time=1e-4)
    e = t["entries"]["2x16x32"]
    assert set(e) == {"2", "4", "8"} and all(v > 0 for v in e.values())
    again = measure_latency_table([(2, 16, 32)], cache=path, repeats=1, min_time=1e-4)
    assert again["entries"]["2x16x32"] == e  # read back from the cache, not re-timed


def test_deploy_routes_low_bit_rows_to_lowbit_gemm_when_present(monkeypatch):
    """With pyquant.lowbit_gemm present, 2/4-bit rows go there (codes in its range) and the
    result equals the int8_gemm fallback exactly."""
    import pyquant
    from pyquant.search import deploy

    calls = []

    def fake_lowbit(a, w, *, bits):
        assert w.min() >= -(1 << (bits - 1)) and w.max() < (1 << (bits - 1))
        calls.append((bits, w.shape[0]))
        return a.astype(np.int32) @ w.astype(np.int32).T

    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, size=(5, 24), dtype=np.int8)
    row_bits = np.array([2, 4, 8, 4, 2, 8, 8])
    w = np.stack([rng.integers(-(1 << (b - 1)), 1 << (b - 1), size=24) for b in row_bits])
    w = w.astype(np.int8)
    fallback = deploy.grouped_gemm(a, w, row_bits)
    assert np.array_equal(fallback, a.astype(np.int32) @ w.astype(np.int32).T)
    monkeypatch.setattr(pyquant, "lowbit_gemm", fake_lowbit, raising=False)
    assert deploy.kernel_for(4) == "lowbit_gemm" and deploy.kernel_for(8) == "int8_gemm"
    assert np.array_equal(deploy.grouped_gemm(a, w, row_bits), fallback)
    assert sorted(calls) == [(2, 2), (4, 2)]


def test_cli_output_paths_are_tried_before_the_run(tmp_path):
    """--out and file outputs are created / probed for real at parse time: permission bits say
    yes to root even where the file system refuses (/proc), which used to surface as a
    traceback after the whole search."""
    import argparse
    import sys

    from pyquant._cli import output_dir, writable_file

    if sys.platform != "linux":
        pytest.skip("uses /proc, a file system that refuses new files even to root")
    assert output_dir(str(tmp_path / "a" / "b")).endswith("b")
    assert not (tmp_path / "a").exists()  # tried, then removed: the run creates it
    assert writable_file(str(tmp_path / "f.json")).endswith("f.json")
    assert not (tmp_path / "f.json").exists()  # probed, not left behind
    (tmp_path / "file").write_text("x")
    for bad in (str(tmp_path / "file"), "/proc/pyquant-out"):
        with pytest.raises(argparse.ArgumentTypeError):
            output_dir(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        writable_file("/proc/pyquant-out.json")
