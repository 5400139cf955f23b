"""Loading a quantized model from its state dict alone (pyquant/nn/checkpoint.py): quantize_ on
weights on the meta device makes layers that await their state dict, and load_quantized_ loads a
file into a model built without its weights. Every case: the loaded model gives the same bits as
the model that was saved."""
from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import pyquant
from pyquant.nn import load_quantized_

EVERY = pyquant.nn.every_layer_filter
CONFIGS = {
    "int8": pyquant.Int8Config(act_bits=8),
    "int8-a7": pyquant.Int8Config(act_bits=7),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "w2g64": pyquant.WeightOnlyConfig(2, 64),
    "lut2": pyquant.LUT2Config(),
    "sparq": pyquant.SparqConfig(),
    "sparq24": pyquant.SparqConfig(sparse24=True),
}


class Mixed(nn.Module):
    """One of each layer quantize_ converts: a conv + BN (folded), a grouped conv, a Conv1d,
    attention, a bidirectional LSTM with projections, linears."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 64, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(64)
        self.grouped = nn.Conv2d(64, 96, 3, groups=2)
        self.conv1d = nn.Conv1d(96, 64, 3)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.lstm = nn.LSTM(64, 48, num_layers=2, bidirectional=True, proj_size=32, batch_first=True)
        self.head = nn.Sequential(nn.Linear(64, 80), nn.ReLU(), nn.Linear(80, 10))

    def forward(self, x):
        y = self.grouped(torch.relu(self.bn(self.conv(x))))  # [B, 96, 6, 6]
        y = self.conv1d(y.flatten(2)).transpose(1, 2)         # [B, 34, 64]
        y = y + self.attn(y, y, y, need_weights=False)[0]
        z, _ = self.lstm(y)                                   # [B, 34, 2 x 32]
        return self.head(y[:, -1] + z[:, -1])


def _mixed(seed: int = 0) -> Mixed:
    torch.manual_seed(seed)
    model = Mixed()
    with torch.no_grad():
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.2, 0.2)
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _quantize(model, config, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyquant.quantize_(model, config, **kw)


def _saved(model) -> dict:
    """The state dict as it comes back from a file (torch.save / torch.load)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _on_meta(build):
    with torch.device("meta"):
        return build().eval()


X = torch.randn(2, 8, 8, 8)


