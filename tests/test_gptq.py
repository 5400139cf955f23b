"""GPTQ's and SparseGPT's native column sweeps (csrc/quantize/gptq_sweep.h) and the driver around
them (pyquant/nn/gptq.py): bit for bit against per-column PyTorch oracles (tests/reference_gptq.py)
on every ISA path and thread count; the shared Hessians and the factorization."""
from __future__ import annotations

import concurrent.futures

import pytest
import torch

import pyquant
from pyquant import _C
from pyquant.nn import gptq as gptq_module
from reference_gptq import gptq_block_ref, ratios_for, sparsegpt24_block_ref


def _bits(t):
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t


def _assert_same_bits(got, want):
    for g, w in zip(got, want):
        g = torch.as_tensor(g)
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(_bits(g), _bits(w))


def _problem(n, k, seed):
    """Weights with an outlier, a zero row and an integer row (exact ties), a correlated Hessian
    with a dead column, and its U = R^-1 (the upper Cholesky factor of the damped H^-1)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    w[0, 0] = 1.5
    if n > 2:
        w[1] = 0.0
        w[2] = torch.round(w[2] * 40)
    x = torch.randn(3 * k + 8, k, generator=g) + 0.7 * torch.randn(3 * k + 8, 1, generator=g)
    x[:, k // 2] = 0.0  # a column no input reaches
    dead, r = gptq_module._factor(x.T @ x, 0.2)
    return w, x.T @ x, torch.linalg.solve_triangular(r, torch.eye(k), upper=True)


@pytest.mark.parametrize("n, b, gs", [(1, 1, 1), (7, 37, 32), (9, 128, 32), (33, 128, 64),
                                      (8, 96, 3), (5, 130, 128), (17, 64, 64)])
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("threads", [1, 2])
def test_gptq_block_equals_the_reference(isa, n, b, gs, bits, threads):
    w, _, factor = _problem(n, b, seed=n * b + gs)  # (factor: U, the sweep's h)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    ratios = ratios_for(bits)
    got = _C.gptq_block(w.numpy(), factor.contiguous().numpy(), gs, ratios, qmin, qmax, threads)
    _assert_same_bits([torch.from_numpy(a) for a in got], gptq_block_ref(w, factor, gs, ratios, qmin, qmax))


@pytest.mark.parametrize("n, b", [(1, 4), (7, 6), (9, 7), (8, 128), (33, 130), (3, 2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_sparsegpt24_block_equals_the_reference(isa, n, b, threads):
    w, _, factor = _problem(n, b, seed=n + b)
    w[-1, :4] = torch.tensor([0.5, -0.5, 0.5, -0.25])[:b]  # equal saliencies in one group
    got = _C.sparsegpt24_block(w.numpy(), factor.contiguous().numpy(), threads)
    _assert_same_bits([torch.from_numpy(a) for a in got], sparsegpt24_block_ref(w, factor))
    groups = torch.nn.functional.pad(torch.from_numpy(got[0]), (0, -b % 4)).view(n, -1, 4)
    assert int((groups != 0).sum(-1).max()) <= 2


def _gptq_weight_ref(w, hessian, bits, gs, damp=0.2):
    """gptq_weight's driver with the oracle's sweep: blocks of whole groups, each block updated
    by W_b + (W - Q)_<b R_<b,b U_bb before its sweep."""
    dead, r = gptq_module._factor(hessian, damp)
    w = w.clone()
    w[:, dead] = 0.0
    n, k = w.shape
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    block = gs * max(1, gptq_module.BLOCK // gs)
    codes, scales = [], []
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        u = torch.linalg.solve_triangular(r[i1:i2, i1:i2], torch.eye(i2 - i1), upper=True)
        wb = torch.addmm(w[:, i1:i2], w[:, :i1], r[:i1, i1:i2] @ u) if i1 else w[:, :i2]
        c, s, _ = gptq_block_ref(wb, u, gs, ratios_for(bits), qmin, qmax)
        codes.append(c)
        scales.append(s)
        w[:, i1:i2] -= c.float() * s.repeat_interleave(gs, 1)[:, :i2 - i1]
    return torch.cat(codes, 1), torch.cat(scales, 1)


def _classic_gptq(w, hessian, bits, gs, damp=0.2):
    """GPTQ as the paper writes it, float64, one column at a time: U = chol(H^-1) formed whole,
    each column's error spread over all later columns at once."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    w = w.double().clone()
    w[:, dead] = 0.0
    q = torch.empty_like(w)
    for i in range(w.shape[1]):
        if i % gs == 0:
            wg = w[:, i:i + gs].float()
            s = torch.from_numpy(_C.clip_search_uniform(
                wg.contiguous().numpy(), torch.stack([((wg.abs().amax(1, keepdim=True).clamp(min=1e-12) * r
                                                        / max(qmax, 1)).to(torch.bfloat16).float())
                                                      for r in ratios_for(bits)]).numpy(),
                gs, qmin, qmax)[1]).double()
        q[:, i] = torch.round(w[:, i] / s[:, 0]).clamp(qmin, qmax) * s[:, 0]
        e = (w[:, i] - q[:, i]) / u[i, i]
        w[:, i:] -= e[:, None] * u[i, i:][None, :]
    return q


