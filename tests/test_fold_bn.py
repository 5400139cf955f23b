"""BatchNorm folding in quantize_ / gptq_ (pyquant/nn/fold_bn.py): which pairs fold, which must
not (the conv's output used elsewhere, a shared module, training mode, a conv left float), and
that a folded layer computes what the unfolded one does up to float rounding."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import pyquant
from pyquant.nn import QuantConv1d, QuantConv2d, QuantGroupedConv2d
from pyquant.nn.fold_bn import FoldedIntoConv

CONFIGS = {
    "int8": pyquant.Int8Config(),
    "w4g32": pyquant.WeightOnlyConfig(4, 32),
    "lut_minmax": pyquant.LUT2Config(a_scale="minmax"),
    "sparq": pyquant.SparqConfig(),
}
EVERY = pyquant.nn.every_layer_filter


def _randomized(bn: nn.Module, seed: int) -> nn.Module:
    """Trained-looking statistics (a fresh BN is the identity up to eps)."""
    g = torch.Generator().manual_seed(seed)
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
        bn.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
        if bn.affine:
            bn.weight.copy_(torch.rand(c, generator=g) * 3 - 1.5)  # negative factors too
            bn.bias.copy_(torch.rand(c, generator=g) * 2 - 1)
    return bn


def _quantized(model, config, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyquant.quantize_(copy.deepcopy(model), config, **kw)


class Block(nn.Module):
    """Attribute style (ResNet): only the fx graph shows which BN takes which conv."""
    def __init__(self, c: int = 64):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), _randomized(nn.BatchNorm2d(c), 1)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1), _randomized(nn.BatchNorm2d(c), 2)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


def _bns(model):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_folded_block_matches_unfolded(name):
    model = Block().eval()
    x = torch.randn(2, 64, 9, 10, generator=torch.Generator().manual_seed(3))
    folded = _quantized(model, CONFIGS[name], filter_fn=EVERY)
    kept = _quantized(model, CONFIGS[name], filter_fn=EVERY, fold_batchnorm=False)
    assert _bns(folded) == 0 and _bns(kept) == 2
    assert isinstance(folded.bn1, nn.Identity) and isinstance(folded.conv1, QuantConv2d)
    assert folded.conv1.bias is not None  # (the conv had none: the BN's shift)
    with torch.no_grad():
        a, b, ref = folded(x), kept(x), model(x)
    if name != "w4g32":  # per-channel float scales: the same codes up to float rounding
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())
    # WeightOnly's bfloat16 group scales round differently once folded: as accurate
    cos = [nn.functional.cosine_similarity(y.flatten(), ref.flatten(), 0) for y in (a, b)]
    assert cos[0] > 0.98 and cos[0] > cos[1] - 0.005


def test_folded_conv_has_the_scaled_weights():
    """Per-output-channel weight scales absorb the BN's factor: the folded layer's weights are the
    unfolded layer's times gamma / sqrt(var + eps), negative factors included."""
    torch.manual_seed(41)  # (a seed with a value at a rounding tie: see below)
    conv, bn = nn.Conv2d(16, 64, 3, bias=True), _randomized(nn.BatchNorm2d(64), 4)
    model = nn.Sequential(conv, bn).eval()
    folded = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    kept = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY, fold_batchnorm=False)
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        got = folded[0].dequantize_weight()
        expect = kept[0].dequantize_weight() * factor.view(-1, 1, 1, 1)
        # the same codes, but for a value within float rounding of a tie (w * factor rounds
        # once more): one step (the row's max / 127) at a handful of the 9216 weights
        off = ~torch.isclose(got, expect, rtol=1e-5, atol=1e-6)
        step = got.abs().amax((1, 2, 3), keepdim=True) / 127
        assert off.sum() <= 3 and ((got - expect).abs() <= step * 1.001).all()
        x = torch.randn(3, 16, 8, 8)
        assert torch.allclose(folded(x), kept(x), rtol=1e-4, atol=2e-3)  # (the one step)


