"""Grouped forwards: several layers of one shape in one native call (``Scheme.run_grouped``, the
experts a mixture-of-experts step routes to), bit for bit what each layer's own fused forward
gives its rows (those are checked against independent references in test_nn_forward.py), on
every ISA path; bad arguments are ValueErrors; QuantExperts takes the one call where it can.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import pyquant
from pyquant import _C
from pyquant.nn import QuantExperts, QuantLinear

from test_nn import _Experts

GROUPED_CONFIGS = [pyquant.Int8Config(act_bits=8), pyquant.Int8Config(act_bits=7),
                   pyquant.WeightOnlyConfig(4, 32), pyquant.WeightOnlyConfig(4, 128),
                   pyquant.WeightOnlyConfig(2, 64), pyquant.LUT2Config(), pyquant.SparqConfig(),
                   pyquant.SparqConfig(sparse24=True)]
CONFIG_IDS = ["int8", "int8-a7", "w4g32", "w4g128", "w2g64", "lut2", "sparq", "sparq24"]
# (N, K): panel and K tails, K < one group, a GEMV-sized weight
SHAPES = [(70, 100), (64, 27), (130, 260), (2048, 1024)]


def _layers(rng, config, n, k, count=4, static=False):
    layers = []
    for e in range(count):
        w = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32) * 0.1)
        b = torch.from_numpy(rng.standard_normal(n).astype(np.float32)) if e % 2 else None
        layer = QuantLinear(k, n, w, b, config)
        if static:
            lo = -1.0 - e
            layer.act_range.copy_(torch.tensor([lo, 2.5 + e]))
        layers.append(layer)
    return layers


def _grouped(layers, x, groups):
    args = [layer.grouped_args() for layer in layers]
    return torch.from_numpy(layers[0].scheme.run_grouped(
        x.numpy(), args, np.array(groups, dtype=np.int64).reshape(-1, 3),
        pyquant.get_num_threads()))


def _one_by_one(layers, x, groups):
    with torch.no_grad():
        return torch.cat([layers[i](x[r0:r0 + n]) for i, r0, n in groups])


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("config", GROUPED_CONFIGS, ids=CONFIG_IDS)
def test_grouped_is_each_layers_own_forward(isa, rng, threads, config, shape, static):
    n, k = shape
    layers = _layers(rng, config, n, k, static=static)
    x = torch.from_numpy(rng.standard_normal((40, k)).astype(np.float32) * 2)
    x[3, 5] = 1e4  # an outlier row
    groups = [(3, 0, 1), (1, 0, 1),  # one row to two weights (a decode step)
              (0, 5, 7), (2, 1, 0),  # an empty group
              (2, 12, 20), (1, 39, 1), (0, 0, 40)]  # overlapping ranges, the last row
    y = _grouped(layers, x, groups)
    assert y.shape == (1 + 1 + 7 + 0 + 20 + 1 + 40, n)
    assert torch.equal(y, _one_by_one(layers, x, groups))


@pytest.mark.parametrize("config", GROUPED_CONFIGS[:3:2], ids=CONFIG_IDS[:3:2])
def test_grouped_without_groups_or_rows(rng, config):
    layers = _layers(rng, config, 70, 100, count=2)
    x = torch.zeros(0, 100)
    assert _grouped(layers, x, []).shape == (0, 70)
    assert _grouped(layers, x, [(1, 0, 0)]).shape == (0, 70)


@pytest.mark.parametrize("config", GROUPED_CONFIGS[:3:2], ids=CONFIG_IDS[:3:2])
def test_grouped_bad_arguments_are_value_errors(rng, config):
    layers = _layers(rng, config, 70, 100, count=2)
    x = np.zeros((5, 100), np.float32)
    args = [layer.grouped_args() for layer in layers]
    run = layers[0].scheme.run_grouped

    def call(x=x, args=args, groups=((0, 0, 1),)):
        return run(x, args, np.array(groups, dtype=np.int64).reshape(-1, 3), 1)

    with pytest.raises(ValueError, match=r"groups\[0\]: weight index must be in \[0, 2\)"):
        call(groups=[(2, 0, 1)])
    with pytest.raises(ValueError, match=r"groups\[1\]: rows \[first, first \+ rows\) must lie"):
        call(groups=[(0, 0, 1), (1, 4, 2)])
    with pytest.raises(ValueError, match=r"groups\[0\]: rows"):
        call(groups=[(0, -1, 1)])
    with pytest.raises(ValueError, match=r"groups: expected an int64 array \[G, 3\]"):
        run(x, args, np.zeros((2, 2), np.int64), 1)
    with pytest.raises(ValueError, match="weights: expected at least one weight"):
        call(args=[])
    with pytest.raises(ValueError, match=r"weights\[0\]: expected a packed \[N, K\] = \[70, 90\]"):
        call(x=np.zeros((5, 90), np.float32))
    other = _layers(rng, config, 64, 100, count=1)[0].grouped_args()
    with pytest.raises(ValueError, match=r"weights\[1\]: expected a packed \[N, K\] = \[70, 100\]"):
        call(args=[args[0], other])
    short = (args[1][0],) + tuple(a[:-1] if i == 2 else a for i, a in enumerate(args[1][1:], 1))
    with pytest.raises(ValueError, match=r"weights\[1\]\.w_off: expected a float32 vector of length 70"):
        call(args=[args[0], short])
    tampered = args[1][0].copy()
    tampered[8:16] = 0xFF  # the header's shape fields
    with pytest.raises(ValueError):
        call(args=[args[0], (tampered,) + args[1][1:]])
    with pytest.raises(ValueError):  # a truncated buffer
        call(args=[args[0], (args[1][0][:-64],) + args[1][1:]])


def test_grouped_lut_and_sparq_refuse_what_their_layers_refuse(rng):
    """LUT2 / SPARQ groups run through each layer's own forward: the same checks per weight."""
    lut = _layers(rng, pyquant.LUT2Config(), 70, 100, count=2)
    x = np.abs(rng.standard_normal((5, 100))).astype(np.float32)
    groups = np.array([[0, 0, 5], [1, 2, 3]], np.int64)
    args = [layer.grouped_args() for layer in lut]
    al, wl = list(lut[0].config.a_levels), list(lut[0].config.w_levels)
    assert _C.forward_lut_grouped(x, args, groups, al, wl, True).shape == (8, 70)
    with pytest.raises(ValueError, match=r"weights\[0\]\.packed: packed with other w_levels"):
        _C.forward_lut_grouped(x, args, groups, al, [-2, -1, 0, 1], True)
    with pytest.raises(ValueError, match=r"weights\[1\]\.w_scale"):
        _C.forward_lut_grouped(x, [args[0], (args[1][0], args[1][1][:-1]) + args[1][2:]], groups,
                               al, wl, True)
    sparq = _layers(rng, pyquant.SparqConfig(negative="error"), 70, 100, count=2)
    sargs = [layer.grouped_args() for layer in sparq]
    run = lambda x, options=5, sparse24=False: _C.forward_sparq_grouped(  # noqa: E731
        x, sargs, groups, 4, options, True, True, False, sparse24)
    assert torch.equal(torch.from_numpy(run(x)), _one_by_one(sparq, torch.from_numpy(x),
                                                             groups.tolist()))
    with pytest.raises(ValueError, match="negative='error'"):
        run(-x)
    with pytest.raises(ValueError, match="another SPARQ configuration"):
        run(x, options=3)
    with pytest.raises(ValueError):  # a dense SPARQ weight is not a 2:4 one
        run(x, sparse24=True)
    with pytest.raises(ValueError, match=r"weights\[1\]: expected a packed \[N, K\] = \[70, 100\]"):
        other = _layers(rng, pyquant.SparqConfig(negative="error"), 64, 100, count=1)[0]
        _C.forward_sparq_grouped(x, [sargs[0], other.grouped_args()], groups, 4, 5, True, True,
                                 False, False)