@pytest.mark.parametrize("n, k, gs", [(24, 300, 32), (5, 257, 64), (3, 130, 128), (16, 64, 256)])
def test_gptq_weight_equals_the_reference(n, k, gs):
    w, hessian, _ = _problem(n, k, seed=k)
    for bits in (2, 4):
        _assert_same_bits(gptq_module.gptq_weight(w, hessian, bits, gs), _gptq_weight_ref(w, hessian, bits, gs))


def test_gptq_weight_is_the_papers_gptq():
    """The blocked float32 sweep (U's diagonal blocks only, the updates through R) against the
    paper's column-at-a-time float64 GPTQ with H^-1 formed whole: nearly every code the same,
    and the same output error on the calibration inputs."""
    torch.manual_seed(0)
    k = 384
    x = torch.randn(2000, k) @ (torch.randn(k, k) / k ** 0.5 + torch.eye(k))
    w = torch.randn(64, k) * 0.05
    for bits, gs in ((4, 32), (2, 64)):
        codes, scales = gptq_module.gptq_weight(w, x.T @ x, bits, gs)
        q = codes.float() * scales.repeat_interleave(gs, 1)
        classic = _classic_gptq(w, x.double().T @ x.double(), bits, gs).float()
        assert (q == classic).float().mean() > 0.98
        err, err_classic = ((q - w) @ x.T).norm(), ((classic - w) @ x.T).norm()
        assert abs(err / err_classic - 1) < 0.02, (bits, err, err_classic)


def test_gptq_with_a_diagonal_hessian_is_round_to_nearest():
    """Nothing to compensate through: GPTQ's codes and scales are quantize_'s, bit for bit."""
    from pyquant.nn.schemes import lowbit_weight

    w, _, _ = _problem(40, 200, seed=1)
    for bits, gs in ((4, 32), (2, 64), (4, 128)):
        _assert_same_bits(gptq_module.gptq_weight(w, 3.0 * torch.eye(200), bits, gs), lowbit_weight(w, bits, gs))