@pytest.mark.parametrize("name", CONFIGS)
def test_load_quantized_gives_the_saved_models_bits(name):
    config = CONFIGS[name]
    saved = _quantize(_mixed(), config, filter_fn=EVERY)
    with torch.no_grad():
        want = saved(X)
    sd = _saved(saved)
    loaded = load_quantized_(_on_meta(Mixed), sd, config)
    assert isinstance(loaded.bn, nn.Identity) and isinstance(loaded.attn,
                                                            pyquant.nn.QuantMultiheadAttention)
    with torch.no_grad():
        assert torch.equal(loaded(X), want)
    got = loaded.state_dict()
    assert got.keys() == sd.keys()
    for k in sd:  # (a dynamic act_range is NaN)
        torch.testing.assert_close(got[k], sd[k], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", ["int8", "w4g32", "sparq24"])
def test_quantize_on_meta_then_load_state_dict(name):
    """torchao's flow: quantize_ the meta model, then load_state_dict (assign=True, or copied into
    the layers' own buffers); before the load every quantized layer refuses to run."""
    config = CONFIGS[name]
    saved = _quantize(_mixed(), config, filter_fn=EVERY)
    with torch.no_grad():
        want = saved(X)
    sd = _saved(saved)
    for assign in (True, False):
        if assign:
            model = _on_meta(Mixed)
        else:  # copied into the layers' own buffers: the float layers' values must be real
            model = _mixed(seed=1)
            for m in (model.conv, model.grouped, model.conv1d, model.attn, model.lstm, model.head):
                m.to("meta")
        model = _quantize(model, config, filter_fn=EVERY)
        with pytest.raises(ValueError, match="not loaded yet"):
            model(X)
        for layer in (model.conv, model.head[0]):
            with pytest.raises(ValueError, match="not loaded yet"):
                layer.dequantize_weight()
        model.load_state_dict(sd, assign=assign)
        with torch.no_grad():
            assert torch.equal(model(X), want)


@pytest.mark.parametrize("name", CONFIGS)
def test_a_layer_awaiting_its_weights_holds_a_valid_zero_weight(name):
    """Its packed buffer is the header over zero bytes (pages the OS maps on first write): a
    valid weight for the op, payload included; it is never saved."""
    with torch.device("meta"):
        layer = nn.Linear(300, 70)
    q = pyquant.nn.QuantLinear.from_linear(layer, CONFIGS[name])
    info = pyquant._C.validate_packed(q.packed.numpy(), q.scheme.packed_op, "packed", payload=True)
    assert (info["n"], info["k"]) == (70, 300)
    assert q.unloaded_keys() == sorted(n for n, t in q._buffers.items() if t is not None)
    with pytest.raises(ValueError, match="no state to save"):  # (placeholders never reach a file)
        q.state_dict()


def test_every_layer_refuses_before_its_weights_load():
    model = _quantize(_on_meta(Mixed), CONFIGS["int8"], filter_fn=EVERY)
    y = torch.randn(2, 5, 64)
    calls = [lambda: model.conv(X), lambda: model.grouped(torch.randn(1, 64, 6, 6)),
             lambda: model.conv1d(torch.randn(1, 96, 9)), lambda: model.attn(y, y, y),
             lambda: model.lstm(y), lambda: model.head(torch.randn(3, 64))]
    for call in calls:
        with pytest.raises(ValueError, match="not loaded yet"):
            call()
    with pytest.raises(ValueError, match="not loaded yet"):
        torch.compile(model.head, backend="eager", fullgraph=False)(torch.randn(3, 64))


def test_files_of_both_formats(tmp_path):
    """Both formats load; the loaded model does not depend on the file afterwards (safetensors
    maps its file: truncating or rewriting it neither crashes the process nor changes weights)."""
    st = pytest.importorskip("safetensors.torch")
    config = CONFIGS["w4g32"]
    saved = _quantize(_mixed(), config, filter_fn=EVERY)
    with torch.no_grad():
        want = saved(X)
    torch.save(saved.state_dict(), tmp_path / "m.pt")
    st.save_file(saved.state_dict(), tmp_path / "m.safetensors")
    models = [load_quantized_(_on_meta(Mixed), path, config)
              for path in (tmp_path / "m.pt", str(tmp_path / "m.safetensors"))]
    for name in ("m.pt", "m.safetensors"):
        with open(tmp_path / name, "r+b") as f:
            f.truncate(100)
    with torch.no_grad():
        for loaded in models:
            assert torch.equal(loaded(X), want)
    for name, junk in (("junk.pt", b"not a zip file"), ("junk.safetensors", b"\x10" * 40)):
        (tmp_path / name).write_bytes(junk)
        with pytest.raises(ValueError, match="not a readable state dict file"):
            load_quantized_(_on_meta(Mixed), tmp_path / name, config)
        with pytest.raises(ValueError, match="not a readable state dict file|does not say"):
            load_quantized_(_on_meta(Mixed), tmp_path / name)  # (.pt: no configs to read)
    with pytest.raises(FileNotFoundError):
        load_quantized_(_on_meta(Mixed), tmp_path / "missing.pt", config)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(TypeError, match="expected a state dict"):
        load_quantized_(_on_meta(Mixed), tmp_path / "list.pt", config)
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        load_quantized_(_on_meta(Mixed), 3, config)


def test_save_quantized_keeps_each_layers_config(tmp_path):
    """save_quantized writes every quantized layer's config into the file's metadata: a model
    quantized by two quantize_ calls (W4 head, Int8 and 2:4 SPARQ elsewhere) loads without a
    config, each layer as it was; a file without configs needs one."""
    st = pytest.importorskip("safetensors.torch")
    model = _quantize(_mixed(), CONFIGS["w4g32"],
                      filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn.startswith("head."))
    model = _quantize(model, CONFIGS["sparq24"], filter_fn=lambda m, fqn: fqn == "lstm")
    model = _quantize(model, CONFIGS["int8-a7"], filter_fn=EVERY)
    with torch.no_grad():
        want = model(X)
    pyquant.save_quantized(model, tmp_path / "m.safetensors")
    loaded = pyquant.load_quantized_(_on_meta(Mixed), tmp_path / "m.safetensors")
    assert loaded.head[0].config == CONFIGS["w4g32"] and loaded.lstm.config == CONFIGS["sparq24"]
    assert loaded.attn.config == CONFIGS["int8-a7"] and loaded.grouped.config == CONFIGS["int8-a7"]
    with torch.no_grad():
        assert torch.equal(loaded(X), want)
    st.save_file(model.state_dict(), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="config: this state dict does not say"):
        load_quantized_(_on_meta(Mixed), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="does not say"):
        load_quantized_(_on_meta(Mixed), _saved(model))
    with pytest.raises(ValueError, match=r"expected a \.safetensors file"):
        pyquant.save_quantized(model, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="no quantized layer"):
        pyquant.save_quantized(_mixed(), tmp_path / "f.safetensors")


def test_save_quantized_with_tied_float_weights(tmp_path):
    pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)).eval()
    model[2].weight = model[0].weight  # tied, and left float
    q = _quantize(model, CONFIGS["int8"], filter_fn=lambda m, fqn: fqn == "1")
    pyquant.save_quantized(q, tmp_path / "t.safetensors")
    loaded = load_quantized_(_on_meta(lambda: nn.Sequential(*(nn.Linear(64, 64) for _ in range(3)))),
                             tmp_path / "t.safetensors")
    x = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))


