"""dequantize_ (and transformers' model.dequantize()): every quantized layer back to the float
module it came from, holding the weights the quantized layer multiplied by, with the float
module's structure and state-dict keys."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pyquant
from pyquant.nn import QuantGRU, QuantLinear

CONFIGS = [pyquant.Int8Config(act_bits=8), pyquant.WeightOnlyConfig(4, 32)]
# (torch's own note when an LSTM with projections runs without oneDNN)
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


def _layers():
    torch.manual_seed(0)
    return {
        "linear": (nn.Linear(40, 24), lambda: torch.randn(3, 40)),
        "linear-no-bias": (nn.Linear(40, 24, bias=False), lambda: torch.randn(3, 40)),
        "conv2d": (nn.Conv2d(16, 64, 3, stride=2, padding=1), lambda: torch.randn(2, 16, 9, 9)),
        "conv1d": (nn.Conv1d(16, 64, 5, dilation=2), lambda: torch.randn(2, 16, 30)),
        "grouped-conv2d": (nn.Conv2d(128, 128, 3, padding=1, groups=2),
                           lambda: torch.randn(1, 128, 6, 6)),
        "grouped-conv1d": (nn.Conv1d(128, 128, 3, groups=2), lambda: torch.randn(1, 128, 12)),
        "conv-transpose2d": (nn.ConvTranspose2d(64, 16, 4, stride=2, padding=1, output_padding=1),
                             lambda: torch.randn(1, 64, 5, 5)),
        "conv-transpose1d": (nn.ConvTranspose1d(64, 16, 4, stride=2),
                             lambda: torch.randn(1, 64, 9)),
        "embedding": (nn.Embedding(50, 32, padding_idx=3), lambda: torch.tensor([[1, 3, 49]])),
        "embedding-bag": (nn.EmbeddingBag(50, 32, mode="max"),
                          lambda: torch.tensor([[1, 2, 49], [0, 7, 7]])),
    }


def _quantized(module, config):
    tables = isinstance(module, (nn.Embedding, nn.EmbeddingBag))
    return pyquant.quantize_(nn.Sequential(copy.deepcopy(module)), config, filter_fn=(
        pyquant.nn.embedding_filter if tables else pyquant.nn.every_layer_filter))[0]


def _close(a, b, rel=0.03):
    scale = b.abs().max()
    assert (a - b).abs().max() <= rel * scale, ((a - b).abs().max(), scale)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("kind", list(_layers()))
def test_each_layer_back_to_its_float_module(kind, config):
    module, make_x = _layers()[kind]
    q = _quantized(module, config)
    assert type(q) is not type(module)
    expected = q.dequantize_weight().clone()
    x = make_x()
    with torch.no_grad():
        yq = q(x)
    f = pyquant.dequantize_(q)
    assert type(f) is type(module)
    sd, ref = f.state_dict(), module.state_dict()
    assert list(sd) == list(ref)
    assert all(sd[k].shape == ref[k].shape and sd[k].dtype == ref[k].dtype for k in ref)
    assert torch.equal(f.weight, expected)
    for attr in ("stride", "padding", "dilation", "groups", "output_padding", "padding_idx",
                 "mode"):
        assert getattr(f, attr, None) == getattr(module, attr, None), attr
    with torch.no_grad():
        y = f(x)
    if kind.startswith("embedding"):
        assert torch.equal(y, yq)  # (a table lookup: the same rows exactly)
    else:
        _close(y, yq)  # (only the activations' quantization differs)
    f.load_state_dict(module.state_dict())  # (a float checkpoint of the architecture loads)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("kw", [dict(), dict(add_bias_kv=True, batch_first=True),
                                dict(kdim=24, vdim=40, bias=False)],
                         ids=["plain", "bias-kv", "kdim-vdim"])
def test_multihead_attention(kw, config):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, **kw).eval()
    q = _quantized(mha, config)
    bf = kw.get("batch_first", False)
    shape = (2, 5) if bf else (5, 2)
    x = torch.randn(*shape, 32)
    k, v = torch.randn(*shape, kw.get("kdim", 32)), torch.randn(*shape, kw.get("vdim", 32))
    with torch.no_grad():
        yq, wq = q(x, k, v)
    f = pyquant.dequantize_(q)
    assert type(f) is nn.MultiheadAttention
    assert {n: t.shape for n, t in f.state_dict().items()} == \
        {n: t.shape for n, t in mha.state_dict().items()}
    want = [q.q_proj.dequantize_weight(), q.k_proj.dequantize_weight(),
            q.v_proj.dequantize_weight()]
    got = f.in_proj_weight.chunk(3) if f._qkv_same_embed_dim else [
        f.q_proj_weight, f.k_proj_weight, f.v_proj_weight]
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    with torch.no_grad():
        y, wf = f(x, k, v)
    _close(y, yq)
    _close(wf, wq)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("make", [
    lambda: nn.LSTM(24, 32, num_layers=2, bidirectional=True),
    lambda: nn.LSTM(24, 32, proj_size=16, batch_first=True),
    lambda: nn.GRU(24, 32, num_layers=2),
    lambda: nn.RNN(24, 32, nonlinearity="relu", bias=False),
], ids=["lstm-bidirectional", "lstm-proj", "gru", "rnn-relu"])
def test_recurrent_layers(make, config):
    torch.manual_seed(0)
    rnn = make().eval()
    q = _quantized(rnn, config)
    x = torch.randn(7, 3, 24)
    with torch.no_grad():
        yq, _ = q(x)
    f = pyquant.dequantize_(q)
    assert type(f) is type(rnn) and f.mode == rnn.mode
    assert {n: t.shape for n, t in f.state_dict().items()} == \
        {n: t.shape for n, t in rnn.state_dict().items()}
    with torch.no_grad():
        y, _ = f(x)
    _close(y, yq)  # (an LSTM's gates out of torch's order would be far off)


def test_a_model_keeps_its_float_layers_and_shared_layers_stay_shared():
    torch.manual_seed(0)
    shared = nn.Linear(64, 64)
    model = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), shared, nn.ReLU(), shared)
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    norm = model[1]
    assert isinstance(model[2], QuantLinear) and model[2] is model[4]
    out = pyquant.dequantize_(model)
    assert out is model and model[1] is norm
    assert type(model[0]) is nn.Linear and type(model[2]) is nn.Linear and model[2] is model[4]


def test_a_quantized_layer_itself_is_returned_as_float():
    q = QuantLinear.from_linear(nn.Linear(32, 8), pyquant.Int8Config())
    f = pyquant.dequantize_(q)
    assert type(f) is nn.Linear and torch.equal(f.weight, q.dequantize_weight())


def test_dtypes():
    model = nn.Sequential(nn.Linear(64, 32)).to(torch.bfloat16)
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    f = pyquant.dequantize_(copy.deepcopy(model))
    assert f[0].weight.dtype == torch.bfloat16 and f[0].bias.dtype == torch.bfloat16
    f = pyquant.dequantize_(model, dtype=torch.float32)
    assert f[0].weight.dtype == torch.float32
    with pytest.raises(TypeError, match="dtype"):
        pyquant.dequantize_(nn.Linear(2, 2), dtype=torch.int8)


def test_refusals_leave_the_model_as_it_was():
    with pytest.raises(TypeError, match="model"):
        pyquant.dequantize_("model")
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8))
    pyquant.quantize_(model, pyquant.Int8Config())  # (awaits its state dict)
    with pytest.raises(ValueError, match="not loaded yet"):
        pyquant.dequantize_(model)
    assert all(isinstance(m, QuantLinear) for m in model)
    torch.manual_seed(0)
    gru = QuantGRU.from_gru(nn.GRU(8, 16), 8, calib=torch.randn(4, 2, 8))
    model = nn.Sequential(QuantLinear.from_linear(nn.Linear(8, 8), pyquant.Int8Config()), gru)
    with pytest.raises(TypeError, match="QuantGRU"):
        pyquant.dequantize_(model)
    assert isinstance(model[0], QuantLinear)


# ---------------------------------------------------------------- transformers
def _tf():
    return pytest.importorskip("transformers")


def _gpt2():
    T = _tf()
    torch.manual_seed(0)
    return T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=256,
                                          bos_token_id=0, eos_token_id=0)).eval()


def _mixtral():
    T = _tf()
    torch.manual_seed(0)
    return T.MixtralForCausalLM(T.MixtralConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, num_local_experts=4,
        num_experts_per_tok=2)).eval()


IDS = torch.randint(3, 256, (2, 7), generator=torch.Generator().manual_seed(1))


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("make", [_gpt2, _mixtral], ids=["gpt2-conv1d", "mixtral-experts"])
def test_transformers_model_saves_and_loads_as_float(make, tmp_path):
    T = _tf()
    ref = make()
    model = pyquant.quantize_(copy.deepcopy(ref), pyquant.WeightOnlyConfig(4, 32))
    assert model.config.quantization_config is not None
    lq = _logits(model)
    pyquant.dequantize_(model)
    assert not any(type(m).__module__.startswith("pyquant") for m in model.modules())
    assert {n: t.shape for n, t in model.state_dict().items()} == \
        {n: t.shape for n, t in ref.state_dict().items()}
    lf = _logits(model)
    _close(lf, lq, rel=0.05)
    assert getattr(model.config, "quantization_config", None) is None
    model.save_pretrained(tmp_path)
    back = type(ref).from_pretrained(tmp_path).eval()
    assert not any(type(m).__module__.startswith("pyquant") for m in back.modules())
    torch.testing.assert_close(_logits(back), lf, rtol=0, atol=0)
    assert isinstance(back, T.PreTrainedModel)


def test_from_pretrained_then_model_dequantize(tmp_path):
    T = _tf()
    model = pyquant.quantize_(_gpt2(), pyquant.Int8Config(act_bits=8))
    model.save_pretrained(tmp_path / "q")
    loaded = T.AutoModelForCausalLM.from_pretrained(tmp_path / "q").eval()
    assert loaded.is_quantized
    lq = _logits(loaded)
    weight = loaded.transformer.h[0].attn.c_attn.dequantize_weight().t().clone()
    loaded.dequantize()
    assert not loaded.is_quantized and not hasattr(loaded, "hf_quantizer")
    c_attn = loaded.transformer.h[0].attn.c_attn
    assert type(c_attn).__name__ == "Conv1D" and torch.equal(c_attn.weight, weight)
    _close(_logits(loaded), lq, rel=0.05)
    loaded.save_pretrained(tmp_path / "f")
    back = T.AutoModelForCausalLM.from_pretrained(tmp_path / "f").eval()
    assert getattr(back.config, "quantization_config", None) is None
    torch.testing.assert_close(_logits(back), _logits(loaded), rtol=0, atol=0)


def test_eval_mode_and_dropout_stay_as_they_were():
    """A new module starts in training mode: the float MHA / LSTM would apply their dropout in an
    eval model."""
    torch.manual_seed(0)
    enc = nn.Sequential(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.3, batch_first=True),
                        nn.LSTM(32, 32, num_layers=2, dropout=0.3, batch_first=True)).eval()
    pyquant.quantize_(enc, pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    f = pyquant.dequantize_(enc)
    assert not any(m.training for m in f.modules())
    assert f[0].activation_relu_or_gelu == 1  # (torch's fast path on again: quantize_ had
    # turned it off)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        assert torch.equal(f[1](f[0](x))[0], f[1](f[0](x))[0])


def _conv_bn(conv_bias):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(64),
                          nn.ReLU(), nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64, affine=False))
    for bn in (model[1], model[4]):  # (trained statistics: an untrained BN hides a lost fold)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if bn.affine:
            bn.weight.data.uniform_(0.5, 2)
            bn.bias.data.uniform_(-1, 1)
    return model.eval()


@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_batchnorms_come_back(conv_bias):
    ref = _conv_bn(conv_bias)
    # (int8 weights: the training-mode check below compares with the original float model)
    model = pyquant.quantize_(copy.deepcopy(ref), pyquant.Int8Config(act_bits=8),
                              filter_fn=pyquant.nn.every_layer_filter)
    assert type(model[1]).__name__ == "FoldedIntoConv"
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        yq = model(x)
    f = pyquant.dequantize_(model)
    assert [type(m) for m in f] == [type(m) for m in ref]
    sd = f.state_dict()
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in ref.state_dict().items()}
    with torch.no_grad():
        y = f(x)
        _close(y, yq)
        fresh = _conv_bn(conv_bias)
        fresh.load_state_dict(sd)  # (the float architecture computes the same from the file)
        torch.testing.assert_close(fresh(x), y, rtol=1e-5, atol=1e-5)
        # training mode (fine-tuning): batch statistics, scaled by gamma as the original BN
        x = torch.randn(8, 16, 6, 6)
        _close(copy.deepcopy(f).train()(x), copy.deepcopy(ref).train()(x))


@pytest.mark.parametrize("style", ["parametrization", "hook"])
def test_weight_norm_comes_back(style):
    """wav2vec2's positional conv: a weight-normed grouped conv."""
    import warnings
    torch.manual_seed(0)

    def make():
        conv = nn.Conv1d(128, 128, 5, padding=2, groups=2)
        if style == "parametrization":
            return nn.utils.parametrizations.weight_norm(conv, "weight", dim=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return nn.utils.weight_norm(conv, "weight", dim=2)
    ref = make()
    # (a hook-style weight-normed module cannot be deep-copied: torch's limitation)
    q = pyquant.quantize_(nn.Sequential(make()), pyquant.Int8Config(act_bits=8),
                          filter_fn=pyquant.nn.every_layer_filter)[0]
    f = pyquant.dequantize_(q)
    sd = f.state_dict()
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in ref.state_dict().items()}
    torch.testing.assert_close(f.weight, q.dequantize_weight(), rtol=1e-6, atol=1e-7)
    fresh = make()
    fresh.load_state_dict(sd)
    x = torch.randn(1, 128, 9)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), f(x))


