"""transformers' save_pretrained / from_pretrained with pyquant-quantized models (pyquant/nn/hf.py):
a saved model loads back quantized with the same bits (not the float skeleton with random
weights), a float checkpoint quantizes as it loads, and a damaged checkpoint or config.json is a
clear error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import pyquant
from pyquant.nn import QuantLinear

T = pytest.importorskip("transformers")
from transformers.quantizers import auto as _auto  # noqa: E402

if not hasattr(_auto, "register_quantizer"):
    pytest.skip("transformers without register_quantizer (before 4.45)", allow_module_level=True)

from pyquant.nn import hf  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             vocab_size=256)


def _llama(tied=False):
    torch.manual_seed(0)
    return T.LlamaForCausalLM(T.LlamaConfig(**SMALL, num_key_value_heads=2,
                                            tie_word_embeddings=tied)).eval()


def _gpt2():
    torch.manual_seed(0)
    return T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=256,
                                          bos_token_id=0, eos_token_id=0)).eval()


def _bart():  # (encoder and decoder tables tied to a shared one, and the LM head)
    torch.manual_seed(0)
    return T.BartForConditionalGeneration(T.BartConfig(
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256,
        max_position_embeddings=64)).eval()


def _t5():  # (tied LM head; tie_word_embeddings also scales its decoder's output)
    torch.manual_seed(0)
    return T.T5ForConditionalGeneration(T.T5Config(
        d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, vocab_size=256,
        decoder_start_token_id=0)).eval()


def _mixtral():  # (experts blocks: QuantExperts)
    torch.manual_seed(0)
    return T.MixtralForCausalLM(T.MixtralConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, num_local_experts=4,
        num_experts_per_tok=2)).eval()


def _bert_mlm():  # (its MLM decoder's bias is tied to another parameter)
    torch.manual_seed(0)
    return T.BertForMaskedLM(T.BertConfig(**SMALL)).eval()


IDS = torch.randint(3, 256, (2, 7), generator=torch.Generator().manual_seed(1))
CONFIGS = [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32), pyquant.LUT2Config(),
           pyquant.SparqConfig()]


def _logits(model):
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=IDS, decoder_input_ids=IDS[:, :4]).logits
        return model(IDS).logits


@pytest.mark.parametrize("build", [_llama, lambda: _llama(tied=True), _gpt2, _bart, _t5,
                                   _bert_mlm],
                         ids=["llama", "llama-tied", "gpt2", "bart", "t5", "bert-mlm"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_save_pretrained_loads_back_quantized_with_the_same_bits(tmp_path, build, config):
    model = build()
    pyquant.quantize_(model, config)
    want = _logits(model)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "pyquant"
    assert set(saved["layers"]) == set(pyquant.nn.checkpoint.quantized_layers(model))
    loaded = type(model).from_pretrained(tmp_path)
    assert set(pyquant.nn.checkpoint.quantized_layers(loaded)) == set(saved["layers"])
    torch.testing.assert_close(_logits(loaded), want, rtol=0, atol=0)
    # saved again from the loaded model: the same file contents
    loaded.save_pretrained(tmp_path / "again")
    again = type(model).from_pretrained(tmp_path / "again")
    torch.testing.assert_close(_logits(again), want, rtol=0, atol=0)


def test_a_moe_model(tmp_path):
    model = _mixtral()
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    assert type(model.model.layers[0].mlp.experts).__name__ == "QuantExperts"
    model.save_pretrained(tmp_path)
    loaded = T.AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


@pytest.mark.parametrize("build, config, layer", [
    (_mixtral, pyquant.WeightOnlyConfig(4, 32), "model.layers.0.mlp.experts"),  # (legacy keys)
    (_llama, pyquant.Int8Config(), "model.embed_tokens"),
], ids=["experts", "table"])
def test_a_config_json_that_leaves_out_a_layer_is_refused(tmp_path, build, config, layer):
    model = build()
    pyquant.quantize_(model, config, filter_fn=lambda m, fqn: pyquant.nn.every_layer_filter(
        m, fqn) or pyquant.nn.embedding_filter(m, fqn))
    model.save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda q: q["layers"].pop(layer))
    with pytest.raises(ValueError, match=f"holds no {layer}"):
        type(model).from_pretrained(tmp_path)


@pytest.mark.parametrize("part", ["model.model.layers", "model.model.layers[0]", "model.model"])
def test_a_model_quantized_in_parts(tmp_path, part):
    model = _llama()
    pyquant.quantize_(eval(part, {"model": model}), pyquant.Int8Config())
    model.save_pretrained(tmp_path)  # (records what is quantized as it saves)
    loaded = T.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded.model.layers[0].mlp.up_proj, QuantLinear)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_mixed_configs_and_generate(tmp_path):
    model = _llama()
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(2, 32),
                      filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and ".mlp." in fqn)
    pyquant.quantize_(model, pyquant.Int8Config(act_bits=8))
    model.save_pretrained(tmp_path)
    loaded = T.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.model.layers[0].mlp.up_proj.config == pyquant.WeightOnlyConfig(2, 32)
    assert loaded.model.layers[0].self_attn.q_proj.config == pyquant.Int8Config(act_bits=8)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    out = loaded.generate(IDS[:1], max_new_tokens=4, do_sample=False)
    assert torch.equal(out, model.generate(IDS[:1], max_new_tokens=4, do_sample=False))


def test_a_head_models_checkpoint_loads_into_its_base_model_and_back(tmp_path):
    model = _llama()
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    model.save_pretrained(tmp_path / "lm")
    base = T.AutoModel.from_pretrained(tmp_path / "lm")  # (LlamaModel: no lm_head)
    assert isinstance(base.layers[0].mlp.up_proj, QuantLinear)
    with torch.no_grad():
        want = model.model(IDS).last_hidden_state
        torch.testing.assert_close(base(IDS).last_hidden_state, want, rtol=0, atol=0)
    base.save_pretrained(tmp_path / "base")  # (its config names its own layers)
    assert "layers.0.mlp.up_proj" in base.config.quantization_config.layers
    again = T.LlamaForCausalLM.from_pretrained(tmp_path / "base")  # (a new float lm_head)
    assert isinstance(again.model.layers[0].mlp.up_proj, QuantLinear)
    with torch.no_grad():
        torch.testing.assert_close(again.model(IDS).last_hidden_state, want, rtol=0, atol=0)


def _resnet():
    torch.manual_seed(0)
    return T.ResNetForImageClassification(T.ResNetConfig(
        embedding_size=64, hidden_sizes=[128, 256], depths=[1, 1], layer_type="bottleneck",
        num_labels=10)).eval()


@pytest.mark.parametrize("config", CONFIGS[:2], ids=lambda c: type(c).__name__)
def test_a_cnn_with_batchnorms_folded_into_its_convs(tmp_path, config):
    model = _resnet()
    with pytest.warns(UserWarning, match="few products"):
        pyquant.quantize_(model, config)
    folded = model.config.quantization_config.folded
    assert folded and all(isinstance(model.get_submodule(n), torch.nn.Identity) for n in folded)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x).logits
    model.save_pretrained(tmp_path)
    loaded = T.ResNetForImageClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, want, rtol=0, atol=0)
    assert loaded.config.quantization_config.folded == folded


@pytest.mark.parametrize("edit, match", [
    (lambda q: q.update(folded=["resnet.pooler"]), "'resnet.pooler' a BatchNorm folded"),
    (lambda q: q.update(folded=["resnet.embedder.embedder.normalization"]),  # (a float conv's)
     "holds no resnet.embedder.embedder.convolution.bias"),
    (lambda q: q.update(folded="resnet"), "quantization_config.folded: expected a list"),
    (lambda q: q["folded"].pop(), "holds no resnet.encoder.*normalization.weight"),
], ids=["not-a-batchnorm", "conv-not-quantized", "not-a-list", "left-out"])
def test_a_damaged_fold_list_is_a_clear_error(tmp_path, edit, match):
    model = _resnet()
    with pytest.warns(UserWarning, match="few products"):
        pyquant.quantize_(model, pyquant.Int8Config())
    model.save_pretrained(tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        T.ResNetForImageClassification.from_pretrained(tmp_path)


def test_float_convs_folded_too(tmp_path):  # (fold_batchnorm="all")
    model = _resnet()
    with pytest.warns(UserWarning, match="few products"):
        pyquant.quantize_(model, pyquant.Int8Config(), fold_batchnorm="all")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model.save_pretrained(tmp_path)
    loaded = T.ResNetForImageClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_models_whose_files_leave_out_weights(tmp_path):
    # Marian's sinusoidal positions are never saved (transformers' keys to ignore); a ViT
    # classifier's checkpoint has no pooler for ViTModel (transformers initialises it, as for a
    # float checkpoint); a config.json naming a layer the model lacks: its weights left out
    torch.manual_seed(0)
    marian = T.MarianMTModel(T.MarianConfig(
        d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256,
        max_position_embeddings=64, decoder_start_token_id=0, pad_token_id=1)).eval()
    pyquant.quantize_(marian, pyquant.Int8Config())
    marian.save_pretrained(tmp_path / "marian")
    loaded = T.MarianMTModel.from_pretrained(tmp_path / "marian")
    torch.testing.assert_close(_logits(loaded), _logits(marian), rtol=0, atol=0)
    vit = T.ViTForImageClassification(T.ViTConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
        image_size=32, patch_size=8)).eval()
    pyquant.quantize_(vit, pyquant.Int8Config())
    vit.save_pretrained(tmp_path / "vit")
    body = T.AutoModel.from_pretrained(tmp_path / "vit")
    assert isinstance(body.layers[0].attention.q_proj, QuantLinear)
    _saved(tmp_path / "llama")
    _edit_config(tmp_path / "llama", lambda q: q["layers"].update(
        {"model.nothing": q["layers"]["model.layers.0.mlp.up_proj"]}))
    T.LlamaForCausalLM.from_pretrained(tmp_path / "llama")


def test_a_checkpoint_loads_under_another_head(tmp_path):
    # (as transformers loads float checkpoints: the body's layers quantized as saved, the new
    # head float and initialised, the old head's weights left out)
    model = _llama()
    pyquant.quantize_(model, pyquant.Int8Config())
    model.save_pretrained(tmp_path)
    other = T.LlamaForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert isinstance(other.model.layers[0].mlp.up_proj, QuantLinear)
    assert type(other.score) is torch.nn.Linear
    with torch.no_grad():
        torch.testing.assert_close(other.model(IDS).last_hidden_state,
                                   model.model(IDS).last_hidden_state, rtol=0, atol=0)
    # (a layer of the body the other class lacks: BERT's pooler, absent under masked LM)
    torch.manual_seed(0)
    bert = T.BertForSequenceClassification(T.BertConfig(**SMALL)).eval()
    pyquant.quantize_(bert, pyquant.Int8Config())
    bert.save_pretrained(tmp_path / "bert")
    mlm = T.BertForMaskedLM.from_pretrained(tmp_path / "bert")
    assert isinstance(mlm.bert.encoder.layer[0].intermediate.dense, QuantLinear)


def test_bfloat16_model_and_shards(tmp_path):
    _llama().save_pretrained(tmp_path / "float")  # (as loaded: its rotary buffers stay float32)
    model = T.LlamaForCausalLM.from_pretrained(tmp_path / "float", dtype=torch.bfloat16)
    pyquant.quantize_(model, pyquant.WeightOnlyConfig(4, 32))
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 1
    loaded = T.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_weights_report_the_dtype_from_pretrained_loads_in(tmp_path):
    # (as the float layers would: T5 keeps its "wo" layers in float32 under float16, and casts
    # their input to their weight's dtype)
    model = _t5()
    pyquant.quantize_(model, pyquant.Int8Config())
    model.save_pretrained(tmp_path)
    half = T.T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float16)
    ffn = half.encoder.block[0].layer[1].DenseReluDense
    assert ffn.wi.weight.dtype == torch.float16 and ffn.wo.weight.dtype == torch.float32
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    full = T.T5ForConditionalGeneration.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    assert full.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    torch.testing.assert_close(_logits(full), _logits(model.to(torch.float32)), rtol=0, atol=0)


@pytest.mark.parametrize("config", CONFIGS[:2], ids=lambda c: type(c).__name__)
def test_a_float_checkpoint_quantizes_as_it_loads(tmp_path, config):
    model = _llama()
    model.save_pretrained(tmp_path)
    loaded = T.LlamaForCausalLM.from_pretrained(tmp_path,
                                                quantization_config=hf.PyquantConfig(config))
    pyquant.quantize_(model, config)
    assert isinstance(loaded.model.layers[0].mlp.up_proj, QuantLinear)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    loaded.save_pretrained(tmp_path / "q")  # and is saved as a pre-quantized checkpoint
    again = T.LlamaForCausalLM.from_pretrained(tmp_path / "q")
    torch.testing.assert_close(_logits(again), _logits(model), rtol=0, atol=0)


def test_pyquant_config_checks_its_argument():
    with pytest.raises(TypeError, match="config: expected one of"):
        hf.PyquantConfig(torch.nn.Linear(2, 2))
    bad = hf.PyquantConfig({"type": "WeightOnlyConfig", "bits": 5})
    with pytest.raises(ValueError, match="quantization_config.config"):
        bad.pyquant_config()


def _saved(tmp_path, config=pyquant.WeightOnlyConfig(4, 32)):
    model = _llama()
    pyquant.quantize_(model, config)
    model.save_pretrained(tmp_path)
    return model


def _edit_config(tmp_path, edit):
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    edit(cfg["quantization_config"])
    path.write_text(json.dumps(cfg))


def _edit_tensors(tmp_path, edit):
    from safetensors.torch import load_file, save_file
    path = str(tmp_path / "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("edit, match", [
    (lambda q: q["layers"].update({"model.layers.0.mlp.up_proj": {"config": {"type": "Foo"},
                                                                  "weight_dtype": "float32"}}),
     "layer 'model.layers.0.mlp.up_proj': expected a config of type"),
    (lambda q: q["layers"]["model.layers.0.mlp.up_proj"]["config"].update(bits=7),
     "layer 'model.layers.0.mlp.up_proj'"),
    (lambda q: q["layers"]["model.layers.0.mlp.up_proj"].update(weight_dtype="int8"),
     "expected a weight_dtype"),
    (lambda q: q.update(layers={}), "names no quantized layer"),
    (lambda q: q["layers"].pop("model.layers.0.mlp.up_proj"),
     "holds no model.layers.0.mlp.up_proj.weight"),
    (lambda q: q.update(layers=[1]), "expected an object of layer names"),
], ids=["type", "bits", "dtype", "no-layers", "left-out", "not-a-dict"])
def test_a_damaged_config_json_is_a_clear_error(tmp_path, edit, match):
    _saved(tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        T.LlamaForCausalLM.from_pretrained(tmp_path)


def test_a_config_json_that_disagrees_with_the_weights_is_refused(tmp_path):
    # (the placeholders' shapes differ from the file's: transformers' own mismatch error)
    _saved(tmp_path)
    _edit_config(tmp_path, lambda q: q["layers"]["model.layers.0.mlp.up_proj"]["config"].update(
        group_size=64))
    with pytest.raises(RuntimeError, match="mismatched"):
        T.LlamaForCausalLM.from_pretrained(tmp_path)


def _tamper_header(tensors):
    packed = tensors["model.layers.0.mlp.up_proj.packed"]
    packed[8:12] = torch.tensor([255, 255, 0, 0], dtype=torch.uint8)  # (a shape field)


@pytest.mark.parametrize("edit, match", [
    (_tamper_header, "model.layers.0.mlp.up_proj.packed"),
    (lambda t: t["model.layers.0.mlp.up_proj.w_scale"].view(-1).__setitem__(3, float("inf")),
     "model.layers.0.mlp.up_proj.w_scale"),
    (lambda t: t.pop("model.layers.1.self_attn.o_proj.packed"),
     "holds no model.layers.1.self_attn.o_proj.packed"),
    (lambda t: t.pop("model.layers.1.self_attn.o_proj.w_scale"),
     "holds no model.layers.1.self_attn.o_proj.w_scale"),
], ids=["header", "scale", "missing-packed", "missing-scale"])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, edit, match):
    _saved(tmp_path)
    _edit_tensors(tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        T.LlamaForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("order", ["pyquant-first", "transformers-first"])
def test_import_pyquant_is_enough_in_a_fresh_process(tmp_path, order):
    model = _saved(tmp_path)
    torch.save((IDS, _logits(model)), tmp_path / "want.pt")
    imports = ("import pyquant\nimport transformers" if order == "pyquant-first"
               else "import transformers, transformers.modeling_utils\nimport pyquant")
    code = textwrap.dedent(f"""
        import torch
        {{imports}}
        m = transformers.AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})
        ids, want = torch.load({str(tmp_path / "want.pt")!r})
        with torch.no_grad():
            got = m(ids).logits
        assert type(m.model.layers[0].mlp.up_proj).__name__ == "QuantLinear"
        assert torch.equal(got, want)
        print("ok")
    """).replace("{imports}", imports)
    _run_fresh(code, tmp_path)


def test_a_quantized_model_still_pickles_whole(tmp_path):
    # (torch.save(model), multiprocessing: its config's quantization_config too)
    model = _llama()
    pyquant.quantize_(model, pyquant.Int8Config())
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert loaded.config.quantization_config.to_dict() == model.config.quantization_config.to_dict()
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_pyquant_config_as_a_fresh_script_writes_it(tmp_path):
    _llama().save_pretrained(tmp_path)
    _run_fresh(textwrap.dedent(f"""
        import pyquant, transformers
        m = transformers.AutoModelForCausalLM.from_pretrained(
            {str(tmp_path)!r}, quantization_config=pyquant.nn.hf.PyquantConfig(
                pyquant.WeightOnlyConfig(4, 32)))
        assert type(m.model.layers[0].mlp.up_proj).__name__ == "QuantLinear"
        print("ok")
    """), tmp_path)


@pytest.mark.parametrize("imports", ["import transformers, pyquant",
                                     "import pyquant, transformers",
                                     "import pyquant\nfrom pyquant.nn.hf import PyquantConfig\n"
                                     "import transformers"])
def test_quantize_a_torch_model_beside_transformers(tmp_path, imports):
    # (pyquant.nn.hf imports transformers' quantizers, whose import runs pyquant's hook while
    # pyquant.nn.hf is half made: it registers when done)
    code = textwrap.dedent("""
        import torch
        {imports}
        m = torch.nn.Sequential(torch.nn.Linear(64, 64))
        pyquant.quantize_(m, pyquant.Int8Config())
        assert type(m[0]).__name__ == "QuantLinear"
        cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                       num_attention_heads=4, vocab_size=256)
        lm = transformers.LlamaForCausalLM(cfg)
        pyquant.quantize_(lm, pyquant.Int8Config())
        from transformers.quantizers import auto
        assert "pyquant" in auto.AUTO_QUANTIZER_MAPPING
        assert lm.config.quantization_config.quant_method == "pyquant"
        print("ok")
    """).replace("{imports}", imports)
    _run_fresh(code, tmp_path)


def _run_fresh(code: str, cwd) -> None:
    """code in a new Python process with the pyquant this one runs (whatever the working
    directory); it prints "ok"."""
    root = os.path.dirname(os.path.dirname(pyquant.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=cwd, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