def _entry(config: str, dtype: str = "float32") -> str:
    return f'{{"head.0": {{"config": {config}, "weight_dtype": "{dtype}"}}}}'


@pytest.mark.parametrize("metadata, match", [
    ("{not json", "not JSON"),
    ('["int8"]', "expected an object"),
    (_entry('{"type": "os.system"}'), "expected a config of type"),
    (_entry('{"type": "WeightOnlyConfig", "bits": 3, "group_size": 32}'), "bits"),
    (_entry('{"type": "Int8Config", "act_bits": 8, "evil": 1}'), "head.0"),
    (_entry('{"type": "Int8Config", "act_bits": 8}', "int8"), "weight_dtype"),
    # (list- or dict-valued fields: unhashable, once a bare TypeError naming nothing)
    (_entry('{"type": ["Int8Config"], "act_bits": 8}'), "head.0.*expected a config of type"),
    (_entry('{"type": {"a": 1}}'), "head.0.*expected a config of type"),
    ('{"head.0": {"config": {"type": "Int8Config", "act_bits": 8}, "weight_dtype": ["float32"]}}',
     "head.0.*weight_dtype"),
])
def test_tampered_config_metadata_is_refused(tmp_path, metadata, match):
    st = pytest.importorskip("safetensors.torch")
    saved = _quantize(_mixed(), CONFIGS["int8"], filter_fn=EVERY)
    st.save_file(saved.state_dict(), tmp_path / "m.safetensors",
                 metadata={pyquant.nn.checkpoint.METADATA_KEY: metadata})
    with pytest.raises(ValueError, match=match):
        load_quantized_(_on_meta(Mixed), tmp_path / "m.safetensors")


