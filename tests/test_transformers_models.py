"""quantize_ on real transformers architectures, as users run it: models built from small
configs (random weights, no download), every Linear/Conv2d/Conv1d/Conv1D converted, then forward,
generate, and a state-dict round trip. Each architecture here once broke or could break a
drop-in: T5 and ViT read ``layer.weight.dtype`` in every forward, GPT-2 stores its linears as
Conv1D, Llama ties its LM head to the embedding, Whisper and wav2vec2 mix convs and linears."""
from __future__ import annotations

import copy
import itertools
import io
import warnings

import pytest
import torch
import torch.nn.functional as F

import pyquant
from pyquant.nn.conv_gain import worth_converting as conv_worth_converting

T = pytest.importorskip("transformers")

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             vocab_size=256)


def _llama():
    return T.LlamaForCausalLM(T.LlamaConfig(**SMALL, num_key_value_heads=2, tie_word_embeddings=True))


def _gpt2():
    return T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=256,
                                          bos_token_id=0, eos_token_id=0))


def _t5():
    return T.T5ForConditionalGeneration(T.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4,
                                                   d_kv=16, vocab_size=256))


def _vit():
    return T.ViTModel(T.ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, image_size=32, patch_size=8))


def _whisper():
    return T.WhisperModel(T.WhisperConfig(
        d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256,
        num_mel_bins=16, max_source_positions=32, max_target_positions=32, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1))


def _wav2vec2():  # a Conv1d feature encoder (the stem, K = 10, stays float; the next two are wide
    # enough for quantize_: 96 x 3 x 96) and a grouped, weight-norm parametrized positional conv
    # (2 groups of 48 channels, K = 16 x 48)
    return T.Wav2Vec2Model(T.Wav2Vec2Config(
        hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=(96, 96, 96), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2))


def _ids(*shape):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1))


MODELS = {
    "llama": (_llama, lambda: dict(input_ids=_ids(2, 12))),
    "gpt2": (_gpt2, lambda: dict(input_ids=_ids(2, 12))),
    "t5": (_t5, lambda: dict(input_ids=_ids(2, 12), decoder_input_ids=_ids(2, 5))),
    "vit": (_vit, lambda: dict(pixel_values=torch.randn(2, 3, 32, 32))),
    "whisper": (_whisper, lambda: dict(input_features=torch.randn(2, 16, 64),
                                       decoder_input_ids=_ids(2, 5))),
    "wav2vec2": (_wav2vec2, lambda: dict(input_values=torch.randn(2, 800))),
}
CONFIGS = [pytest.param(pyquant.Int8Config(), 0.999, id="int8"),
           pytest.param(pyquant.WeightOnlyConfig(4, 32), 0.95, id="w4g32"),
           pytest.param(pyquant.SparqConfig(), 0.99, id="sparq")]


def _out(o):
    return o.logits if getattr(o, "logits", None) is not None else o.last_hidden_state


@pytest.mark.parametrize("config,min_cos", CONFIGS)
@pytest.mark.parametrize("name", list(MODELS))
def test_transformers_model_quantized(name, config, min_cos):
    build, inputs = MODELS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (transformers' config notes on the tiny vocabularies)
        model = build().eval()
    x = inputs()
    with torch.no_grad():
        ref = _out(model(**x))
        q = pyquant.quantize_(copy.deepcopy(model), config)
        left = [n for n, m in q.named_modules()
                if isinstance(m, (torch.nn.Linear, torch.nn.MultiheadAttention))
                or (isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d)) and conv_worth_converting(m))
                or type(m).__name__ == "Conv1D"]
        assert not left and any(isinstance(m, pyquant.nn.QuantLinear) for m in q.modules())
        if name == "wav2vec2":  # (its feature encoder and positional conv on the kernels)
            assert sum(isinstance(m, pyquant.nn.QuantConv1d) for m in q.modules()) >= 2
            assert any(isinstance(m, pyquant.nn.QuantGroupedConv1d) for m in q.modules())
        y = _out(q(**x))
        assert F.cosine_similarity(y.flatten(), ref.flatten(), 0) > min_cos
        if hasattr(q, "generate") and "input_ids" in x and "decoder_input_ids" not in x:
            out = q.generate(x["input_ids"][:1], max_new_tokens=3, do_sample=False)
            assert out.shape == (1, x["input_ids"].shape[1] + 3)
        buf = io.BytesIO()
        torch.save(q.state_dict(), buf)
        buf.seek(0)
        fresh = pyquant.quantize_(copy.deepcopy(model), config)
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        assert torch.equal(_out(fresh(**x)), y)