def test_conv1d_and_grouped_conv_fold():
    model = nn.Sequential(
        nn.Conv1d(32, 96, 5, padding=2), _randomized(nn.BatchNorm1d(96), 5), nn.ReLU(),
        nn.Unflatten(1, (96, 1)), nn.Flatten(1, 2), nn.Unflatten(2, (1, -1)),
        nn.Conv2d(96, 192, (1, 3), padding=(0, 1), groups=2),
        _randomized(nn.BatchNorm2d(192), 6)).eval()
    x = torch.randn(2, 32, 20)
    folded = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    kept = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY, fold_batchnorm=False)
    assert isinstance(folded[0], QuantConv1d) and isinstance(folded[6], QuantGroupedConv2d)
    assert _bns(folded) == 0
    with torch.no_grad():
        a, b = folded(x), kept(x)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


class SharedUses(nn.Module):
    """Pairs that must not fold: conv_a's output also feeds the residual; bn_b runs twice."""
    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 7)
        self.conv_b, self.bn_b = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 8)

    def forward(self, x):
        y = self.conv_a(x)
        y = self.bn_a(y) + y
        return self.bn_b(self.conv_b(y)) + self.bn_b(y)


def _probe(conv, x):  # (a function fx keeps as one call: it may call the module it is handed)
    return conv(x).mean()


torch.fx.wrap("_probe")


class HandedOver(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 17)

    def forward(self, x):
        return self.bn(self.conv(x)) + _probe(self.conv, x)


def test_a_conv_handed_to_a_function_does_not_fold():
    model = HandedOver().eval()
    q = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert type(q.bn) is nn.BatchNorm2d
    x = torch.randn(1, 64, 6, 6)
    with torch.no_grad():
        assert nn.functional.cosine_similarity(q(x).flatten(), model(x).flatten(), 0) > 0.99


class ReadsParameters(nn.Module):
    """A BN's parameter read beside its call, a conv's weight used by a functional conv."""
    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 18)
        self.conv_b, self.bn_b = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 19)

    def forward(self, x):
        y = self.bn_a(self.conv_a(x)) * self.bn_a.weight.mean()
        return self.bn_b(self.conv_b(y)) + nn.functional.conv2d(y, self.conv_b.weight, padding=1)


class FlagChild(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 20)

    def forward(self, x, return_pre: bool = False):
        y = self.conv(x)
        return y if return_pre else self.bn(y)


class CallsChildWithFlag(nn.Module):
    """Untraceable, and calls its child with a flag the child's default-flag graph does not show:
    the child's pair is seen only with the flag at its default, so it does not fold."""
    def __init__(self):
        super().__init__()
        self.child = FlagChild()

    def forward(self, x):
        return self.child(x, return_pre=bool(x.sum() > -1e9))


class Stateful(nn.Module):
    """A forward that counts its calls and keeps its input: tracing must not leave its proxies."""
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 21)
        self.calls, self.seen = 0, []

    def forward(self, x):
        self.calls += 1
        self.seen.append(x.shape)
        return self.bn(self.conv(x))


@pytest.mark.filterwarnings("ignore:the values of a QuantConv2d's weight")  # (conv_b's, read)
@pytest.mark.parametrize("fold", [True, "all"])
def test_uses_beside_the_call_keep_the_pair(fold):
    for model in (ReadsParameters().eval(), CallsChildWithFlag().eval()):
        q = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY, fold_batchnorm=fold)
        assert _bns(q) == 2 if isinstance(model, ReadsParameters) else _bns(q) == 1
        x = torch.randn(1, 64, 6, 6)
        with torch.no_grad():
            assert nn.functional.cosine_similarity(q(x).flatten(), model(x).flatten(), 0) > 0.99


def test_tracing_leaves_no_trace_in_the_model():
    model = Stateful().eval()
    seen = model.seen
    hook_calls = []
    handle = model.register_forward_pre_hook(lambda m, a: hook_calls.append(1))
    q = pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert isinstance(q.bn, nn.Identity)
    assert q.calls == 0 and q.seen == [] and q.seen is seen  # (the same list, emptied again)
    handle.remove()  # (the handle still finds the module's own hook dict)
    with torch.no_grad():
        q(torch.randn(1, 64, 5, 5))
    assert hook_calls == [] and q.calls == 1


