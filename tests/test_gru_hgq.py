"""HGQ for the GRU (pyquant.search.hgq_gru): the quantizer's gradients, the fake-quant twin against
the deployed QuantGRU, the size cost's gradient, the CLI run that deploys; the GRU search's
latency cost timed on the deployed module."""
import json
import math

import pytest
import torch

pytest.importorskip("sklearn")

from pyquant.nn.gru import GRU_OPS, QuantGRU, calibrate, gru_size_bits  # noqa: E402
from pyquant.search.deploy import QuantHead  # noqa: E402
from pyquant.search.hgq_gru import OPS, HGQGRU, fake_quant  # noqa: E402


def test_twin_states_equal_deployed_codes_at_8_bit_weights():
    """With 8-bit weights (bias rounding negligible) the twin's state is the integer model's code
    grid exactly, even at 4-bit activations (ties such as sigmoid(0) * 15 = 7.5 included)."""
    m, x = _twin(3)
    cfg = {**{op: 4 for op in OPS}, **{op: 8 for op in OPS if op.startswith("w_")}, "head": 8}
    with torch.no_grad():
        for j, op in enumerate(OPS):
            m.bits[j] = cfg[op]
        m.head_w.copy_(torch.eye(16)[:10]), m.head_b.zero_()
    q, _ = m.deploy()
    with torch.no_grad():
        for t in (1, 3):
            h = m(x[:, :t]) * q.q_h  # identity head rows: the state's first 10 features
            assert torch.equal(h.round(), q.forward_codes(x[:, :t])[:, -1, :10].float())


def test_fake_quant_value_and_gradients():
    x = torch.tensor([0.30, -0.71, 2.0], requires_grad=True)
    b = torch.tensor(4.0, requires_grad=True)
    step = torch.tensor(0.25)
    y = fake_quant(x, b, step, -7, 7)
    assert torch.allclose(y, torch.tensor([0.25, -0.75, 1.75]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))  # straight-through, also where clipped
    expect = -math.log(2) * float((y.detach() - x.detach()).sum())
    assert b.grad.item() == pytest.approx(expect, rel=1e-6)


def _twin(seed=0, i=8, h=16, n_out=10):
    torch.manual_seed(seed)
    gru = torch.nn.GRU(i, h, batch_first=True)
    head = torch.nn.Linear(h, n_out)
    m = HGQGRU(gru, head)
    x = torch.rand(64, 8, i)
    m.observe_ranges(x)
    return m, x


def test_twin_matches_deployed_quantgru():
    """At fixed widths the fake-quant twin computes what the deployed integer model computes,
    up to the integer biases' and multipliers' rounding."""
    m, x = _twin()
    for cfg in (8, {**{op: 4 for op in OPS}, "add_h": 7, "w_hz": 2, "head": 8}):
        with torch.no_grad():
            for j, op in enumerate(OPS):
                m.bits[j] = cfg if isinstance(cfg, int) else cfg[op]
        assert m.config() == ({op: 8 for op in OPS} if cfg == 8 else cfg)
        q, head = m.deploy()
        logits_int = torch.from_numpy(head(q.forward_codes(x)[:, -1].numpy(), q.s_h)).float()
        with torch.no_grad():
            logits = m(x)
        assert (logits_int.argmax(1) == logits.argmax(1)).float().mean() >= 0.9
        assert (logits_int - logits).abs().mean() < 0.02 * logits.abs().mean()
        w = m.config()
        assert m.size_bits().item() == gru_size_bits(8, 16, {op: w[op] for op in GRU_OPS}) + \
            10 * 16 * w["head"] + 320


def test_widths_get_gradients_from_loss_and_cost():
    m, x = _twin(1)
    y = torch.randint(0, 10, (64,))
    loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()
    g_loss = m.bits.grad.clone()
    assert torch.isfinite(g_loss).all() and (g_loss != 0).sum() >= 12  # most operators
    m.bits.grad = None
    m.size_bits().backward()
    # more bits, more size: the cost pushes down every width the model size counts (weights,
    # tables, head); activation-only widths (products, 1 - z, the state) cost no storage
    stored = {"w_ir", "w_iz", "w_in", "w_hr", "w_hz", "w_hn", "add_r", "add_z", "add_n", "sig_r",
              "sig_z", "tanh_n", "head"}
    for j, op in enumerate(OPS):
        assert (m.bits.grad[j] > 0) if op in stored else (m.bits.grad[j] == 0), op


def test_projection_keeps_kernel_widths():
    m, _ = _twin(2)
    with torch.no_grad():
        m.bits.copy_(torch.tensor([5.1] * len(OPS)))
    w = m.config()
    assert all(w[op] in (2, 4, 8) for op in OPS if op.startswith("w_") or op == "head")
    assert all(w[op] == 5 for op in OPS if not (op.startswith("w_") or op == "head"))
    gru = m.to_float()[0]
    QuantGRU.from_gru(gru, {op: w[op] for op in GRU_OPS},  # a valid GRUConfig
                      calib=torch.randn(2, 3, gru.input_size, generator=torch.Generator().manual_seed(0)))


def test_cli_gru_hgq_tiny_run_deploys(tmp_path):
    pytest.importorskip("matplotlib")
    from pyquant.__main__ import main
    from pyquant.search.front import validate_front

    out = tmp_path / "run"
    assert main(["search", "--task", "digits-gru", "--method", "hgq", "--budget", "tiny",
                 "--quiet", "--out", str(out)]) == 0
    doc = json.loads((out / "front.json").read_text())
    validate_front(doc)
    assert doc["method"] == "hgq" and doc["epochs"] == 3
    uni = {p["uniform"]: p for p in doc["points"] if p["uniform"]}
    assert set(uni) == {2, 4, 8}
    mixed = [p for p in doc["points"] if p["uniform"] is None]
    assert mixed and all(set(p["config"]) == set(OPS) for p in mixed)
    for p in doc["points"]:  # deployed on the native kernels == emulated on the torch reference
        assert p["accuracy"] == p["deployed_accuracy"]


def test_gru_latency_is_timed_on_the_deployed_module(tmp_path):
    from pyquant.search.latency import GRULatency, gru_latency_key

    torch.manual_seed(0)
    gru, head = torch.nn.GRU(8, 16, batch_first=True), torch.nn.Linear(16, 10)
    ranges = calibrate(gru, torch.rand(8, 8, 8))
    path = str(tmp_path / "gru_lat.json")
    lat = GRULatency(gru, head, ranges, steps=8, cache=path, repeats=1, min_time=1e-4)
    w = {**{op: 8 for op in GRU_OPS}, "head": 4}
    calls = []
    orig = QuantGRU.forward_codes
    try:
        QuantGRU.forward_codes = lambda self, *a: calls.append(self.backend) or orig(self, *a)
        t = lat(w)
    finally:
        QuantGRU.forward_codes = orig
    assert t > 0 and calls and set(calls) == {"kernels"}  # the native forward, not a proxy
    assert lat({**w, "add_r": 3}) == t  # same kernels and work: one measurement
    assert gru_latency_key({**w, "add_h": 7}) != gru_latency_key(w)
    again = GRULatency(gru, head, ranges, steps=8, cache=path, repeats=1, min_time=1e-4)
    assert again.entries == lat.entries  # read back from the cache
    QuantHead(head, 4)  # the head the cost includes