def test_factor_is_the_upper_reverse_cholesky_factor_of_the_damped_hessian(monkeypatch):
    """R upper triangular with R R^T = the damped H, so U = R^-1 is the upper Cholesky factor of
    its inverse (U^T U = H^-1)."""
    w, hessian, u = _problem(4, 50, seed=3)
    dead, r = gptq_module._factor(hessian, 0.2)
    assert dead.nonzero().view(-1).tolist() == [25]
    h = hessian.double().clone()
    h[25, 25] = 1.0
    h += 0.2 * torch.diag(h).mean() * torch.eye(50, dtype=torch.float64)
    assert torch.equal(r, r.triu()) and bool((torch.diag(r) > 0).all())
    torch.testing.assert_close(r.double() @ r.double().T, h, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(u.double().T @ u.double(), torch.linalg.inv(h), rtol=1e-4, atol=1e-6)
    assert gptq_module._factor(hessian, 0.2)[1] is not r  # (kept only while gptq_ converts)
    monkeypatch.setattr(gptq_module, "_keep_factor", True)
    monkeypatch.setattr(gptq_module, "_last_factor", None)
    r = gptq_module._factor(hessian, 0.2)[1]
    assert gptq_module._factor(hessian, 0.2)[1] is r  # (the next layer of the same Hessian)
    assert gptq_module._factor(hessian, 0.1)[1] is not r
    with pytest.raises(ValueError, match="damp: .*not positive definite"):
        gptq_module.gptq_weight(w[:, :2], torch.ones(2, 2), 4, 32, damp=0.0)
    with pytest.raises(ValueError, match=r"hessian: expected \[50, 50\]"):
        gptq_module.gptq_weight(w, torch.eye(49), 4, 32)


def test_layers_fed_the_same_input_share_one_hessian():
    """q, k and v (gate and up) read one tensor: one H, computed once; a layer whose inputs part
    ways with the others' gets its own, and every H is its own inputs' sum."""
    hs = gptq_module._Hessians()
    x1, x2, x3 = (torch.randn(6, 8) for _ in range(3))
    for key in "qkv":
        hs.add(key, x1)
    hs.add("o", x2)
    hs.add("q", x3)  # q parts from k and v (its input differs in the second batch)
    for key in "kv":
        hs.add(key, x2)
    hs.add("o", x2)  # the same tensor twice in a row to one layer
    of = hs.of()
    assert of["k"] is of["v"] and of["q"] is not of["k"]
    for key, xs in {"q": (x1, x3), "k": (x1, x2), "v": (x1, x2), "o": (x2, x2)}.items():
        want = sum(x.T @ x for x in xs).triu()  # (the upper triangle: all _factor reads)
        torch.testing.assert_close(of[key].triu(), want)
    before = x1.clone()
    x1.add_(1.0)  # the same storage, changed in place: another input
    hs.add("k", x1)
    hs.add("v", x1.clone())  # equal values, but not known to be the same input
    of = hs.of()
    assert of["k"] is not of["v"]
    for key in "kv":
        torch.testing.assert_close(of[key].triu(), (before.T @ before + x2.T @ x2 + x1.T @ x1).triu())
    big = torch.randn(5000, 1100)  # (several row chunks and block rows, a partial one)
    hs = gptq_module._Hessians()
    hs.add("big", big)
    torch.testing.assert_close(hs.of()["big"].triu().double(), (big.double().T @ big.double()).triu(),
                               rtol=1e-5, atol=1e-2)
    full = big.T @ big  # (a full symmetric H factorizes as its upper triangle does)
    _assert_same_bits(gptq_module._factor(full, 0.2), gptq_module._factor(full.triu(), 0.2))


def _mlp():
    torch.manual_seed(11)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                               torch.nn.ReLU(), torch.nn.Linear(32, 16))


def _packed(model):
    return [m.packed for m in model.modules() if isinstance(m, pyquant.nn.QuantLinear)]


@pytest.mark.parametrize("config", [pyquant.WeightOnlyConfig(4, 32), pyquant.SparqConfig(sparse24=True)],
                         ids=["gptq", "sparsegpt"])
def test_calibration_in_runs_is_gptq_layer_after_layer(config):
    """hessian_memory: layers in runs whose Hessians fit (here one layer each: 64^2 x 4 bytes
    per layer of K = 64), each run calibrated on the model with the runs before it quantized:
    the same as gptq_ called layer by layer; a limit that holds every layer is one pass."""
    mix = torch.randn(64, 64) / 8 + torch.eye(64)
    batches = [torch.randn(40, 64) @ mix for _ in range(3)]
    whole = pyquant.nn.gptq_(_mlp(), config, batches)
    assert all(torch.equal(a, b) for a, b in zip(_packed(whole), _packed(
        pyquant.nn.gptq_(_mlp(), config, batches, hessian_memory=1 << 30))))
    by_hand = _mlp()
    for fqn in ("0", "2", "4"):
        by_hand = pyquant.nn.gptq_(by_hand, config, batches, filter_fn=lambda m, name: name == fqn)
    runs = pyquant.nn.gptq_(_mlp(), config, iter(batches), hessian_memory=64 * 64 * 4 + 100)
    assert len(_packed(runs)) == 3
    assert all(torch.equal(a, b) for a, b in zip(_packed(runs), _packed(by_hand)))
    assert not all(torch.equal(a, b) for a, b in zip(_packed(runs), _packed(whole)))