def test_the_file_says_which_layers_are_quantized():
    """Whatever filter quantized the model (here: the head only, BN not folded; or every conv
    with its BN folded and the float ones too), the loaded model converts the same layers."""
    config = CONFIGS["int8"]
    cases = [dict(filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn.startswith("head"),
                  fold_batchnorm=False),
             dict(filter_fn=lambda m, fqn: fqn in ("grouped", "lstm")),  # conv float, BN folded
             dict(filter_fn=EVERY, fold_batchnorm=False)]
    for kw in cases:
        saved = _quantize(_mixed(), config, **kw)
        with torch.no_grad():
            want = saved(X)
        loaded = load_quantized_(_on_meta(Mixed), _saved(saved), config)
        assert ([type(m).__name__ for m in loaded.children()]
                == [type(m).__name__ for m in saved.children()])
        with torch.no_grad():
            assert torch.equal(loaded(X), want)


def test_a_model_with_real_weights_loads_without_quantizing_them():
    """The layers the file replaces are not quantized first (their weights go to the meta device
    and are never read); a model in training mode folds the BNs the file no longer holds."""
    config = CONFIGS["lut2"]
    saved = _quantize(_mixed(), config, filter_fn=EVERY)
    with torch.no_grad():
        want = saved(X)
    model = _mixed(seed=1).train()
    model.head[0].weight.data.fill_(float("nan"))  # (a weight search would see NaN)
    loaded = load_quantized_(model, _saved(saved), config).eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), want)


def test_wrong_or_incomplete_files_are_clear_errors():
    config = CONFIGS["w4g32"]
    saved = _quantize(_mixed(), config, filter_fn=EVERY)
    sd = _saved(saved)
    with pytest.raises(ValueError, match="packed for 'lowbit_gemm'"):
        load_quantized_(_on_meta(Mixed), sd, CONFIGS["int8"])
    with pytest.raises(ValueError, match="bits"):
        load_quantized_(_on_meta(Mixed), sd, pyquant.WeightOnlyConfig(2, 32))
    with pytest.raises(TypeError, match="config instance"):
        load_quantized_(_on_meta(Mixed), sd, pyquant.Int8Config)
    partial = {k: v for k, v in sd.items() if not k.startswith("head.2.w_")}
    with pytest.raises(RuntimeError, match="Missing key"):
        load_quantized_(_on_meta(Mixed), partial, config)
    model = load_quantized_(_on_meta(Mixed), partial, config, strict=False)
    with pytest.raises(ValueError, match="not loaded yet"):
        model.head(torch.randn(1, 64))
    tampered = dict(sd)
    packed = sd["head.0.packed"].clone()
    packed[8:12] = torch.tensor([1, 0, 0, 0], dtype=torch.uint8)  # header field n
    tampered["head.0.packed"] = packed
    with pytest.raises(ValueError, match="head.0.packed"):
        load_quantized_(_on_meta(Mixed), tampered, config)


def test_auto_and_explicit_act_bits_kept_apart_through_a_file(tmp_path):
    """Int8Config() and Int8Config(act_bits=8) compare equal on a VNNI CPU, but only the first is
    resolved again where the model loads: a file holding both keeps each as asked, and an
    explicit config that disagrees with the file's says what the file says."""
    pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=lambda m, fqn: fqn == "0")
    pyquant.quantize_(model, pyquant.Int8Config(act_bits=8), filter_fn=lambda m, fqn: fqn == "2")
    pyquant.save_quantized(model, tmp_path / "m.safetensors")
    with torch.device("meta"):
        fresh = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    loaded = load_quantized_(fresh, tmp_path / "m.safetensors")
    assert loaded[0].config.act_bits_asked == "auto" and loaded[2].config.act_bits_asked == 8
    other = 7 if pyquant.Int8Config().act_bits == 8 else 8
    with torch.device("meta"):
        fresh = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    with pytest.raises(ValueError, match=r"the file says layer '0' was quantized with "
                                         r"Int8Config\(act_bits='auto'\)"):
        load_quantized_(fresh, tmp_path / "m.safetensors", pyquant.Int8Config(act_bits=other))