def test_hooks_and_parametrizations_keep_the_pair():
    hooked = nn.Sequential(nn.Conv2d(64, 64, 3), _randomized(nn.BatchNorm2d(64), 22)).eval()
    seen = []
    hooked[1].register_forward_hook(lambda m, a, out: seen.append(out.shape))
    q = _quantized(hooked, pyquant.Int8Config(), filter_fn=EVERY)
    assert type(q[1]) is nn.BatchNorm2d
    normed = nn.Sequential(nn.Conv2d(64, 64, 3), _randomized(nn.BatchNorm2d(64), 23)).eval()
    nn.utils.parametrizations.weight_norm(normed[0])
    q = _quantized(normed, pyquant.Int8Config(), fold_batchnorm="all")
    assert type(q[1]) is nn.BatchNorm2d


def test_a_meta_model_folds_in_shapes_only():
    """A model built on the meta device (to load a quantized state dict) folds as the saved model
    did: the BN becomes an Identity and the conv gains its bias, values from the file later
    (tests/test_checkpoint.py loads them)."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(64, 64, 3, bias=False), nn.BatchNorm2d(64)).eval()
    q = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert type(q[1]) is FoldedIntoConv and q[0].bias is not None and not q[0].bias.is_meta
    with pytest.raises(ValueError, match="not loaded yet"):
        q(torch.randn(1, 64, 6, 6))


def test_pairs_that_must_not_fold():
    model = SharedUses().eval()
    x = torch.randn(1, 64, 6, 6)
    q = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert _bns(q) == 2 and isinstance(q.conv_a, QuantConv2d)
    with torch.no_grad():
        assert nn.functional.cosine_similarity(q(x).flatten(), model(x).flatten(), 0) > 0.99


def test_conv_left_float_keeps_its_batchnorm():
    """quantize_'s default filter leaves a narrow conv float: its BN stays too (quantize_ changes
    only the layers it converts)."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3), _randomized(nn.BatchNorm2d(16), 9), nn.ReLU(),
                          nn.Conv2d(16, 256, 3), _randomized(nn.BatchNorm2d(256), 10)).eval()
    q = _quantized(model, pyquant.Int8Config())
    assert type(q[0]) is nn.Conv2d and type(q[1]) is nn.BatchNorm2d
    assert isinstance(q[3], QuantConv2d) and isinstance(q[4], nn.Identity)


def test_fold_all_folds_the_float_convs_too():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), _randomized(nn.BatchNorm2d(16), 9), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, groups=16), _randomized(nn.BatchNorm2d(16), 16),
                          nn.Conv2d(16, 256, 3), _randomized(nn.BatchNorm2d(256), 10)).eval()
    q = _quantized(model, pyquant.Int8Config(), fold_batchnorm="all")
    assert type(q[0]) is nn.Conv2d and type(q[3]) is nn.Conv2d and isinstance(q[5], QuantConv2d)
    assert _bns(q) == 0 and q[0].bias is not None
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        y, ref = q(x), model(x)
        exact = _quantized(model, pyquant.Int8Config())  # (float part not folded)
        assert torch.allclose(q[:5](x), model[:5](x), rtol=1e-4, atol=1e-5)
        assert nn.functional.cosine_similarity(y.flatten(), exact(x).flatten(), 0) > 0.9999
    assert nn.functional.cosine_similarity(y.flatten(), ref.flatten(), 0) > 0.99
    for bad in ("float", 0, 1):
        with pytest.raises(ValueError, match="fold_batchnorm: expected True, False or 'all'"):
            pyquant.quantize_(model, pyquant.Int8Config(), fold_batchnorm=bad)


def test_training_mode_leaves_batchnorm_and_warns():
    model = Block()  # (a fresh model is in training mode)
    with pytest.warns(UserWarning, match=r"training mode.*model\.eval\(\)"):
        q = pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert _bns(q) == 2


def test_only_the_batchnorm_mode_matters():
    model = Block().eval()
    model.conv1.train()  # (a conv computes the same in both modes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert _bns(q) == 0