def test_hessian_memory_is_checked_and_a_model_too_large_is_told(monkeypatch):
    for bad in (0, -5, "1GB", True, float("nan")):
        with pytest.raises(ValueError, match="hessian_memory"):
            pyquant.nn.gptq_(_mlp(), pyquant.WeightOnlyConfig(4, 32), [torch.randn(4, 64)], hessian_memory=bad)
    monkeypatch.setattr(gptq_module, "_available_memory", lambda: 20000)
    with pytest.warns(UserWarning, match=r"Hessians of 3 layers .* hessian_memory=N"):
        pyquant.nn.gptq_(_mlp(), pyquant.WeightOnlyConfig(4, 32), [torch.randn(4, 64)])
    assert gptq_module._calibration_groups([], None) == []


def test_gptq_under_inference_mode_and_an_edited_hessian():
    """gptq_ inside torch.inference_mode (batches made there too) gives what it gives outside;
    a direct call after the Hessian was edited in place factorizes it again; a non-finite
    Hessian is a ValueError naming it."""
    batches = [torch.randn(40, 64) for _ in range(2)]
    want = _packed(pyquant.nn.gptq_(_mlp(), pyquant.WeightOnlyConfig(4, 32), batches))
    with torch.inference_mode():
        got = _packed(pyquant.nn.gptq_(_mlp(), pyquant.WeightOnlyConfig(4, 32), [b.clone() for b in batches]))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    w, hessian, _ = _problem(8, 64, seed=5)
    first = gptq_module.gptq_weight(w, hessian, 4, 32)
    hessian[:32, :32] *= 4
    edited = gptq_module.gptq_weight(w, hessian, 4, 32)
    _assert_same_bits(edited, gptq_module.gptq_weight(w, hessian.clone(), 4, 32))
    assert not torch.equal(edited[0], first[0])
    hessian[3, 3] = float("nan")
    with pytest.raises(ValueError, match="hessian: expected finite"):
        gptq_module.gptq_weight(w, hessian, 4, 32)


class _EditsItsInput(torch.nn.Module):
    """Two layers on one tensor, changed between them through .data (no version bump)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)

    def forward(self, x):
        y = self.a(x)
        x.data.mul_(2.0)
        return y + self.b(x)


def test_an_input_changed_behind_the_version_counter_is_another_input():
    hs = gptq_module._Hessians()
    model = _EditsItsInput()
    hooks = [m.register_forward_pre_hook(lambda mod, args: hs.add(mod, args[0])) for m in (model.a, model.b)]
    x = torch.randn(10, 16)
    model(x.clone())
    for h in hooks:
        h.remove()
    of = hs.of()
    assert of[model.a] is not of[model.b]
    torch.testing.assert_close(of[model.b], 4 * of[model.a])


class _Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d)

    def forward(self, x, *, scale):
        return x + self.fc2(torch.relu(self.fc1(x))) * scale


class _Stack(torch.nn.Module):
    """Layers before, in and after three blocks; each block gets its own keyword argument."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.inp = torch.nn.Linear(32, 64)
        self.blocks = torch.nn.ModuleList(_Block(64) for _ in range(3))
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x):
        h = self.inp(x)
        for i, b in enumerate(self.blocks):
            h = b(h, scale=0.5 * (i + 1))
        return self.head(h)


def _stack_batches():
    torch.manual_seed(4)
    mix = torch.randn(32, 32) / 6 + torch.eye(32)
    return [torch.randn(30, 32) @ mix for _ in range(3)]