# ----------------------------------------------------------------------------- mixture of experts
def _mixtral():
    return T.MixtralForCausalLM(T.MixtralConfig(**SMALL, num_key_value_heads=2, num_local_experts=4,
                                                num_experts_per_tok=2))


def _gpt_oss():  # experts stored transposed, gate/up interleaved, with biases and a clamped gate
    return T.GptOssForCausalLM(T.GptOssConfig(**SMALL, num_key_value_heads=2, num_local_experts=4,
                                              num_experts_per_tok=2, head_dim=16,
                                              layer_types=["full_attention", "sliding_attention"]))


@pytest.mark.parametrize("config,min_cos", CONFIGS[:2])
@pytest.mark.parametrize("impl", ["eager", "grouped_mm"])
@pytest.mark.parametrize("build", [_mixtral, _gpt_oss], ids=["mixtral", "gpt-oss"])
def test_moe_experts_quantized(build, impl, config, min_cos):
    """transformers >= 5 keeps MoE experts as 3-D parameters, not nn.Linear: quantize_ converts
    each block to a QuantExperts (one QuantLinear per expert and projection), whatever experts
    implementation the float model was set to."""
    from pyquant.nn.experts import is_experts

    torch.manual_seed(0)
    model = build().eval()
    if not any(p.dim() == 3 for p in model.parameters()):
        pytest.skip("this transformers keeps experts as nn.Linear modules (quantize_ converts those)")
    assert any(is_experts(m) for m in model.modules())
    model.config._experts_implementation = impl
    x = dict(input_ids=_ids(2, 12))
    with torch.no_grad():
        ref = model(**x).logits
        q = pyquant.quantize_(copy.deepcopy(model), config)
        assert sum(isinstance(m, pyquant.nn.QuantExperts) for m in q.modules()) == 2
        assert not [n for n, p in q.named_parameters() if p.dim() == 3]  # no float expert left
        y = q(**x).logits
        assert F.cosine_similarity(y.flatten(), ref.flatten(), 0) > min_cos - 0.01
        assert q.generate(x["input_ids"][:1], max_new_tokens=3, do_sample=False).shape == (1, 15)
        buf = io.BytesIO()
        torch.save(q.state_dict(), buf)
        buf.seek(0)
        fresh = pyquant.quantize_(copy.deepcopy(model), config)
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        assert torch.equal(fresh(**x).logits, y)


def _experts_block(module_name: str, cls_name: str, config):
    mod = pytest.importorskip(f"transformers.models.{module_name}.modeling_{module_name}")
    cls = getattr(mod, cls_name, None)
    if cls is None:
        pytest.skip(f"this transformers has no {cls_name}")
    return cls(config)


BLOCKS = {  # (module, class, config): a plain one, one stored transposed with biases, interleaved
    # gate/up and a clamped gate, and one without a gate
    "mixtral": ("mixtral", "MixtralExperts", lambda: T.MixtralConfig(
        hidden_size=64, intermediate_size=32, num_local_experts=5)),
    "gpt-oss": ("gpt_oss", "GptOssExperts", lambda: T.GptOssConfig(
        hidden_size=64, intermediate_size=32, num_local_experts=5, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16)),
    "nemotron-h": ("nemotron_h", "NemotronHExperts", lambda: T.NemotronHConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, n_routed_experts=5,
        moe_intermediate_size=32)),
}


@pytest.mark.parametrize("impl", ["eager", "grouped_mm"])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_quant_experts_is_the_block_on_its_dequantized_weights(name, impl, monkeypatch):
    """Exactly the float block's output once the block holds the dequantized weights and each
    QuantLinear multiplies by them in float: QuantExperts runs the experts contract (routing,
    transposed storage, biases, the block's own gating) as transformers does."""
    from pyquant.nn.experts import is_experts

    module_name, cls_name, config = BLOCKS[name]
    torch.manual_seed(3)
    cfg = config()
    cfg._experts_implementation = impl
    block = _experts_block(module_name, cls_name, cfg).eval()
    if not any(p.dim() == 3 for p in block.parameters()):
        pytest.skip(f"{cls_name} keeps its experts as nn.Linear here")
    assert is_experts(block)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3 if p.dim() == 3 else 0.1)
    q = pyquant.nn.QuantExperts(copy.deepcopy(block), pyquant.Int8Config())
    up, down = (torch.stack([m.dequantize_weight() for m in ms]) for ms in (q.up, q.down))
    if block.is_transposed:
        up, down = up.transpose(1, 2), down.transpose(1, 2)
    with torch.no_grad():
        getattr(block, "gate_up_proj" if block.has_gate else "up_proj").copy_(up)
        block.down_proj.copy_(down)
    monkeypatch.setattr(pyquant.nn.QuantLinear, "linear_rows", lambda m, x: F.linear(
        x, m.dequantize_weight(), m.bias))
    monkeypatch.setattr(pyquant.nn.QuantLinear, "grouped_args", lambda m, **kw: None)  # (per layer)
    hidden = torch.randn(7, 64)
    index = torch.stack([torch.randperm(5)[:2] for _ in range(7)])
    weights = torch.softmax(torch.randn(7, 2), -1)
    with torch.no_grad():
        for t in (7, 1):  # prefill and decode
            y, ref = q(hidden[:t], index[:t], weights[:t]), block(hidden[:t], index[:t], weights[:t])
            assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