def _routing(tokens):
    index = torch.tensor([[0, 3, 5], [3, 1, 5], [1, 0, 5], [0, 3, 5], [4, 3, 5], [1, 0, 5],
                          [0, 1, 5]])[:tokens]  # expert 2 unused; 5: an expert-parallel sentinel
    weights = torch.rand(7, 3)[:tokens] * torch.tensor([1.0, 1.0, 0.0])
    return index, weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [7, 1], ids=["prefill", "decode"])
@pytest.mark.parametrize("config", [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32)],
                         ids=["int8", "w4g32"])
def test_quant_experts_one_call_per_projection(isa, threads, config, tokens, dtype, monkeypatch):
    """A step's experts run in one native call per projection, and give exactly what the
    per-expert QuantLinear calls give."""
    torch.manual_seed(4)
    block = _Experts(e=5, h=72, i=40, bias=True)
    q = QuantExperts(copy.deepcopy(block), config).to(dtype)
    hidden = torch.randn(tokens, 72).to(dtype)
    index, weights = _routing(tokens)
    calls = []
    scheme_type = type(q.up[0].scheme)
    real = scheme_type.run_grouped
    monkeypatch.setattr(scheme_type, "run_grouped",
                        lambda self, *a: calls.append(a[2].shape[0]) or real(self, *a))
    with torch.no_grad():
        y = q(hidden, index, weights.to(dtype))
        assert calls == ([2, 2] if tokens == 1 else [4, 4])  # the experts hit, per projection
        monkeypatch.setattr(QuantLinear, "grouped_args", lambda self, **kw: None)
        per_expert = q(hidden, index, weights.to(dtype))
    assert y.dtype == dtype
    assert torch.equal(y, per_expert)