def _by_hand(config, batches, orders):
    """gptq_ one pass per name list, in order, on the model with the lists before converted."""
    model = _Stack()
    for names in orders:
        model = pyquant.nn.gptq_(model, config, batches, sequential=False,
                                 filter_fn=lambda m, fqn, names=names: fqn in names)
    return model


@pytest.mark.parametrize("config", [pyquant.WeightOnlyConfig(4, 32), pyquant.SparqConfig(sparse24=True)],
                         ids=["gptq", "sparsegpt"])
def test_sequential_calibrates_block_after_block(config, monkeypatch):
    """sequential (the default): each block's layers are calibrated together on the outputs of
    the blocks before it as converted, from the block's own arguments, then the layers outside
    the blocks: the same bits as gptq_ called block by block; one block's Hessians at a time;
    hessian_memory splits a block into runs (here a layer each: gptq_ layer by layer)."""
    batches = _stack_batches()
    calibrated = []
    recording = gptq_module._recording
    monkeypatch.setattr(gptq_module, "_recording", lambda layers: calibrated.append(len(layers)) or recording(layers))
    seq = pyquant.nn.gptq_(_Stack(), config, iter(batches))
    assert calibrated == [2, 2, 2, 2]  # (inp and head, hooked while the forwards pass them; each block)
    blocks = [(f"blocks.{i}.fc1", f"blocks.{i}.fc2") for i in range(3)]
    want = _by_hand(config, batches, blocks + [("inp", "head")])
    assert len(_packed(seq)) == 8
    assert all(torch.equal(a, b) for a, b in zip(_packed(seq), _packed(want)))
    one_pass = pyquant.nn.gptq_(_Stack(), config, batches, sequential=False)
    assert not all(torch.equal(a, b) for a, b in zip(_packed(seq), _packed(one_pass)))

    calibrated.clear()
    runs = pyquant.nn.gptq_(_Stack(), config, batches, hessian_memory=128 * 128 * 4)
    assert calibrated == [2] + [1] * 6  # (inp and head: 20 KiB together)
    each = _by_hand(config, batches, [(n,) for b in blocks for n in b] + [("inp", "head")])
    assert all(torch.equal(a, b) for a, b in zip(_packed(runs), _packed(each)))