# ----------------------------------------------------------------------------- loading without weights
def _saved_and_reloaded(model, build, path):
    """save_quantized(model), then load_quantized_ into build() made under
    accelerate.init_empty_weights(); the same module types, in order."""
    import accelerate

    pyquant.save_quantized(model, path)
    with accelerate.init_empty_weights():
        fresh = build().eval()
    loaded = pyquant.load_quantized_(fresh, path)
    assert [type(m).__name__ for m in loaded.modules()] == [type(m).__name__ for m in model.modules()]
    return loaded


@pytest.mark.parametrize("build", [_llama, _gpt2, _mixtral, _wav2vec2],
                         ids=["llama", "gpt2", "mixtral", "wav2vec2"])
def test_models_load_without_their_weights(build, tmp_path):
    """save_quantized, then load_quantized_ into the model built under
    accelerate.init_empty_weights() (parameters on meta, RoPE's buffers real): the same modules
    and bits (Llama's tied LM head, GPT-2's Conv1D, Mixtral's experts, wav2vec2's weight-norm
    parametrized grouped conv); under torch.device("meta") RoPE's inv_freq is named."""
    pytest.importorskip("accelerate")
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    saved = pyquant.quantize_(build().eval(), pyquant.WeightOnlyConfig(4, 32),
                              filter_fn=pyquant.nn.every_layer_filter)
    path = tmp_path / "m.safetensors"
    loaded = _saved_and_reloaded(saved, build, path)
    if build is _wav2vec2:
        x = torch.randn(1, 1600)
        with torch.no_grad():
            assert torch.equal(loaded(x).last_hidden_state, saved(x).last_hidden_state)
        return
    ids = torch.tensor([[1, 5, 9, 200, 17]])
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(loaded.generate(ids, **kw), saved.generate(ids, **kw))
    with torch.device("meta"):  # buffers on meta too: RoPE's inv_freq has no values
        bare = build().eval()
    if any(b.is_meta for b in bare.buffers()):
        with pytest.raises(ValueError, match="inv_freq|non-persistent"):
            pyquant.load_quantized_(bare, path)


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_models_with_quantized_embeddings(build, tmp_path):
    """quantize_ with embedding_filter after the linears (Llama's table tied to its LM head,
    GPT-2's token and position tables): generate runs, the logits stay close to the model with
    float tables, and the saved model loads without its weights to the same bits."""
    pytest.importorskip("accelerate")
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    model = pyquant.quantize_(build().eval(), pyquant.WeightOnlyConfig(4, 32))
    ids = torch.tensor([[1, 5, 9, 200, 17]])
    with torch.no_grad():
        before = model(ids).logits
    pyquant.quantize_(model, pyquant.Int8Config(act_bits=8),
                      filter_fn=pyquant.nn.embedding_filter)
    tables = [m for m in model.modules() if isinstance(m, pyquant.nn.QuantEmbedding)]
    assert len(tables) == (1 if build is _llama else 2)
    with torch.no_grad():
        after = model(ids).logits
    assert F.cosine_similarity(after.flatten(), before.flatten(), 0) > 0.999
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    out = model.generate(ids, **kw)
    loaded = _saved_and_reloaded(model, build, tmp_path / "m.safetensors")
    assert torch.equal(loaded.generate(ids, **kw), out)