def test_a_filter_that_picks_modules_still_matches_them():
    """Folding keeps the conv object (new parameters, same module): a filter on identity
    converts exactly the convs it names."""
    model = Block().eval()
    keep = {id(model.conv2)}
    q = pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=lambda m, fqn: id(m) in keep)
    assert type(q.conv1) is nn.Conv2d and type(q.bn1) is nn.BatchNorm2d
    assert isinstance(q.conv2, QuantConv2d) and isinstance(q.bn2, nn.Identity)


def test_batchnorm_without_running_stats_is_left():
    model = nn.Sequential(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64, track_running_stats=False)).eval()
    q = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert type(q[1]) is nn.BatchNorm2d


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it (as a transformers model), so only
    the pairs inside its submodules fold (a traceable block, a Sequential of untraceable
    children), not the pair in its own forward."""
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.encoder = EncoderWithFlags()
        self.seq = nn.Sequential(nn.Conv2d(64, 64, 1), _randomized(nn.BatchNorm2d(64), 11),
                                 Untraced())
        self.conv, self.bn = nn.Conv2d(64, 64, 1), _randomized(nn.BatchNorm2d(64), 12)

    def forward(self, x):
        y = self.seq(self.encoder(self.block(x), output_hidden_states=False))
        return self.bn(self.conv(y)) if y.sum() > 0 else -self.bn(self.conv(y))


class Untraced(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class EncoderWithFlags(nn.Module):
    """A transformers-style forward: a Python flag with a default; traced with it bound."""
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(64, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 15)

    def forward(self, x, output_hidden_states: bool = False, scale=None):
        hidden = [x] if output_hidden_states else None
        y = self.bn(self.conv(x))
        y = y if scale is None else y * scale
        return (y, hidden) if output_hidden_states else y


def test_untraceable_model_folds_the_pairs_of_its_parts():
    model = Untraceable().eval()
    q = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    assert isinstance(q.block.bn1, nn.Identity) and isinstance(q.block.bn2, nn.Identity)
    assert isinstance(q.encoder.bn, nn.Identity)
    assert isinstance(q.seq[1], nn.Identity) and type(q.bn) is nn.BatchNorm2d
    x = torch.randn(1, 64, 5, 5)
    with torch.no_grad():
        assert nn.functional.cosine_similarity(q(x).flatten(), model(x).flatten(), 0) > 0.99


def test_zero_gamma_channel_folds_to_zero_rows():
    """A zero-initialized BN weight (a residual branch's last BN): all-zero weight rows."""
    bn = _randomized(nn.BatchNorm2d(64), 13)
    with torch.no_grad():
        bn.weight[:5] = 0
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), bn).eval()
    x = torch.randn(1, 64, 6, 6)
    for config in CONFIGS.values():
        q = _quantized(model, config, filter_fn=EVERY)
        with torch.no_grad():
            y, ref = q(x), model(x)
        assert torch.equal(y[:, :5], ref[:, :5].expand_as(y[:, :5]))  # (the BN's shift only)
        assert torch.isfinite(y).all()


def test_state_dict_of_a_folded_model_loads_into_a_fresh_conversion():
    model = Block().eval()
    q = _quantized(model, pyquant.Int8Config(), filter_fn=EVERY)
    fresh = _quantized(Block().eval(), pyquant.Int8Config(), filter_fn=EVERY)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(1, 64, 7, 7)
    with torch.no_grad():
        assert torch.equal(fresh(x), q(x))
    old_layout = _quantized(Block().eval(), pyquant.Int8Config(), filter_fn=EVERY,
                            fold_batchnorm=False)
    with pytest.raises(RuntimeError, match="bn1"):
        old_layout.load_state_dict(q.state_dict())


def test_gptq_folds_before_rounding():
    model = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), _randomized(nn.BatchNorm2d(64), 14),
                          nn.ReLU()).eval()
    batches = [torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(i))
               for i in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = pyquant.nn.gptq_(copy.deepcopy(model), pyquant.WeightOnlyConfig(4, 32), batches,
                             filter_fn=EVERY)
    assert isinstance(q[0], QuantConv2d) and isinstance(q[1], nn.Identity)
    with torch.no_grad():
        y, ref = q(batches[0]), model(batches[0])
    assert nn.functional.cosine_similarity(y.flatten(), ref.flatten(), 0) > 0.98