class _Shared(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(_Block(16) for _ in range(2))

    def forward(self, x):
        x = self.blocks[0](x, scale=1.0)
        return self.blocks[1](self.blocks[0](x, scale=1.0), scale=1.0)


class _Routed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(_Block(16) for _ in range(2))

    def forward(self, x):
        order = self.blocks if x.sum() > 0 else reversed(self.blocks)
        for b in order:
            x = b(x, scale=1.0)
        return x


def test_sequential_refuses_a_block_run_twice_or_in_another_order():
    """Clear errors (saying the model is partly converted); nothing left behind: no paused
    forward's thread, each block's own forward back."""
    cfg = pyquant.WeightOnlyConfig(4, 32)
    with pytest.raises(ValueError, match=r"block 'blocks.0' ran again after it was converted .*partly "
                                         r"converted.*sequential=False"):
        pyquant.nn.gptq_(_Shared(), cfg, [torch.randn(4, 16), torch.randn(4, 16)])
    assert len(_packed(pyquant.nn.gptq_(_Shared(), cfg, [torch.randn(4, 16)], sequential=False))) == 4
    routed = _Routed()
    with pytest.raises(ValueError, match="different orders .*sequential=False"):
        pyquant.nn.gptq_(routed, cfg, [torch.ones(4, 16), -torch.ones(4, 16)])
    assert not any("forward" in b.__dict__ for b in routed.blocks)
    model = _Stack()
    model.blocks[2].forward = lambda x, scale: x  # (a block's own forward, restored after the stubs)
    q = pyquant.nn.gptq_(model, cfg, _stack_batches())
    assert "forward" in q.blocks[2].__dict__ and len(_packed(q)) == 8


class _Swallows(_Stack):
    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            try:
                h = b(h, scale=1.0)
            except BaseException:  # noqa: B036 (a model that swallows everything)
                pass
        return self.head(h)


class _Fails(_Stack):
    def forward(self, x):
        if x.shape[0] == 7:
            raise RuntimeError("this batch fails in the model")
        return super().forward(x)


@pytest.mark.parametrize("sequential", [True, False], ids=["block-after-block", "one-pass"])
def test_no_batch_is_a_clear_error_and_a_generator_is_read_once(sequential):
    """No calibration batch (an exhausted generator): a ValueError, the model left float; a
    generator's first batch, read to check, still calibrates (the same bits as the list)."""
    config = pyquant.WeightOnlyConfig(4, 32)
    for empty in ([], iter([])):
        model = _Stack()
        with pytest.raises(ValueError, match="batches: got no calibration batch"):
            pyquant.nn.gptq_(model, config, empty, sequential=sequential)
        assert not any(isinstance(m, pyquant.nn.QuantLinear) for m in model.modules())
    torch.manual_seed(0)
    want = pyquant.nn.gptq_(_Stack(), config, _stack_batches(), sequential=sequential)
    torch.manual_seed(0)
    got = pyquant.nn.gptq_(_Stack(), config, (b for b in _stack_batches()), sequential=sequential)
    assert _packed(got) and all(torch.equal(a, b) for a, b in zip(_packed(got), _packed(want)))
    with pytest.raises(TypeError, match="batches: expected an iterable"):
        pyquant.nn.gptq_(_Stack(), config, 3)


def test_an_error_in_a_paused_forward_reaches_the_caller():
    batches = _stack_batches() + [torch.randn(7, 32)]
    with pytest.raises(RuntimeError, match="this batch fails"):
        pyquant.nn.gptq_(_Fails(), pyquant.WeightOnlyConfig(4, 32), batches)
    model = _Stack()
    batches = _stack_batches()
    batches[1] = batches[1].clone()
    batches[1][0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        pyquant.nn.gptq_(model, pyquant.WeightOnlyConfig(4, 32), batches)
    assert not any("forward" in b.__dict__ for b in model.blocks)
    swallows = _Swallows()  # (paused forwards unwind even through model code that swallows it all)
    with pytest.raises(ValueError, match="non-finite"):
        pyquant.nn.gptq_(swallows, pyquant.WeightOnlyConfig(4, 32), batches)
    assert not any("forward" in b.__dict__ for b in swallows.blocks)


class _InPlaceBlock(_Block):
    def forward(self, x, *, scale):
        x += self.fc2(torch.relu(self.fc1(x))) * scale
        return x


class _Levels(torch.nn.Module):
    """Blocks that change their input in place, in a list of lists (never called itself)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.inp = torch.nn.Linear(32, 64)
        self.levels = torch.nn.ModuleList(torch.nn.ModuleList(_InPlaceBlock(64) for _ in range(2)) for _ in range(2))

    def forward(self, x):
        h = self.inp(x)
        for level in self.levels:
            for b in level:
                h = b(h, scale=0.5)
        return h


def test_sequential_blocks_that_change_their_input_in_place_inside_lists_of_lists(monkeypatch):
    batches = _stack_batches()
    cfg = pyquant.WeightOnlyConfig(4, 32)
    calibrated = []
    recording = gptq_module._recording
    monkeypatch.setattr(gptq_module, "_recording", lambda layers: calibrated.append(len(layers)) or recording(layers))
    seq = pyquant.nn.gptq_(_Levels(), cfg, batches)
    assert calibrated == [1, 2, 2, 2, 2]  # (inp while the forwards pass it; each of the 4 blocks)
    by_hand = _Levels()
    for names in [(f"levels.{i}.{j}.fc1", f"levels.{i}.{j}.fc2") for i in range(2) for j in range(2)] + [("inp",)]:
        by_hand = pyquant.nn.gptq_(by_hand, cfg, batches, sequential=False,
                                   filter_fn=lambda m, fqn, names=names: fqn in names)
    assert len(_packed(seq)) == 9
    assert all(torch.equal(a, b) for a, b in zip(_packed(seq), _packed(by_hand)))


def test_repeated_blocks_are_the_outermost_lists_of_layer_holders():
    model = torch.nn.Sequential(_Stack(), torch.nn.Linear(10, 10))
    layers = {m for m in model.modules() if isinstance(m, torch.nn.Linear)}
    found = gptq_module.repeated_blocks(model, layers.__contains__)
    assert found == list(model[0].blocks)  # (the root Sequential holds a layer itself)
    shared = torch.nn.ModuleList([model[0].blocks[0]] * 2)
    assert gptq_module.repeated_blocks(shared, layers.__contains__) == []


@pytest.mark.parametrize("sequential", [True, False])
def test_gptq_of_a_transformer_encoder_with_a_padding_mask(sequential):
    """nn.TransformerEncoder's nested-tensor path (a padding mask in eval mode) handed the
    calibration hooks a nested tensor (a crash): it is off for the encoders gptq_ converts."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    x = torch.randn(3, 10, 64)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[1, 6:] = True
    with torch.no_grad():
        want = enc(x, src_key_padding_mask=mask)[~mask]
    q = pyquant.nn.gptq_(enc, pyquant.WeightOnlyConfig(4, 32), [{"src": x, "src_key_padding_mask": mask}],
                         sequential=sequential)
    assert len(_packed(q)) == 2 * (4 + 2)  # (per layer: attention's q, k, v, out; the feed-forward)
    with torch.no_grad():
        got = q(x, src_key_padding_mask=mask)[~mask]
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.98


def test_sequential_keeps_block_hooks_autocast_and_refuses_model_threads():
    """A block's own hooks run once per call (the paused call's); the caller's autocast holds in
    the paused forwards; a block called from a thread the model starts is a clear error."""
    cfg = pyquant.WeightOnlyConfig(4, 32)
    batches = _stack_batches()

    def hooked():
        model = _Stack()
        for b in model.blocks:
            b.register_forward_hook(lambda mod, args, out: out * 2)
            b.register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,))
        return model

    seq = pyquant.nn.gptq_(hooked(), cfg, batches)
    by_hand = hooked()
    for names in [(f"blocks.{i}.fc1", f"blocks.{i}.fc2") for i in range(3)] + [("inp", "head")]:
        by_hand = pyquant.nn.gptq_(by_hand, cfg, batches, sequential=False,
                                   filter_fn=lambda m, fqn, names=names: fqn in names)
    assert all(torch.equal(a, b) for a, b in zip(_packed(seq), _packed(by_hand)))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        seq = pyquant.nn.gptq_(_Stack(), cfg, batches)
        by_hand = _by_hand(cfg, batches, [(f"blocks.{i}.fc1", f"blocks.{i}.fc2") for i in range(3)]
                           + [("inp", "head")])
    assert all(torch.equal(a, b) for a, b in zip(_packed(seq), _packed(by_hand)))

    class Threaded(_Stack):
        def forward(self, x):
            h = self.inp(x)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                for i, b in enumerate(self.blocks):
                    h = pool.submit(b, h, scale=1.0).result()
            return self.head(h)

    with pytest.raises(ValueError, match="ran in a thread the model started; .*sequential=False"):
        pyquant.nn.gptq_(Threaded(), cfg, batches)


def test_sequential_releases_each_blocks_float_layers(monkeypatch):
    """Nothing in gptq_ keeps a converted block's float layers (their weights) alive while the
    later blocks are calibrated."""
    import gc
    import weakref

    from pyquant.nn import gptq_blocks
    model = _Stack()
    refs = [[weakref.ref(b.fc1), weakref.ref(b.fc2)] for b in model.blocks]
    alive = []
    finish = gptq_blocks.BlockStages.finish

    def finishing(self, block):
        gc.collect()
        alive.append([sum(r() is not None for r in rs) for rs in refs])
        return finish(self, block)

    monkeypatch.setattr(gptq_blocks.BlockStages, "finish", finishing)
    pyquant.nn.gptq_(model, pyquant.WeightOnlyConfig(4, 32), _stack_batches())
    assert alive == [[0, 2, 2], [0, 0, 2], [0, 0, 0]]
