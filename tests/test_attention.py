"""QuantMultiheadAttention: nn.MultiheadAttention with quantized projections.

The reference is torch's own nn.MultiheadAttention slow path (its masks, layouts, bias_kv,
zero attention, head split) with every F.linear it makes answered by the same QuantLinear layers
called one by one: the module under test must match it for every argument combination, its
grouped q/k/v call included. The QuantLinear layers themselves are checked against independent
integer references in test_nn_forward.py.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyquant
from pyquant.nn import QuantMultiheadAttention

# torch warns on a float attn_mask beside a bool key_padding_mask (both are still supported)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched")

CONFIGS = [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32), pyquant.SparqConfig()]
CONFIG_IDS = ["int8", "w4g32", "sparq"]  # (grouped, grouped, one call per projection)
E, H, L, S, B = 32, 4, 5, 7, 3


def _reference(mha: nn.MultiheadAttention, quant: QuantMultiheadAttention, monkeypatch):
    """``mha`` on its slow path (train mode, no dropout) with F.linear on its weights answered by
    ``quant``'s layers: rows [r0, r0 + n) of in_proj_weight are layers r0 / E ..."""
    mha = copy.deepcopy(mha).train()
    mha.dropout = 0.0
    plain = F.linear
    layers = [quant.q_proj, quant.k_proj, quant.v_proj]
    separate = {id(getattr(mha, n + "_weight", None)): layer
                for n, layer in zip(("q_proj", "k_proj", "v_proj"), layers)}

    def linear(x, w, b=None):
        if w is mha.out_proj.weight:
            return quant.out_proj(x)
        if id(w) in separate:
            return separate[id(w)](x)
        base = mha.in_proj_weight
        if base is not None and w.untyped_storage().data_ptr() == base.untyped_storage().data_ptr():
            first = (w.data_ptr() - base.data_ptr()) // (base.element_size() * E * E)
            return torch.cat([layers[first + i](x) for i in range(w.shape[0] // E)], -1)
        return plain(x, w, b)

    def run(*args, **kwargs):
        with monkeypatch.context() as m, torch.no_grad():
            m.setattr(F, "linear", linear)
            return mha(*args, **kwargs)
    return run


def _mha(**kw):
    torch.manual_seed(1)
    m = nn.MultiheadAttention(E, H, **kw).eval()
    with torch.no_grad():
        for name in ("bias_k", "bias_v"):
            if getattr(m, name) is not None:
                getattr(m, name).normal_()
        if m.in_proj_bias is not None:
            m.in_proj_bias.normal_()
    return m


def _inputs(kind: str, batch_first: bool, batched: bool, kdim=E, vdim=E):
    g = torch.Generator().manual_seed(2)

    def t(n, d):
        shape = ((B, n, d) if batch_first else (n, B, d)) if batched else (n, d)
        return torch.randn(*shape, generator=g)
    q = t(L if kind != "self" else S, E)
    if kind == "self":
        return q, q, q
    k = t(S, kdim)
    return (q, k, k) if kind == "kv" else (q, k, t(S, vdim))


def _close(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kind", ["self", "kv", "qkv"])
@pytest.mark.parametrize("need_weights,average", [(False, True), (True, True), (True, False)],
                         ids=["sdpa", "weights", "per-head-weights"])
def test_matches_torch_with_the_same_projections(config, batch_first, batched, kind,
                                                 need_weights, average, monkeypatch):
    mha = _mha(batch_first=batch_first)
    quant = QuantMultiheadAttention(mha, config).eval()
    ref = _reference(mha, quant, monkeypatch)
    q, k, v = _inputs(kind, batch_first, batched)
    with torch.no_grad():
        got = quant(q, k, v, need_weights=need_weights, average_attn_weights=average)
    want = ref(q, k, v, need_weights=need_weights, average_attn_weights=average)
    _close(got[0], want[0])
    _close(got[1], want[1])


def _masks(kind: str, batched: bool, lq: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    causal = nn.Transformer.generate_square_subsequent_mask(lq) if lq == S else None
    b = B if batched else 1
    kpm = torch.rand(b, S, generator=g) < 0.3
    kpm[:, 0] = False  # (a fully masked row is NaN in torch too)
    kpm = kpm if batched else kpm[0]
    if kind == "kpm-bool":
        return dict(key_padding_mask=kpm)
    if kind == "kpm-float":
        return dict(key_padding_mask=torch.zeros(kpm.shape).masked_fill(kpm, -1e9))
    if kind == "attn-2d-bool":
        m = torch.rand(lq, S, generator=g) < 0.3
        m[:, 0] = False
        return dict(attn_mask=m)
    if kind == "attn-3d-float":
        return dict(attn_mask=torch.randn(b * H, lq, S, generator=g))
    if kind == "both":
        return dict(attn_mask=torch.randn(lq, S, generator=g), key_padding_mask=kpm)
    if kind == "causal-hint":
        return dict(attn_mask=causal, is_causal=True)
    if kind == "causal-hint-kpm":
        return dict(attn_mask=causal, is_causal=True, key_padding_mask=kpm)
    raise AssertionError(kind)


MASKS = ["kpm-bool", "kpm-float", "attn-2d-bool", "attn-3d-float", "both", "causal-hint",
         "causal-hint-kpm"]


@pytest.mark.parametrize("module_kw", [{}, dict(bias=False), dict(add_bias_kv=True),
                                       dict(add_zero_attn=True),
                                       dict(add_bias_kv=True, add_zero_attn=True)],
                         ids=["plain", "no-bias", "bias-kv", "zero-attn", "bias-kv-zero-attn"])
@pytest.mark.parametrize("masks", MASKS)
@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "weights"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_masks_and_key_extensions(module_kw, masks, need_weights, batched, monkeypatch):
    mha = _mha(batch_first=True, **module_kw)
    quant = QuantMultiheadAttention(mha, pyquant.Int8Config()).eval()
    ref = _reference(mha, quant, monkeypatch)
    q, k, v = _inputs("self", True, batched)
    kw = _masks(masks, batched, S)
    with torch.no_grad():
        got = quant(q, k, v, need_weights=need_weights, **kw)
    want = ref(q, k, v, need_weights=need_weights, **kw)
    _close(got[0], want[0])
    _close(got[1], want[1])


@pytest.mark.parametrize("config", CONFIGS[:2], ids=CONFIG_IDS[:2])
def test_kdim_vdim_and_cross_attention_masks(config, monkeypatch):
    mha = _mha(kdim=24, vdim=40)
    quant = QuantMultiheadAttention(mha, config).eval()
    ref = _reference(mha, quant, monkeypatch)
    q, k, v = _inputs("qkv", False, True, kdim=24, vdim=40)
    kw = _masks("both", True, L)
    with torch.no_grad():
        got = quant(q, k, v, **kw)
    want = ref(q, k, v, **kw)
    _close(got[0], want[0])
    _close(got[1], want[1])


def test_grouped_projection_is_the_three_layers_calls(monkeypatch):
    """q, k and v in one native call (Int8: Scheme.run_grouped) give the bits of three calls."""
    mha = _mha(batch_first=True)
    quant = QuantMultiheadAttention(mha, pyquant.Int8Config()).eval()
    calls = []
    scheme = quant.q_proj.scheme
    real = type(scheme).run_grouped
    monkeypatch.setattr(type(scheme), "run_grouped",
                        lambda self, *a: calls.append(1) or real(self, *a))
    for kind in ("self", "kv", "qkv"):
        q, k, v = _inputs(kind, True, True)
        with torch.no_grad():
            got = quant._project_qkv(q, k, v, q is k and k is v, k is v)
            want = [m(x.reshape(-1, E)) for m, x in
                    zip((quant.q_proj, quant.k_proj, quant.v_proj), (q, k, v))]
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    assert len(calls) == 3


def _encoder(**kw):
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(E, H, 64, dropout=0.0, batch_first=True, **kw)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def _cos(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_quantize_converts_every_projection_of_an_encoder(config):
    model = _encoder()
    x = torch.randn(B, S, E)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[0, -2:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(S)
    with torch.no_grad():
        want = model(x, mask=causal, src_key_padding_mask=kpm, is_causal=True)
    pyquant.quantize_(model, config)
    assert not [n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.MultiheadAttention)
                or type(m).__name__ == "NonDynamicallyQuantizableLinear"]
    assert sum(isinstance(m, QuantMultiheadAttention) for m in model.modules()) == 2
    with torch.no_grad():
        got = model(x, mask=causal, src_key_padding_mask=kpm, is_causal=True)
    assert _cos(got, want) > 0.99
    # a plain call (no no_grad) after float layers with parameters works too
    assert torch.equal(model(x, mask=causal, src_key_padding_mask=kpm, is_causal=True).detach(), got)


def test_decoder_self_and_cross_attention():
    torch.manual_seed(5)
    layer = nn.TransformerDecoderLayer(E, H, 64, dropout=0.0)
    model = nn.TransformerDecoder(layer, 2).eval()
    tgt, memory = torch.randn(L, B, E), torch.randn(S, B, E)
    with torch.no_grad():
        want = model(tgt, memory)
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    assert sum(isinstance(m, QuantMultiheadAttention) for m in model.modules()) == 4
    with torch.no_grad():
        got = model(tgt, memory)
    assert _cos(got, want) > 0.98


def test_state_dict_round_trip_and_tampered_projection():
    model = pyquant.quantize_(_encoder(), pyquant.Int8Config())
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = pyquant.quantize_(_encoder(norm_first=True), pyquant.Int8Config())  # other weights
    state = torch.load(io.BytesIO(buf.getvalue()))
    other.load_state_dict(state)
    x = torch.randn(B, S, E)
    with torch.no_grad():
        assert not torch.equal(other(x), model(x))  # (norm_first: another forward, same keys)
    other = pyquant.quantize_(_encoder(), pyquant.Int8Config())
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
    key = "layers.0.self_attn.k_proj.packed"
    assert key in state
    bad = dict(state)
    bad[key] = state[key][:-1].clone()
    with pytest.raises(ValueError, match="k_proj.packed"):
        other.load_state_dict(bad)


def test_key_value_biases_are_checked_at_load():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = _mha(add_bias_kv=True, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]
    model = pyquant.quantize_(Block(), pyquant.Int8Config())
    other = pyquant.quantize_(Block(), pyquant.Int8Config())
    state = model.state_dict()
    other.load_state_dict(state)
    x = torch.randn(B, S, E)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
    good = state["attn.bias_k"]
    for bad, err, match in (
            (torch.full_like(good, float("nan")), ValueError, "attn.bias_k: expected finite"),
            (torch.full_like(good, float("inf")), ValueError, "attn.bias_k: expected finite"),
            (torch.zeros(3), ValueError, r"attn.bias_k: expected shape \[1, 1, 32\]"),
            (good.int(), ValueError, "attn.bias_k: expected a floating-point tensor"),
            (torch.full_like(good, 1e39, dtype=torch.float64), ValueError,
             r"attn.bias_k: expected finite values \(in torch.float32\)"),
            (good.to("meta"), TypeError, "attn.bias_k: expected a dense tensor"),
            ([0.0], TypeError, "attn.bias_k: expected a tensor")):
        with pytest.raises(err, match=match):
            other.load_state_dict({**state, "attn.bias_k": bad})
    with torch.no_grad():  # (a refused file leaves the module as it was)
        assert torch.equal(other(x), model(x))
    # another float dtype converts, as into nn.MultiheadAttention (a bf16 model, a float32 file)
    half = pyquant.quantize_(Block().to(torch.bfloat16), pyquant.Int8Config())
    half.load_state_dict(state)
    assert half.attn.bias_k.dtype == torch.bfloat16
    assert torch.equal(half.attn.bias_k, good.to(torch.bfloat16))


def test_calibrate_sets_every_projection_range():
    model = pyquant.quantize_(_encoder(), pyquant.Int8Config())
    pyquant.calibrate(model, [torch.randn(B, S, E) for _ in range(2)])
    attn = model.layers[0].self_attn
    for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
        assert bool(torch.isfinite(m.act_range).all())
    x = torch.randn(B, S, E)
    with torch.no_grad():  # static ranges: q, k and v still one grouped call, same bits
        got = attn(x, x, x, need_weights=False)[0]
        rows = x.reshape(-1, E)
        q, k, v = (m(rows).view(B, S, H, E // H).transpose(1, 2)
                   for m in (attn.q_proj, attn.k_proj, attn.v_proj))
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, E)
        want = attn.out_proj(o).view(B, S, E)
    assert torch.equal(got, want)


def test_gptq_uses_the_query_key_value_inputs():
    torch.manual_seed(6)
    model = _encoder()
    batches = [torch.randn(B, S, E) * torch.linspace(0.1, 3, E) for _ in range(4)]
    rtn = pyquant.quantize_(copy.deepcopy(model), pyquant.WeightOnlyConfig(4, 32))
    gq = pyquant.nn.gptq_(copy.deepcopy(model), pyquant.WeightOnlyConfig(4, 32), batches)
    a, b = rtn.layers[0].self_attn, gq.layers[0].self_attn
    assert isinstance(b, QuantMultiheadAttention)
    assert not torch.equal(a.q_proj.packed, b.q_proj.packed)  # GPTQ rounding
    assert torch.equal(a.out_proj.packed, b.out_proj.packed)  # (no Hessian: round-to-nearest)
    x = batches[0]
    with torch.no_grad():
        want = model(x)
        assert _cos(gq(x), want) >= _cos(rtn(x), want) - 1e-3


def test_bad_arguments_are_clear_errors():
    quant = QuantMultiheadAttention(_mha(batch_first=True), pyquant.Int8Config()).eval()
    x = torch.randn(B, S, E)
    with pytest.raises(ValueError, match="query"):
        quant(torch.randn(B, S, E + 1), x, x)
    with pytest.raises(ValueError, match="key"):
        quant(x, torch.randn(B, S), x)
    with pytest.raises(ValueError, match="value"):
        quant(x, x, torch.randn(B, S + 1, E))
    with pytest.raises(ValueError, match="key: expected batch size"):
        quant(x, torch.randn(B + 1, S, E), torch.randn(B + 1, S, E))
    with pytest.raises(ValueError, match="attn_mask"):
        quant(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="attn_mask: expected shape"):
        quant(x, x, x, attn_mask=torch.zeros(S, S + 1))
    with pytest.raises(ValueError, match="key_padding_mask"):
        quant(x, x, x, key_padding_mask=torch.zeros(B, S + 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask"):
        quant(x, x, x, attn_mask=torch.zeros(S, S, dtype=torch.int64))
    with pytest.raises(TypeError, match="mha"):
        QuantMultiheadAttention(nn.Linear(4, 4), pyquant.Int8Config())
    xg = torch.randn(B, S, E, requires_grad=True)
    out, _ = quant(xg, xg, xg)  # a forward works; a backward through it is the clear error
    with pytest.raises(RuntimeError, match="QuantLinear"):
        out.sum().backward()


def test_subclass_with_own_forward_stays_float():
    class Custom(nn.MultiheadAttention):
        def forward(self, *a, **k):
            return super().forward(*a, **k)

    model = nn.Sequential()
    model.attn = Custom(E, H)
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        pyquant.quantize_(model, pyquant.Int8Config())
    assert type(model.attn) is Custom


def test_whole_module_pickle_and_export_give_the_same_bits():
    model = pyquant.quantize_(_encoder(), pyquant.Int8Config())
    x = torch.randn(B, S, E)
    buf = io.BytesIO()
    torch.save(model, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    with torch.no_grad():
        want = model(x)
        assert torch.equal(loaded(x), want)
        exported = torch.export.export(model, (x,))  # (traced: one op per projection)
        assert torch.equal(exported.module()(x), want)


@pytest.mark.parametrize("shape", [(0, S), (L, 0), (0, 0)], ids=["no-queries", "no-keys", "none"])
def test_empty_sequences_and_autocast(shape):
    mha = _mha(batch_first=True)
    quant = QuantMultiheadAttention(mha, pyquant.Int8Config()).eval()
    q, k = torch.randn(B, shape[0], E), torch.randn(B, shape[1], E)
    with torch.no_grad():
        want = mha(q, k, k, need_weights=False)[0]
        got = quant(q, k, k, need_weights=False)[0]
    assert got.shape == want.shape
    x = torch.randn(B, S, E)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, weights = quant(x, x, x, attn_mask=torch.zeros(S, S, dtype=torch.bool))
    assert out.dtype == weights.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="query: expected a floating-point"):
        quant(torch.ones(B, S, E, dtype=torch.int64), x, x)