def test_gptq_on_a_llama_shares_the_hessians_of_one_input(monkeypatch):
    """gptq_ on a decoder: q, k and v (and gate and up) read one tensor and share one Hessian;
    calibrated in runs (hessian_memory) it converts every linear too; both stay close to the
    float model (W4 g32)."""
    import pyquant.nn.gptq as gptq_module

    seen = []
    of = gptq_module._Hessians.of
    monkeypatch.setattr(gptq_module._Hessians, "of", lambda self: seen.append(of(self)) or seen[-1])
    torch.manual_seed(0)
    model = _llama().eval()
    ids = torch.randint(0, 256, (2, 24))
    batches = [{"input_ids": torch.randint(0, 256, (2, 24))} for _ in range(3)]
    with torch.no_grad():
        ref = model(ids).logits
    cfg = pyquant.WeightOnlyConfig(4, 32)
    for limit, sequential in itertools.product((None, 64 * 64 * 4 * 3), (True, False)):
        seen.clear()
        fresh = copy.deepcopy(model)
        blocks = [(b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj, b.mlp.gate_proj,
                   b.mlp.up_proj, b.mlp.down_proj) for b in fresh.model.layers]
        q = pyquant.nn.gptq_(fresh, cfg, batches, hessian_memory=limit, sequential=sequential)
        assert sum(isinstance(m, pyquant.nn.QuantLinear) for m in q.modules()) == 2 * 7 + 1
        hess = {k: h for d in seen for k, h in d.items()}
        for qp, kp, vp, gate, up, down in blocks:
            assert hess[qp] is hess[kp] is hess[vp]
            assert hess[gate] is hess[up] and hess[down] is not hess[up]
        # (a pass per block and one for lm_head; in runs: q k v | o gate up | down, per block; lm_head)
        assert len(seen) == (7 if limit else 3 if sequential else 1)
        with torch.no_grad():
            assert F.cosine_similarity(q(ids).logits.flatten(), ref.flatten(), dim=0) > 0.98


def test_sequential_gptq_on_a_llama_is_gptq_decoder_layer_by_layer():
    """gptq_'s default on a decoder (here inside a user's wrapper, with a padding mask): each
    decoder layer calibrated from the arguments the model gives it (position embeddings, mask; no
    KV cache: use_cache is off in the config meanwhile) on the layers before it as quantized, then
    lm_head: the same bits as gptq_ called one decoder layer at a time."""
    class Wrapped(torch.nn.Module):  # (a user's wrapper: its forward takes no use_cache)
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids, attention_mask=attention_mask).logits

    torch.manual_seed(0)
    model = _llama().eval()
    assert model.config.use_cache
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1, 17:] = 0  # (padding)
    batches = [(torch.randint(0, 256, (2, 24)), mask) for _ in range(3)]
    cfg = pyquant.WeightOnlyConfig(4, 32)
    seq = pyquant.nn.gptq_(Wrapped(copy.deepcopy(model)), cfg, batches)
    assert model.config.use_cache and seq.lm.config.use_cache  # (restored)
    by_hand = Wrapped(copy.deepcopy(model))
    for prefix in ("lm.model.layers.0.", "lm.model.layers.1.", "lm.lm_head"):
        by_hand = pyquant.nn.gptq_(by_hand, cfg, batches, sequential=False,
                                   filter_fn=lambda m, fqn, p=prefix: fqn.startswith(p))
    packed = [[m.packed for m in q.modules() if isinstance(m, pyquant.nn.QuantLinear)] for q in (seq, by_hand)]
    assert len(packed[0]) == 15 and all(torch.equal(a, b) for a, b in zip(*packed))


def test_sequential_gptq_converts_moe_experts_with_their_decoder_layer():
    """A Mixtral's experts blocks (round-to-nearest: each expert sees only its routed tokens) are
    converted with their decoder layer, so the next layer is calibrated on them quantized."""
    torch.manual_seed(0)
    model = _mixtral().eval()
    batches = [{"input_ids": torch.randint(0, 256, (2, 24))} for _ in range(2)]
    cfg = pyquant.WeightOnlyConfig(4, 32)
    seq = pyquant.nn.gptq_(copy.deepcopy(model), cfg, batches)
    by_hand = copy.deepcopy(model)
    for prefix in ("model.layers.0.", "model.layers.1.", "lm_head"):
        by_hand = pyquant.nn.gptq_(by_hand, cfg, batches, sequential=False,
                                   filter_fn=lambda m, fqn, p=prefix: fqn.startswith(p))
    packed = [[m.packed for m in q.modules() if isinstance(m, pyquant.nn.QuantLinear)] for q in (seq, by_hand)]
    assert any(isinstance(m, pyquant.nn.QuantExperts) for m in seq.modules())
    assert len(packed[0]) == len(packed[1]) > 0 and all(torch.equal(a, b) for a, b in zip(*packed))