def test_quant_experts_per_expert_where_no_grouped_forward(monkeypatch):
    """LUT2 (no grouped forward), a plain call with grad on, and calibration (each expert's
    observer sees its rows) run each expert's own forward; calibrated (static) experts take
    the one call again, exactly as their own forwards."""
    torch.manual_seed(5)
    block = _Experts(e=5, h=72, i=40)
    index, weights = _routing(7)
    hidden = torch.randn(7, 72)
    real = _C.forward_int8_grouped
    monkeypatch.setattr(_C, "forward_int8_grouped", None)  # (a grouped call would raise)
    with torch.no_grad():
        QuantExperts(copy.deepcopy(block), pyquant.LUT2Config())(hidden, index, weights)
    q = QuantExperts(copy.deepcopy(block), pyquant.Int8Config())
    y = q(hidden.clone().requires_grad_(), index, weights)
    with pytest.raises(RuntimeError, match="QuantLinear"):
        y.sum().backward()
    pyquant.calibrate(q, [(hidden, index, weights)])
    assert all(torch.isfinite(q.up[e].act_range).all() for e in (0, 1, 3, 4))
    monkeypatch.setattr(_C, "forward_int8_grouped", real)
    with torch.no_grad():
        y = q(hidden, index, weights)
        monkeypatch.setattr(QuantLinear, "grouped_args", lambda self, **kw: None)
        assert torch.equal(y, q(hidden, index, weights))


def test_hugepage_arena_buffers_are_disjoint_and_aligned(rng):
    """_C.hugepage_bytes (csrc/core/hugepage_arena.h): 64-byte aligned buffers that never overlap,
    small ones cut from shared arenas and large ones mapped alone, freed in any order (an
    emptied arena is reused or unmapped)."""
    sizes = [0, 1, 63, 64, 4096, 65536, 1 << 20, 3 << 20, 20 << 20, 40 << 20]
    for _ in range(3):
        bufs = [_C.hugepage_bytes(int(n)) for n in sizes + list(rng.integers(1, 5 << 20, 24))]
        for i, b in enumerate(bufs):
            assert b.ctypes.data % 64 == 0 and b.dtype == np.uint8 and b.flags.writeable
            b[:] = i % 251
        for i, b in enumerate(bufs):
            assert (b == i % 251).all(), i
        spans = sorted((b.ctypes.data, b.ctypes.data + b.nbytes) for b in bufs if b.nbytes)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))
        for i in rng.permutation(len(bufs)):
            bufs[i] = None


def test_hugepage_arena_reuses_freed_space():
    """A buffer made and dropped again and again (a module reloaded in a loop remakes its derived
    buffers) lands in the space freed before: the arena does not grow with the history."""
    if not _C.HUGEPAGE_ARENAS:
        pytest.skip("no huge-page arenas here (not Linux, or an AddressSanitizer build)")
    keep = [_C.hugepage_bytes(1 << 20) for _ in range(3)]  # live neighbours
    seen = set()
    for _ in range(50):
        a, b = _C.hugepage_bytes(300_000), _C.hugepage_bytes(700_000)
        seen.update((a.ctypes.data, b.ctypes.data))
        del a, b
    assert len(seen) <= 4
    assert all(k.nbytes == 1 << 20 for k in keep)


def test_reloading_a_module_keeps_its_memory():
    """load_state_dict in a loop: the derived buffers are remade each time, in reused space."""
    import resource

    layer = QuantLinear(2048, 4096, torch.randn(4096, 2048) * 0.02, None, pyquant.WeightOnlyConfig(4, 32))
    sd = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.load_state_dict(sd)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ptrs = set()
    for _ in range(30):
        layer.load_state_dict(sd)
        ptrs.add(layer._buffers["panel_scales"].data_ptr())
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown_kib < 8 << 10, grown_kib  # (30 leaked copies of the 0.5 MB scales: 15 MB)
    if _C.HUGEPAGE_ARENAS:
        assert len(ptrs) <= 2


def test_grouped_row_total_is_bounded(rng):
    """Groups may share input rows, so x does not bound their total: a total whose outputs and
    quantized rows would pass 1 TiB is a ValueError, not an allocation (nor a wrapped count)."""
    layers = _layers(rng, pyquant.Int8Config(), 70, 100, count=1)
    x = np.zeros((1000, 100), np.float32)
    groups = np.tile(np.array([[0, 0, 1000]], dtype=np.int64), (2_500_000, 1))
    with pytest.raises(ValueError, match=r"groups: more than \d+ rows in all"):
        layers[0].scheme.run_grouped(x, [layers[0].grouped_args()], groups, 1)


def test_hugepage_owns_knows_live_buffers():
    if not _C.HUGEPAGE_ARENAS:
        pytest.skip("no huge-page arenas here (not Linux, or an AddressSanitizer build)")
    a, b = _C.hugepage_bytes(100_000), _C.hugepage_bytes(30 << 20)  # shared arena, own mapping
    for buf in (a, b):
        p = buf.ctypes.data
        assert _C.hugepage_owns(p) and _C.hugepage_owns(p + buf.nbytes - 1)
    heap = np.zeros(100_000, np.uint8)
    assert not _C.hugepage_owns(heap.ctypes.data)
    p = a.ctypes.data
    del a
    assert not _C.hugepage_owns(p)  # (freed: its space is free again)
    assert b.nbytes == 30 << 20