def test_a_float_checkpoint_is_a_clear_error():
    """A float state dict given to load_quantized_ (the float checkpoint by mistake): the model
    would stay float; it is a ValueError saying what to do instead."""
    torch.manual_seed(0)
    float_sd = _mixed().state_dict()
    with pytest.raises(ValueError, match="no quantized layer.*quantize_"):
        load_quantized_(_on_meta(Mixed), float_sd, CONFIGS["int8"])
    # the same into a model quantized on the meta device (load_quantized_ or load_state_dict):
    # a ValueError naming the first such weight, not torch's list of missing and unexpected keys
    quantized_on_meta = _on_meta(Mixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyquant.quantize_(quantized_on_meta, CONFIGS["int8"])
    for load in (lambda m: load_quantized_(m, float_sd, CONFIGS["int8"]),
                 lambda m: m.load_state_dict(float_sd, assign=True)):
        with pytest.raises(ValueError, match=r"weight: a float weight for the quantized layer .*"
                                             r"\(a float checkpoint\?\).*quantize_"):
            load(quantized_on_meta)


class WithBuffer(nn.Module):
    """A non-persistent buffer (as transformers' rotary inv_freq): not in any state dict."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 64)
        self.register_buffer("scale", torch.full((64,), 2.0), persistent=False)

    def forward(self, x):
        return self.linear(x) * self.scale


def test_tensors_left_on_meta_are_named():
    config = CONFIGS["int8"]
    torch.manual_seed(0)
    saved = _quantize(WithBuffer(), config, filter_fn=EVERY)
    sd = _saved(saved)
    with pytest.raises(ValueError, match="scale.*non-persistent"):
        load_quantized_(_on_meta(WithBuffer), sd, config)
    with torch.device("meta"):  # parameters only on meta: accelerate.init_empty_weights' way
        model = WithBuffer()
    model.scale = torch.full((64,), 2.0)
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(load_quantized_(model, sd, config)(x), saved(x))


def test_gptq_on_meta_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="meta device.*load the float weights"):
        pyquant.nn.gptq_(_on_meta(Mixed), pyquant.WeightOnlyConfig(4, 32), [X], filter_fn=EVERY)


# ----------------------------------------------------------------------------- a review's cases
class DtypeReader(nn.Module):
    """Casts its input to its layer's weight dtype (as T5's feed-forward does)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(64)  # (float parameters: a plain file's dtype shows in them)
        self.lin = nn.Linear(64, 64)

    def forward(self, x):
        return self.lin(self.norm(x.to(self.lin.weight.dtype)))


def test_a_half_precision_model_loads_as_saved(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    saved = _quantize(DtypeReader(), CONFIGS["int8"], filter_fn=EVERY).to(torch.bfloat16)
    x = torch.randn(3, 64)
    pyquant.save_quantized(saved, tmp_path / "h.safetensors")
    loaded = load_quantized_(_on_meta(DtypeReader), tmp_path / "h.safetensors")  # (built fp32)
    plain = load_quantized_(_on_meta(DtypeReader), _saved(saved), CONFIGS["int8"])
    for model in (loaded, plain):
        assert model.lin.weight.dtype == torch.bfloat16
        with torch.no_grad():
            assert torch.equal(model(x), saved(x))


def test_configs_that_disagree_with_the_file_change_nothing(tmp_path):
    """A config the file's headers or metadata contradict is refused before the model changes,
    so a retry with the right one works (here on a model with real weights)."""
    pytest.importorskip("safetensors")
    saved = _quantize(_mixed(), CONFIGS["int8-a7"], filter_fn=EVERY)
    with torch.no_grad():
        want = saved(X)
    sd = _saved(saved)
    model = _mixed(seed=1)
    for wrong in (CONFIGS["w4g32"], CONFIGS["sparq"], pyquant.SparqConfig(bits=3, options=6)):
        with pytest.raises(ValueError, match="packed"):
            load_quantized_(model, sd, wrong)
    assert not any(isinstance(m, pyquant.nn.QuantLinear) for m in model.modules())
    assert isinstance(model.bn, nn.BatchNorm2d) and not model.conv.weight.is_meta
    pyquant.save_quantized(saved, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="the file says"):  # (act_bits: not in any header)
        load_quantized_(model, tmp_path / "m.safetensors", CONFIGS["int8"])
    loaded = load_quantized_(model, tmp_path / "m.safetensors", CONFIGS["int8-a7"]).eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), want)