def test_dtype_casts_the_whole_model():
    model = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.Linear(64, 8)).to(torch.bfloat16)
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    f = pyquant.dequantize_(model, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in f.parameters())
    assert f(torch.randn(2, 64)).dtype == torch.float32


def test_trainable_after_inference_mode_and_embedding_options_kept():
    model = nn.Sequential(nn.Embedding(50, 32, sparse=True), nn.Linear(32, 32))
    bag = nn.EmbeddingBag(50, 32, scale_grad_by_freq=True)
    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=lambda m, fqn: fqn != "")
    bag = pyquant.quantize_(nn.Sequential(bag), pyquant.Int8Config(),
                            filter_fn=pyquant.nn.embedding_filter)[0]
    with torch.inference_mode():
        f, bag = pyquant.dequantize_(model), pyquant.dequantize_(bag)
    assert f[0].sparse and bag.scale_grad_by_freq and not bag.sparse
    f(torch.tensor([[1, 2, 2]])).sum().backward()
    assert f[1].weight.grad is not None and f[0].weight.grad is not None


def _hf_resnet():
    T = _tf()
    torch.manual_seed(0)
    model = T.ResNetForImageClassification(T.ResNetConfig(
        embedding_size=64, hidden_sizes=[128, 256], depths=[1, 1], layer_type="bottleneck",
        num_labels=10)).eval()
    for m in model.modules():  # (trained statistics: an untrained BN hides a lost fold)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _hf_wav2vec2():  # (a grouped positional conv with a weight-norm parametrization)
    T = _tf()
    torch.manual_seed(0)
    model = T.Wav2Vec2Model(T.Wav2Vec2Config(
        hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=(96, 96, 96), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).eval()
    return model, torch.randn(1, 1600, generator=torch.Generator().manual_seed(2))


@pytest.mark.filterwarnings("ignore:quantize_ left")
@pytest.mark.parametrize("make", [_hf_resnet, _hf_wav2vec2], ids=["resnet-folds", "wav2vec2-norm"])
def test_transformers_folds_and_weight_norm_save_as_float(make, tmp_path):
    ref, x = make()

    def out(model):
        with torch.no_grad():
            o = model(x)
        return o.logits if hasattr(o, "logits") else o.last_hidden_state
    model = pyquant.quantize_(copy.deepcopy(ref), pyquant.Int8Config(),
                              filter_fn=pyquant.nn.every_layer_filter)
    yq = out(model)
    pyquant.dequantize_(model)
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in ref.state_dict().items()}
    y = out(model)
    _close(y, yq, rel=0.05)
    model.save_pretrained(tmp_path)
    back = type(ref).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(out(back), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tables", [False, True], ids=["head-only", "head-and-table"])
def test_tied_lm_head_tied_again_where_the_values_agree(tables, tmp_path):
    T = _tf()
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True)).eval()
    def filter_fn(m, fqn):  # (embedding_filter alone converts the tables only)
        return pyquant.nn.default_filter(m, fqn) or (tables and pyquant.nn.embedding_filter(m, fqn))
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32), filter_fn=filter_fn)
    pyquant.dequantize_(model)
    head, table = model.lm_head.weight, model.model.embed_tokens.weight
    assert (head is table) == tables  # (a float table and a quantized head: values differ)
    logits = _logits(model)
    model.save_pretrained(tmp_path)
    back = T.LlamaForCausalLM.from_pretrained(tmp_path).eval()  # (untied: transformers keeps both)
    torch.testing.assert_close(_logits(back), logits, rtol=0, atol=0)


def test_a_part_dequantized_keeps_the_models_config():
    """The inner model shares the outer one's config: it lists the LM head, still quantized."""
    T = _tf()
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256)).eval()
    pyquant.quantize_(model, pyquant.Int8Config())
    pyquant.dequantize_(model.model)
    assert isinstance(model.lm_head, QuantLinear)
    assert model.config.quantization_config is not None
    pyquant.dequantize_(model)
    assert getattr(model.config, "quantization_config", None) is None
