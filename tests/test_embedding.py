"""QuantEmbedding (pyquant/nn/embedding.py): quantized embedding tables. Lookups against a
reference written from the documented layout (codes unpacked by pyquant.unpack, times the
scales), the index checks of nn.Embedding, quantize_ with embedding_filter, and the table's state
dict as untrusted input."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import pyquant
from pyquant.nn import QuantEmbedding, embedding_filter

CONFIGS = {
    "int8": pyquant.Int8Config(act_bits=8),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "w4g128": pyquant.WeightOnlyConfig(4, 128),
    "w2g64": pyquant.WeightOnlyConfig(2, 64),
}


def reference_table(q: QuantEmbedding) -> torch.Tensor:
    """float32 [V, D] from q's buffers as the layout documents them."""
    d = q.embedding_dim
    if q.bits == 8:
        return q.codes.float() * q.scales.float()
    codes = pyquant.unpack(q.codes, q.bits, d, signed=True).float()
    cols = torch.arange(d) // q.group_size
    return codes * q.scales.float()[:, cols]


def table(v, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(v, d, generator=g) * torch.rand(v, 1, generator=g) * 3
    w[-1] = 0.0  # an all-zero row (a padding row)
    w[0, 0] = 40.0  # an outlier
    return w.to(dtype)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("v,d", [(1, 1), (7, 33), (50, 64), (300, 100), (17, 129)])
def test_lookup_matches_reference(name, v, d):
    cfg = CONFIGS[name]
    emb = nn.Embedding(v, d, _weight=table(v, d))
    q = QuantEmbedding.from_embedding(emb, cfg)
    ref = reference_table(q)
    idx = torch.randint(0, v, (3, 11), generator=torch.Generator().manual_seed(1))
    assert torch.equal(q(idx), ref[idx])
    assert torch.equal(q.dequantize_weight(), ref)
    assert q(idx[:0]).shape == (0, 11, d)
    if q.bits == 8:  # symmetric per row: round(w / s), s = max |w| / 127
        w = emb.weight.detach()
        s = (w.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127)
        assert torch.equal(q.codes, torch.round(w / s).to(torch.int8))
        assert torch.allclose(q.scales, s)
        assert float((ref - w).abs().max()) <= float(s.max()) / 2 * 1.0001
    else:
        assert q.scales.dtype == torch.bfloat16
        assert q.codes.shape == (v, -(-d * q.bits // 8))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_accuracy_on_gaussian_rows(name):
    w = torch.randn(256, 128, generator=torch.Generator().manual_seed(2))
    q = QuantEmbedding.from_embedding(nn.Embedding(256, 128, _weight=w), CONFIGS[name])
    cos = nn.functional.cosine_similarity(q.dequantize_weight(), w).min()
    assert cos > {8: 0.9999, 4: 0.985, 2: 0.88}[q.bits]  # (min over rows)


def test_padding_dtypes_and_moves():
    w = table(20, 40, dtype=torch.bfloat16)
    emb = nn.Embedding(20, 40, padding_idx=19, _weight=w)
    q = QuantEmbedding.from_embedding(emb, CONFIGS["w4g32"])
    assert q.padding_idx == 19 and "padding_idx=19" in repr(q)
    out = q(torch.tensor([19, 5]))
    assert out.dtype == torch.bfloat16 and not out[0].any()
    assert torch.equal(out, reference_table(q)[[19, 5]].to(torch.bfloat16))
    q.float()
    assert q(torch.tensor([5])).dtype == torch.float32 and q.codes.dtype == torch.uint8
    q.half()
    assert q(torch.tensor([5])).dtype == torch.float16 and q.scales.dtype == torch.bfloat16
    assert q.weight.shape == (20, 40) and q.weight.dtype == torch.float16


def test_index_checks():
    q = QuantEmbedding.from_embedding(nn.Embedding(10, 8), CONFIGS["int8"])
    assert torch.equal(q(torch.tensor([1, 9], dtype=torch.int32)), q(torch.tensor([1, 9])))
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        q(torch.tensor([10]))
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        q(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="input: expected int64 or int32"):
        q(torch.tensor([1.0]))
    with pytest.raises(TypeError, match="input: expected a tensor"):
        q([1, 2])


def test_conversion_errors():
    with pytest.raises(ValueError, match="max_norm"):
        QuantEmbedding.from_embedding(nn.Embedding(4, 8, max_norm=1.0), CONFIGS["int8"])
    for cfg in (pyquant.LUT2Config(), pyquant.SparqConfig()):
        with pytest.raises(TypeError, match="config: an embedding table"):
            QuantEmbedding.from_embedding(nn.Embedding(4, 8), cfg)
    bad = nn.Embedding(4, 8)
    with torch.no_grad():
        bad.weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        QuantEmbedding.from_embedding(bad, CONFIGS["w4g32"])
    m = nn.Sequential(nn.Embedding(4, 8))
    with pytest.raises(TypeError, match="layer '0': config: an embedding table"):
        pyquant.quantize_(m, pyquant.SparqConfig(), filter_fn=embedding_filter)


class Scaled(nn.Embedding):
    """An embedding with a forward of its own (as Gemma's scaled embeddings)."""

    def forward(self, x):
        return super().forward(x) * 2.0


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(64, 48)
        self.pos = nn.Embedding(16, 48)
        self.scaled = Scaled(8, 48)
        self.head = nn.Linear(48, 64)

    def forward(self, ids):
        y = self.tok(ids) + self.pos(torch.arange(ids.shape[-1])) + self.scaled(ids % 8)
        return self.head(y)


def test_requantize_subclasses_ties_and_gptq():
    torch.manual_seed(0)
    m = Tiny()
    pyquant.quantize_(m, pyquant.Int8Config(act_bits=8), filter_fn=embedding_filter)
    tok = m.tok
    with pytest.warns(UserWarning, match="converted no layer"):  # (already quantized: skipped)
        pyquant.quantize_(m, pyquant.WeightOnlyConfig(4, 32), filter_fn=embedding_filter)
    assert m.tok is tok
    with pytest.raises(TypeError, match="layer 'scaled': module: Scaled has a forward of its own"):
        pyquant.quantize_(m, pyquant.Int8Config(), filter_fn=lambda mod, fqn: fqn == "scaled")
    tied = nn.Sequential(nn.Embedding(32, 16), nn.Linear(16, 32, bias=False))
    tied[1].weight = tied[0].weight
    with pytest.warns(UserWarning, match=r"'0' was quantized, but its float weight stays in memory as '1.weight'"):
        pyquant.quantize_(tied, pyquant.Int8Config(), filter_fn=embedding_filter)
    # gptq_ converts the tables round-to-nearest (their input is indices: no Hessian)
    g = Tiny()
    batches = [torch.randint(0, 64, (2, 16)) for _ in range(2)]
    pyquant.nn.gptq_(g, pyquant.WeightOnlyConfig(4, 32), batches,
                     filter_fn=lambda mod, fqn: embedding_filter(mod, fqn) or fqn == "head")
    assert isinstance(g.tok, QuantEmbedding) and type(g.head).__name__ == "QuantLinear"


def test_quantize_filters():
    torch.manual_seed(0)
    m = Tiny()
    x = torch.randint(0, 64, (2, 16))
    pyquant.quantize_(m, pyquant.WeightOnlyConfig(4, 32))  # the default: linears only
    assert type(m.tok) is nn.Embedding and type(m.head).__name__ == "QuantLinear"
    pyquant.quantize_(m, pyquant.Int8Config(act_bits=8), filter_fn=embedding_filter)
    assert isinstance(m.tok, QuantEmbedding) and isinstance(m.pos, QuantEmbedding)
    assert type(m.scaled) is Scaled  # its own forward: left float
    assert m(x).shape == (2, 16, 64)
    assert set(pyquant.nn.checkpoint.quantized_layers(m)) == {"tok", "pos", "head"}


def test_weight_view_and_copies():
    q = QuantEmbedding.from_embedding(nn.Embedding(30, 16), CONFIGS["w2g64"])
    w = q.weight
    assert w.shape == (30, 16) and w.dtype == torch.float32
    with pytest.warns(UserWarning):
        assert torch.equal(w + 0, q.dequantize_weight())
    with pytest.raises(AttributeError, match="cannot be assigned"):
        q.weight = nn.Parameter(torch.zeros(30, 16))
    idx = torch.arange(30)
    assert torch.equal(copy.deepcopy(q)(idx), q(idx))
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(idx), q(idx))


def meta_twin(cfg, v=40, d=70):
    with torch.device("meta"):
        emb = nn.Embedding(v, d)
    return QuantEmbedding.from_embedding(emb, cfg)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_round_trip(name):
    cfg = CONFIGS[name]
    q = QuantEmbedding.from_embedding(nn.Embedding(40, 70, _weight=table(40, 70)), cfg)
    twin = meta_twin(cfg)
    assert twin.unloaded_keys("e.") == ["e.codes", "e.scales"]
    with pytest.raises(ValueError, match="not loaded yet"):
        twin(torch.tensor([1]))
    with pytest.raises(ValueError, match="not loaded yet"):
        twin.state_dict()
    twin.load_state_dict(q.state_dict(), assign=True)
    idx = torch.arange(40)
    assert torch.equal(twin(idx), q(idx))


@pytest.mark.parametrize("name", ["int8", "w4g32"])
def test_state_dict_tampered(name):
    cfg = CONFIGS[name]
    sd = QuantEmbedding.from_embedding(nn.Embedding(40, 70), cfg).state_dict()
    codes, scales = sd["codes"], sd["scales"]
    cases = {
        "codes dtype": {"codes": codes.to(torch.int16)},
        "codes shape": {"codes": codes[:, :-1].contiguous()},
        "codes rows": {"codes": codes[:-1].contiguous()},
        "scales dtype": {"scales": scales.double()},
        "scales shape": {"scales": torch.cat([scales, scales], 1)},
        "scales nan": {"scales": scales.clone().index_fill_(0, torch.tensor([3]), float("nan"))},
        "scales inf": {"scales": scales.clone().index_fill_(0, torch.tensor([0]), float("inf"))},
    }
    for what, edit in cases.items():
        twin = meta_twin(cfg)
        with pytest.raises(ValueError, match=r"(codes|scales): expected"):
            twin.load_state_dict({**sd, **edit}, assign=True)
        assert twin.unloaded_keys() == ["codes", "scales"], what  # nothing half-loaded
    with pytest.raises(TypeError, match="codes: expected a tensor"):
        meta_twin(cfg)._check_state({"codes": [1, 2]}, "")
    huge = scales.float().clone()
    huge[5, 0] = 3e38 if name == "w4g32" else 1e37  # finite, but code x scale overflows
    with pytest.raises(ValueError, match=r"scales: expected \|values\| <="):
        meta_twin(cfg).load_state_dict({**sd, "scales": huge.to(scales.dtype)}, assign=True)
    for odd, kind in ((torch.empty(codes.shape, dtype=codes.dtype, device="meta"), "meta"),
                      (codes.to_sparse(), "layout")):
        with pytest.raises(TypeError, match=f"codes: expected a dense CPU tensor.*{kind}"):
            meta_twin(cfg).load_state_dict({**sd, "codes": odd}, assign=True)
    twin = meta_twin(cfg)  # a Parameter in the file stays a buffer (assign=True installs it)
    twin.load_state_dict({**sd, "scales": nn.Parameter(scales.clone(), requires_grad=False)},
                         assign=True)
    assert not list(twin.parameters()) and not twin(torch.tensor([1])).requires_grad


def test_unpickled_module_checked():
    q = QuantEmbedding.from_embedding(nn.Embedding(12, 40), CONFIGS["w4g32"])

    def reload(edit):
        bad = copy.copy(q)
        bad.__dict__ = {**q.__dict__, "_buffers": dict(q._buffers)}
        edit(bad.__dict__)
        buf = io.BytesIO()
        torch.save(bad, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=False)

    assert torch.equal(reload(lambda d: None)(torch.tensor([3])), q(torch.tensor([3])))
    with pytest.raises(TypeError, match="config: a pickled QuantEmbedding"):
        reload(lambda d: d.update(config=pyquant.LUT2Config()))
    with pytest.raises(ValueError, match="codes: expected torch.uint8 of shape"):
        reload(lambda d: d.update(config=pyquant.WeightOnlyConfig(2, 32)))
    with pytest.raises(ValueError, match="scales: a pickled QuantEmbedding must hold"):
        reload(lambda d: d["_buffers"].pop("scales"))
    with pytest.raises(TypeError, match="_weight_dtype: expected a float dtype"):
        reload(lambda d: d.update(_weight_dtype=torch.int64))
    with pytest.raises(ValueError, match="embedding_dim: expected an int"):
        reload(lambda d: d.update(embedding_dim=-4))
    with pytest.raises(ValueError, match="_awaiting_load"):
        reload(lambda d: d.update(_awaiting_load={"weight"}))


def test_save_and_load_quantized(tmp_path):
    torch.manual_seed(3)
    m = Tiny()
    pyquant.quantize_(m, pyquant.WeightOnlyConfig(4, 32))
    pyquant.quantize_(m, pyquant.WeightOnlyConfig(2, 64), filter_fn=embedding_filter)
    path = tmp_path / "tiny.safetensors"
    pyquant.save_quantized(m, path)
    with torch.device("meta"):
        fresh = Tiny()
    fresh.scaled.to_empty(device="cpu").load_state_dict(m.scaled.state_dict())
    pyquant.load_quantized_(fresh, path, strict=False)
    assert isinstance(fresh.tok, QuantEmbedding) and fresh.tok.config == m.tok.config
    assert type(fresh.scaled) is Scaled
    x = torch.randint(0, 64, (2, 16))
    assert torch.equal(fresh(x), m(x))
    # the wrong config for a plain state dict: refused before the model changes
    with torch.device("meta"):
        other = Tiny()
    with pytest.raises(ValueError, match=r"tok.codes: expected torch.uint8 of shape \[64, 24\]"):
        pyquant.load_quantized_(other, m.state_dict(), pyquant.WeightOnlyConfig(4, 32))
    assert type(other.tok) is nn.Embedding and type(other.head) is nn.Linear
    other.tok.max_norm = 1.0  # a table that cannot be quantized: refused before any change
    with pytest.raises(ValueError, match="layer 'tok': max_norm"):
        pyquant.load_quantized_(other, path)
    assert type(other.tok) is nn.Embedding and type(other.head) is nn.Linear
    other.tok.max_norm = None
    with pytest.raises(ValueError, match="layer 'tok': config: an embedding table"):
        pyquant.load_quantized_(other, {k: v for k, v in m.state_dict().items()
                                        if k.startswith("tok.")}, pyquant.SparqConfig())


def test_compile_and_export():
    """Lookups are plain torch ops: one graph under torch.compile, and torch.export records them
    (no numpy call frozen as a constant); an exported table still refuses a bad index."""
    q = QuantEmbedding.from_embedding(nn.Embedding(100, 64), CONFIGS["w4g32"])
    idx = torch.randint(0, 100, (3, 5), generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.compile(q, fullgraph=True)(idx), q(idx))
    exported = torch.export.export(q, (idx,)).module()
    assert torch.equal(exported(idx), q(idx))
    assert torch.equal(exported(idx.flip(0)), q(idx.flip(0)))
    with pytest.raises(Exception, match="index out of range|out of bounds"):
        exported(torch.full((3, 5), 100))


# ---------------------------------------------------------------------------- nn.EmbeddingBag
def bag_reference(q, bag_kwargs, *args, **kwargs):
    """F.embedding_bag over the dequantized table (the float module's own reduction)."""
    return nn.functional.embedding_bag(args[0], reference_table(q), *args[1:], **kwargs,
                                       **bag_kwargs)


@pytest.mark.parametrize("name", ["int8", "w4g32", "w2g64"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("pad", [None, 3])
def test_bags_match_the_float_reduction(name, mode, pad):
    g = torch.Generator().manual_seed(5)
    bag = nn.EmbeddingBag(50, 70, mode=mode, padding_idx=pad, _weight=table(50, 70))
    q = pyquant.nn.QuantEmbeddingBag.from_embedding_bag(bag, CONFIGS[name])
    kw = dict(mode=mode, padding_idx=pad)
    flat = torch.randint(0, 50, (40,), generator=g)
    flat[[0, 7, 8]] = 3  # padding rows inside bags (excluded from sums and means)
    offsets = torch.tensor([0, 0, 5, 17, 17, 30])  # empty bags included
    assert torch.equal(q(flat, offsets), bag_reference(q, kw, flat, offsets))
    two_d = flat[:36].reshape(6, 6)
    assert torch.equal(q(two_d), bag_reference(q, kw, two_d))
    if mode == "sum":
        w = torch.rand(40, generator=g)
        assert torch.equal(q(flat, offsets, w), bag_reference(q, kw, flat, offsets, per_sample_weights=w))
    last = pyquant.nn.QuantEmbeddingBag.from_embedding_bag(
        nn.EmbeddingBag(50, 70, mode=mode, include_last_offset=True, _weight=table(50, 70)),
        CONFIGS[name])
    ends = torch.cat([offsets, torch.tensor([40])])
    assert torch.equal(last(flat, ends), bag_reference(last, dict(mode=mode), flat, ends,
                                                       include_last_offset=True))
    assert q(flat[:0], torch.tensor([0, 0])).shape == (2, 70)
    with pytest.raises(IndexError, match=r"\[0, 50\)"):
        q(torch.tensor([1, 50]), torch.tensor([0]))


class Rec(nn.Module):
    """A DLRM-like recommender: two bag tables and an MLP."""

    def __init__(self):
        super().__init__()
        self.users = nn.EmbeddingBag(500, 64, mode="sum")
        self.items = nn.EmbeddingBag(300, 64, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 1))

    def forward(self, u, uo, i, io):
        return self.mlp(torch.cat([self.users(u, uo), self.items(i, io)], 1))


def test_bags_in_a_recommender(tmp_path):
    """quantize_ the recommender's MLP, then its tables; the saved model loads without its
    weights to the same bits, and a pickled one too."""
    torch.manual_seed(6)
    m = Rec().eval()
    args = (torch.randint(0, 500, (20,)), torch.tensor([0, 4, 9, 15]),
            torch.randint(0, 300, (12,)), torch.tensor([0, 3, 6, 9]))
    with torch.no_grad():
        ref = m.users(*args[:2])
    pyquant.quantize_(m, pyquant.Int8Config(act_bits=8), filter_fn=pyquant.nn.every_layer_filter)
    pyquant.quantize_(m, pyquant.WeightOnlyConfig(4, 32), filter_fn=embedding_filter)
    assert isinstance(m.users, pyquant.nn.QuantEmbeddingBag) and m.items.mode == "mean"
    assert nn.functional.cosine_similarity(m.users(*args[:2]), ref).min() > 0.99
    out = m(*args)
    path = tmp_path / "rec.safetensors"
    pyquant.save_quantized(m, path)
    with torch.device("meta"):
        fresh = Rec().eval()
    pyquant.load_quantized_(fresh, path)
    assert isinstance(fresh.users, pyquant.nn.QuantEmbeddingBag) and fresh.items.mode == "mean"
    assert torch.equal(fresh(*args), out)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(*args), out)


def test_bag_arguments_checked():
    """Offsets torch's CPU kernel would read past or misread, per-sample weights of another
    kind, and padding_idx as nn.Embedding normalizes it (negative: from the end)."""
    bag = nn.EmbeddingBag(30, 8, mode="sum", padding_idx=-1, _weight=table(30, 8))
    q = pyquant.nn.QuantEmbeddingBag.from_embedding_bag(bag, CONFIGS["int8"])
    x = torch.tensor([1, 29, 5, 7, 29, 3])
    assert q.padding_idx == 29
    assert torch.equal(q(x, torch.tensor([0, 3])), bag_reference(q, dict(mode="sum", padding_idx=29),
                                                                  x, torch.tensor([0, 3])))
    direct = pyquant.nn.QuantEmbeddingBag(30, 8, CONFIGS["int8"], table(30, 8), padding_idx=-1,
                                          mode="sum")
    assert direct.padding_idx == 29
    for bad in (30, -31, True, 2.0):
        with pytest.raises(ValueError, match="padding_idx: expected None or a row index"):
            pyquant.nn.QuantEmbeddingBag(30, 8, CONFIGS["int8"], table(30, 8), padding_idx=bad)
    for offsets in (torch.tensor([], dtype=torch.long), torch.tensor([1, 3]),
                    torch.tensor([0, 4, 2]), torch.tensor([0, 7]), torch.tensor([0, -3])):
        with pytest.raises(ValueError, match="offsets: expected"):
            q(x, offsets)
    with pytest.raises(TypeError, match="offsets: expected a tensor"):
        q(x)
    with pytest.raises(ValueError, match="offsets: expected None for 2-D input"):
        q(x.reshape(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="per_sample_weights: expected a float tensor"):
        q(x, torch.tensor([0]), torch.ones(6, dtype=torch.long))
    last = pyquant.nn.QuantEmbeddingBag(30, 8, CONFIGS["int8"], table(30, 8), mode="max",
                                        include_last_offset=True)
    with pytest.raises(ValueError, match="the last == 6"):
        last(x, torch.tensor([0]))
    # branch-free padding: one graph
    q2 = pyquant.nn.QuantEmbeddingBag(30, 8, CONFIGS["w4g32"], table(30, 8), padding_idx=3,
                                      mode="mean")
    x2 = torch.tensor([[1, 3, 5], [3, 3, 2]])
    assert torch.equal(torch.compile(q2, fullgraph=True)(x2), q2(x2))