def test_shards_and_loads_in_parts(tmp_path):
    config = CONFIGS["lut2"]
    saved = _quantize(_mixed(), config, filter_fn=EVERY)
    with torch.no_grad():
        want = saved(X)
    sd = _saved(saved)
    keys = list(sd)
    halves = [{k: sd[k] for k in keys[::2]}, {k: sd[k] for k in keys[1::2]}]
    for i, half in enumerate(halves):
        torch.save(half, tmp_path / f"part{i}.pt")
    loaded = load_quantized_(_on_meta(Mixed), [tmp_path / "part0.pt", tmp_path / "part1.pt"],
                             config)
    with torch.no_grad():
        assert torch.equal(loaded(X), want)
    with pytest.raises(ValueError, match="more than one shard"):
        load_quantized_(_on_meta(Mixed), [sd, halves[0]], config)
    model = _quantize(_on_meta(Mixed), config, filter_fn=EVERY)  # loaded in two calls
    for half in halves:
        model.load_state_dict(half, strict=False, assign=True)
    with torch.no_grad():
        assert torch.equal(model(X), want)


def test_attention_with_only_its_out_proj_quantized():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
            self.ff = nn.Linear(64, 64)

        def forward(self, x):
            return self.ff(self.attn(x, x, x, need_weights=False)[0])
    torch.manual_seed(0)
    config = CONFIGS["int8"]
    saved = _quantize(Encoder().eval(), config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    assert isinstance(saved.attn, nn.MultiheadAttention)
    assert isinstance(saved.attn.out_proj, pyquant.nn.QuantLinear)
    loaded = load_quantized_(_on_meta(Encoder), _saved(saved), config)
    y = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert torch.equal(loaded(y), saved(y))


def test_attention_with_key_value_biases_loads_quantized():
    """An nn.MultiheadAttention(add_bias_kv=True) keeps bias_k / bias_v under the same names
    quantized: the file's copies must not make its loader take the block for a float one."""
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(64, 4, add_bias_kv=True, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]
    torch.manual_seed(0)
    config = CONFIGS["int8"]
    model = Encoder().eval()
    with torch.no_grad():
        model.attn.bias_k.normal_()
        model.attn.bias_v.normal_()
    saved = _quantize(model, config)
    assert isinstance(saved.attn, pyquant.nn.QuantMultiheadAttention)
    loaded = load_quantized_(_on_meta(Encoder), _saved(saved), config)
    assert isinstance(loaded.attn, pyquant.nn.QuantMultiheadAttention)
    y = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert torch.equal(loaded(y), saved(y))


def test_partial_file_leaves_real_layers_alone_and_meta_context():
    """strict=False with a file that lacks a BatchNorm after a Linear: the BN keeps its values;
    and loading works inside a `with torch.device("meta"):` block."""
    def build():
        return nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.Linear(64, 8)).eval()
    torch.manual_seed(0)
    config = CONFIGS["int8"]
    saved = _quantize(build(), config, filter_fn=EVERY)
    sd = {k: v for k, v in _saved(saved).items() if not k.startswith("1.")}
    torch.manual_seed(0)
    model = build()
    bn = copy.deepcopy(model[1].state_dict())
    loaded = load_quantized_(model, sd, config, strict=False)
    assert isinstance(loaded[1], nn.BatchNorm1d)
    assert all(torch.equal(loaded[1].state_dict()[k], v) for k, v in bn.items())
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), saved(x))
    with torch.device("meta"):
        inside = load_quantized_(build(), _saved(saved), config)
    with torch.no_grad():
        assert torch.equal(inside(x), saved(x))


def test_state_dict_keys_must_be_strings():
    with pytest.raises(TypeError, match="string keys"):
        load_quantized_(_on_meta(Mixed), {1: torch.zeros(1)}, CONFIGS["int8"])
