"""QuantRNN: nn.LSTM / nn.GRU / nn.RNN with quantized matmuls.

(1) One step against PyTorch's documented cell equations written here, with the module's
QuantLinear layers as black boxes (they are checked against integer references in
test_nn_forward.py); (2) a sequence is its steps chained, layers are one-layer modules stacked,
and a packed batch is each sequence alone, all bit for bit (per-row quantization: rows are
independent); (3) close to the float layer (gate order, biases, projections, directions).
Whole sequences are not compared to an independent loop with a tolerance: a last-bit difference
in a state can move the next step's activation scale, so such a loop drifts by a code now and
then.
"""
from __future__ import annotations

import copy
import warnings
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import pyquant
from pyquant.nn import QuantRNN

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections")

CONFIGS = [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32), pyquant.LUT2Config(),
           pyquant.SparqConfig(), pyquant.SparqConfig(sparse24=True)]
CONFIG_IDS = ["int8", "w4g32", "lut2", "sparq", "sparq24"]
KINDS = {
    "lstm": lambda **kw: nn.LSTM(12, 16, **kw),
    "lstm-proj": lambda **kw: nn.LSTM(12, 16, proj_size=6, **kw),
    "gru": lambda **kw: nn.GRU(12, 16, **kw),
    "rnn-tanh": lambda **kw: nn.RNN(12, 16, **kw),
    "rnn-relu": lambda **kw: nn.RNN(12, 16, nonlinearity="relu", **kw),
}


def _rnn(kind, **kw):
    torch.manual_seed(7)
    return KINDS[kind](**kw).eval()


def _cos(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def _one_step(q: QuantRNN, x: torch.Tensor, h0: torch.Tensor, c0):
    """One time step of a one-layer q from PyTorch's cell equations: x [B, in], states [D, B, *]."""
    hs, cs = [], []
    for k, sfx in enumerate(["", "_reverse"][:2 if q.bidirectional else 1]):
        xi, hh_out = getattr(q, f"ih_l0{sfx}")(x), getattr(q, f"hh_l0{sfx}")(h0[k])
        if q.mode == "LSTM":  # stored gate order (i, f, o, g), both biases in ih
            i, f, o, g = (xi + hh_out).chunk(4, 1)
            c = torch.sigmoid(f) * c0[k] + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hr = getattr(q, f"hr_l0{sfx}", None)
            h = hr(h) if hr is not None else h
            cs.append(c)
        elif q.mode == "GRU":
            xr, xz, xn = xi.chunk(3, 1)
            hr_, hz, hn_ = hh_out.chunk(3, 1)
            r, z = torch.sigmoid(xr + hr_), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn_)
            h = (1 - z) * n + z * h0[k]
        else:
            h = xi + hh_out
            h = torch.tanh(h) if q.mode == "RNN_TANH" else torch.relu(h)
        hs.append(h)
    return torch.cat(hs, 1), torch.stack(hs), (torch.stack(cs) if cs else None)


def _states(s):
    return s if isinstance(s, tuple) else (s,)


def _hx(kind, d, batch):
    h0 = torch.randn(d, batch, 6 if kind == "lstm-proj" else 16) * 0.5
    return (h0, torch.randn(d, batch, 16) * 0.5) if kind.startswith("lstm") else h0


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_one_step_is_the_cell_equations(isa, kind, bidirectional, config):
    """From the same states the GEMM outputs are the same bits; the gate arithmetic (ordered
    differently here) agrees to float rounding."""
    q = QuantRNN(_rnn(kind, bidirectional=bidirectional), config)
    x = torch.randn(1, 3, 12)
    hx = _hx(kind, 2 if bidirectional else 1, 3)
    h0, c0 = hx if isinstance(hx, tuple) else (hx, None)
    with torch.no_grad():
        out, states = q(x, hx)
        want_out, want_h, want_c = _one_step(q, x[0], h0, c0)
    torch.testing.assert_close(out[0], want_out, rtol=1e-6, atol=1e-6)
    for got, want in zip(_states(states), (want_h, want_c)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_sequence_is_its_steps_chained(kind, config):
    """T steps in one call = T one-step calls passing the states on, bit for bit (the input
    projection of all rows at once gives each row's bits)."""
    q = QuantRNN(_rnn(kind), config)
    x = torch.randn(6, 3, 12)
    hx = _hx(kind, 1, 3)
    with torch.no_grad():
        out, states = q(x, hx)
        for t in range(6):
            step, hx = q(x[t:t + 1], hx)
            assert torch.equal(step[0], out[t])
        for a, b in zip(_states(states), _states(hx)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layers_stack_and_the_float_layer_agrees(kind, bidirectional):
    """Two layers = two one-layer modules with the same weights, bit for bit; and close to the
    float layer (gate order, biases, projection, directions as PyTorch's)."""
    rnn = _rnn(kind, num_layers=2, bidirectional=bidirectional)
    q = QuantRNN(rnn, pyquant.Int8Config())
    d = 2 if bidirectional else 1
    x = torch.randn(6, 3, 12)
    hx = _hx(kind, 2 * d, 3)
    parts = []
    for layer in range(2):
        one = KINDS[kind](bidirectional=bidirectional)
        if layer:
            kw = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
            if rnn.proj_size:
                kw["proj_size"] = rnn.proj_size
            one = type(rnn)(d * (rnn.proj_size or 16), 16, bidirectional=bidirectional, **kw)
        for name, p in one.named_parameters():
            p.data.copy_(getattr(rnn, name.replace("_l0", f"_l{layer}")))
        parts.append(QuantRNN(one.eval(), pyquant.Int8Config()))
    first = tuple(t[:d] for t in _states(hx))
    second = tuple(t[d:] for t in _states(hx))
    as_hx = (lambda s: s) if kind.startswith("lstm") else (lambda s: s[0])  # noqa: E731
    with torch.no_grad():
        out, states = q(x, hx)
        mid, s1 = parts[0](x, as_hx(first))
        last, s2 = parts[1](mid, as_hx(second))
        flt = rnn(x, hx)
    assert torch.equal(out, last)
    for a, b, c in zip(_states(states), _states(s1), _states(s2)):
        assert torch.equal(a, torch.cat([b, c]))
    assert _cos(out, flt[0]) > 0.999
    for a, b in zip(_states(states), _states(flt[1])):
        assert _cos(a, b) > 0.999


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_batch_is_each_sequence_alone(threads, kind, bidirectional):
    rnn = _rnn(kind, num_layers=2, bidirectional=bidirectional, batch_first=True)
    q = QuantRNN(rnn, pyquant.Int8Config())
    lengths = [5, 9, 1, 7]
    x = torch.randn(4, 9, 12)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out, states = q(packed)
        padded, _ = pad_packed_sequence(out, batch_first=True)
        for b, n in enumerate(lengths):
            alone, alone_states = q(x[b:b + 1, :n])
            assert torch.equal(padded[b, :n], alone[0])
            assert not padded[b, n:].any()
            for s, a in zip(states if isinstance(states, tuple) else (states,),
                            alone_states if isinstance(alone_states, tuple) else (alone_states,)):
                assert torch.equal(s[:, b], a[:, 0])
        flt, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True)
    assert _cos(padded, flt) > 0.999


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layouts_and_initial_states(kind):
    rnn = _rnn(kind, num_layers=1, batch_first=True)
    q = QuantRNN(rnn, pyquant.Int8Config())
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        full, states = q(x)
        assert full.shape == (2, 5, 16)
        one, one_states = q(x[1])  # unbatched: [T, in], states without a batch dim
        assert torch.equal(one, full[1])
        if kind == "lstm":
            assert one_states[0].shape == (1, 16) and torch.equal(one_states[1], states[1][:, 1])
            assert torch.equal(q(x[1], (states[0][:, 1], states[1][:, 1]))[0],
                               q(x[1:, ], (states[0][:, 1:], states[1][:, 1:]))[0][0])
        else:
            assert one_states.shape == (1, 16)
        empty, empty_states = q(torch.randn(2, 0, 12))
        assert empty.shape == (2, 0, 16)
    q.flatten_parameters()  # (model code calls it before each forward)


def test_quantize_state_dict_gptq_and_errors():
    torch.manual_seed(8)
    model = nn.Sequential()
    model.lstm = nn.LSTM(12, 16, 2, batch_first=True)
    x = torch.randn(2, 5, 12)
    q = pyquant.quantize_(copy.deepcopy(model).eval(), pyquant.Int8Config())
    assert isinstance(q.lstm, QuantRNN)
    with torch.no_grad():
        want = q.lstm(x)[0]
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    fresh = pyquant.quantize_(copy.deepcopy(model).eval(), pyquant.Int8Config())
    state = torch.load(io.BytesIO(buf.getvalue()))
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh.lstm(x)[0], want)
    bad = dict(state)
    bad["lstm.hh_l1.packed"] = state["lstm.hh_l1.packed"][:-1].clone()
    with pytest.raises(ValueError, match="hh_l1.packed"):
        fresh.load_state_dict(bad)
    g = pyquant.nn.gptq_(copy.deepcopy(model).eval(), pyquant.WeightOnlyConfig(4, 32), [x])
    assert isinstance(g.lstm, QuantRNN)  # (round to nearest: its state inputs are no module's)
    with pytest.raises(ValueError, match="input: expected last dim 12"):
        q.lstm(torch.randn(2, 5, 11))
    with pytest.raises(ValueError, match="h_0 of shape"):
        q.lstm(x, (torch.zeros(2, 3, 16), torch.zeros(2, 2, 16)))
    with pytest.raises(TypeError, match="tuple"):
        q.lstm(x, torch.zeros(2, 2, 16))
    with pytest.raises(TypeError, match="rnn"):
        QuantRNN(nn.Linear(3, 3), pyquant.Int8Config())
    xg = torch.randn(2, 5, 12, requires_grad=True)
    out, _ = q.lstm(xg)  # a forward works in grad mode; a backward through it is the error
    with pytest.raises(RuntimeError, match="QuantRNN 'lstm' is inference-only"):
        out.sum().backward()


EXPORT_CASES = [(kind, config, op) for kind in ("lstm", "lstm-proj", "gru") for config, op in (
    (pyquant.Int8Config(), "int8_recurrent"), (pyquant.WeightOnlyConfig(4, 32), "lowbit_recurrent"))
] + [("lstm-proj", pyquant.LUT2Config(), "lut_recurrent"),
     ("gru", pyquant.SparqConfig(), "sparq_recurrent"),
     ("lstm", pyquant.SparqConfig(sparse24=True), "sparq_recurrent"),
     ("lstm-proj", pyquant.SparqConfig(), "sparq_recurrent"),
     ("gru", pyquant.LUT2Config(a_scale="minmax"), "lut_recurrent")]


@pytest.mark.parametrize("kind,config,op", EXPORT_CASES,
                         ids=[f"{k}-{op.split('_')[0]}{'24' if getattr(c, 'sparse24', False) else ''}"
                              for k, c, op in EXPORT_CASES])
def test_export_and_compile_give_the_same_bits(kind, config, op):
    class Output(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x)[0]

    model = Output(QuantRNN(_rnn(kind, num_layers=2, bidirectional=True, batch_first=True),
                            config))
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        program = torch.export.export(model, (x,))
        ops = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
        assert sum(op in o for o in ops) == 4  # one per layer and direction
        assert torch.equal(program.module()(x), model(x))
        compiled = torch.compile(model)
        assert torch.equal(compiled(x), model(x))


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_native_loop_runs_for_every_config_and_matches_the_step_loop(kind, config, monkeypatch):
    """Every config runs each layer's time loop in one native call (gates in C++, within float
    rounding of torch's, so the states agree with the per-step loop to that rounding)."""
    calls = []
    q = QuantRNN(_rnn(kind, num_layers=2, bidirectional=True), config)
    real = type(q.hh_l0.scheme).run_recurrent
    monkeypatch.setattr(type(q.hh_l0.scheme), "run_recurrent",
                        lambda self, *a, real=real: calls.append(1) or real(self, *a))
    x = torch.randn(1, 3, 12)
    with torch.no_grad():
        got = q(x)
        assert len(calls) == 4  # (2 layers x 2 directions)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(QuantRNN, "_native_loop", lambda self, *a: None)
            loop = q(x)
    for a, b in zip((got[0],) + _states(got[1]), (loop[0],) + _states(loop[1])):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("kind", ["lstm-proj", "gru"])
def test_plain_calls_and_half_inputs_run_the_native_loop(kind, config, monkeypatch):
    """A plain call (input or states requiring grad: a model after float layers, outside
    no_grad) runs the same native loop, with the same bits, as under no_grad, and a backward
    from any output is the error naming the layer; float16 / bfloat16 rows run it too."""
    calls = []
    model = nn.Sequential()
    model.rnn = _rnn(kind, num_layers=2)
    q = pyquant.quantize_(model, config, filter_fn=pyquant.nn.every_layer_filter).rnn
    real = type(q.hh_l0.scheme).run_recurrent
    monkeypatch.setattr(type(q.hh_l0.scheme), "run_recurrent",
                        lambda self, *a, real=real: calls.append(1) or real(self, *a))
    x, hx = torch.randn(4, 3, 12), _hx(kind, 2, 3)
    with torch.no_grad():
        want = q(x, hx)
    assert len(calls) == 2
    for grad_x in (True, False):  # the input, or only the initial states, require grad
        xg = x.clone().requires_grad_(grad_x)
        hg = tuple(t.clone().requires_grad_(not grad_x) for t in _states(hx))
        got = q(xg, hg if kind.startswith("lstm") else hg[0])
        outs = (got[0],) + _states(got[1])
        for a, b in zip(outs, (want[0],) + _states(want[1])):
            assert a.requires_grad and torch.equal(a.detach(), b)
        for out in outs:
            with pytest.raises(RuntimeError, match="QuantRNN 'rnn' is inference-only"):
                out.sum().backward(retain_graph=True)
    assert len(calls) == 6
    torch._dynamo.reset()  # compiled, a plain call runs the family's op too (not the step loop)
    compiled = torch.compile(q, backend="aot_eager", fullgraph=True)
    got = compiled(x.clone().requires_grad_(), hx)
    for a, b in zip((got[0],) + _states(got[1]), (want[0],) + _states(want[1])):
        assert a.requires_grad and torch.equal(a.detach(), b)
    with pytest.raises(RuntimeError, match="QuantRNN 'rnn' is inference-only"):
        got[0].sum().backward()
    hg = tuple(t.clone().requires_grad_() for t in _states(hx))  # only the states need a grad
    got = compiled(x, hg if kind.startswith("lstm") else hg[0])
    with pytest.raises(RuntimeError, match="QuantRNN 'rnn' is inference-only"):
        got[0].sum().backward()
    for dtype in (torch.float16, torch.bfloat16, torch.float64):  # compiled: the eager bits
        xd, hd = x.to(dtype), tuple(t.to(dtype) for t in _states(hx))
        hd = hd if kind.startswith("lstm") else hd[0]
        for a, b in zip(compiled(xd, hd), q(xd, hd)):
            assert all(torch.equal(s, t) for s, t in zip(_states(a), _states(b)))
    calls.clear()
    for dtype in (torch.float16, torch.bfloat16):
        out, states = q(x.to(dtype), tuple(t.to(dtype) for t in _states(hx))
                        if kind.startswith("lstm") else hx.to(dtype))
        assert out.dtype == dtype and all(t.dtype == dtype for t in _states(states))
        torch.testing.assert_close(out.float(), want[0], atol=0.1, rtol=0)
    assert len(calls) == 4


class _LearnedState(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.h0 = nn.Parameter(torch.randn(1, 1, 16) * 0.5)

    def forward(self, x):
        return self.rnn(x, self.h0.expand(1, x.shape[0], 16).contiguous())[0]


def test_trace_with_a_learned_initial_state():
    """torch.jit.trace of a plain call whose initial state is a parameter (requires grad): the
    recurrent op is recorded (new inputs, new outputs), not the inference-only wrapper."""
    model = _LearnedState(_rnn("gru", batch_first=True))
    pyquant.quantize_(model, pyquant.Int8Config(), filter_fn=lambda m, fqn: fqn == "rnn")
    x1, x2 = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (x1,), check_trace=False)
    assert torch.equal(traced(x2).detach(), model(x2).detach())


@pytest.mark.parametrize("sparse24", [False, True], ids=["sparq", "sparq24"])
def test_native_loop_refuses_a_negative_state_under_negative_error(sparse24):
    """SparqConfig(negative="error"): the loop stops at the first negative state with a ValueError
    naming the matmul (hh, or hr for the projection's input); the per-step loop's layer call
    raises one too (naming its x)."""
    q = QuantRNN(_rnn("lstm"), pyquant.SparqConfig(negative="error", sparse24=sparse24))
    x = torch.randn(4, 2, 12).abs()  # (the input projection passes; the state does not)
    with torch.no_grad():
        with pytest.raises(ValueError, match="hh: SparqConfig\\(negative='error'\\) got negative"):
            q(x)
        proj = QuantRNN(_rnn("lstm-proj"), pyquant.SparqConfig(negative="error", sparse24=sparse24))
        h0, c0 = torch.zeros(1, 2, 6), -torch.ones(1, 2, 16)  # h0 passes, o * tanh(c) does not
        with pytest.raises(ValueError, match="hr: SparqConfig\\(negative='error'\\) got negative"):
            proj(x[:1], (h0, c0))
        with pytest.MonkeyPatch.context() as m:
            m.setattr(QuantRNN, "_native_loop", lambda self, *a: None)
            with pytest.raises(ValueError, match="negative='error'"):
                q(x)
        relu = QuantRNN(nn.RNN(12, 16, nonlinearity="relu").eval(),
                        pyquant.SparqConfig(negative="error", sparse24=sparse24))
        out, _ = relu(x, torch.zeros(1, 2, 16))  # (a relu state is never negative)
        assert out.shape == (4, 2, 16)


def test_native_loop_rejects_bad_arguments():
    from pyquant import _C

    q = QuantRNN(_rnn("lstm"), pyquant.Int8Config())
    hh = q.hh_l0.grouped_args()
    xp = np.zeros((6, 64), np.float32)
    h0, c0 = np.zeros((3, 16), np.float32), np.zeros((3, 16), np.float32)
    sizes = np.array([3, 2, 1], np.int64)
    run = lambda **kw: _C.recurrent_forward_int8(**{**dict(  # noqa: E731
        xp=xp, batch_sizes=sizes, reverse=False, mode="LSTM", h0=h0, c0=c0, hh=hh, hr=None,
        act_bits=8), **kw})
    y, h, c = run()
    assert y.shape == (6, 16) and h.shape == (3, 16) and c.shape == (3, 16)
    for kw, match in ((dict(batch_sizes=np.array([1, 2, 3], np.int64)), "batch_sizes\\[1\\]"),
                      (dict(batch_sizes=np.array([3, 2], np.int64)), "sum 5"),
                      (dict(batch_sizes=np.array([4, 2], np.int64)), "batch_sizes\\[0\\]"),
                      (dict(c0=None), "c0"), (dict(c0=np.zeros((3, 15), np.float32)), "c0"),
                      (dict(mode="GRU", c0=None), "3 x hidden"), (dict(mode="LSTMX"), "mode"),
                      (dict(xp=np.zeros((6, 60), np.float32)), "hh.packed"),
                      (dict(h0=np.zeros((3, 8), np.float32)), "hh.packed"),
                      (dict(act_bits=6), "act_bits")):
        with pytest.raises(ValueError, match=match):
            run(**kw)
    bad = list(hh)
    bad[1] = bad[1][:-1]  # w_scale one short
    with pytest.raises(ValueError, match="hh.w_scale"):
        run(hh=tuple(bad))


def test_native_gates_are_within_float_rounding_of_torchs_and_the_same_on_every_tier(isa):
    from pyquant import _C

    x = np.concatenate([np.linspace(-30, 30, 200001, dtype=np.float32),
                        np.float32([-1e30, -100, 100, 1e30, 0.0, -0.0, 1e-30, -1e-30])])
    for fn, ref in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        got = _C.recurrent_gate(x, fn)
        assert np.abs(got - ref(torch.from_numpy(x)).numpy()).max() <= 2.5e-7, fn
        previous = _C.active_isa()
        _C.set_isa("scalar")
        try:
            assert np.array_equal(got, _C.recurrent_gate(x, fn)), (isa, fn)  # (bit for bit)
        finally:
            _C.set_isa(previous)


def test_quantize_converts_recurrent_layers_where_that_is_faster():
    """Every config runs a native loop; under LUT2 "mse" and 2:4 SPARQ narrow LSTMs stay float
    (PyTorch's fused cell is faster there), with a warning; GRU and RNN convert at any size."""
    def model():
        return nn.ModuleDict({"big_lstm": nn.LSTM(8, 128), "small_lstm": nn.LSTM(8, 64),
                              "gru": nn.GRU(8, 16), "small_rnn": nn.RNN(8, 16)})

    for config in (pyquant.Int8Config(), pyquant.SparqConfig(),
                   pyquant.LUT2Config(a_scale="minmax")):
        every = model()
        pyquant.quantize_(every, config)
        assert all(isinstance(m, QuantRNN) for m in every.values()), config
    for config in (pyquant.LUT2Config(), pyquant.SparqConfig(sparse24=True)):
        narrow = model()
        with pytest.warns(UserWarning, match="left float 1 LSTM layer.*below 128 \\(small_lstm\\)"):
            pyquant.quantize_(narrow, config)
        assert type(narrow["small_lstm"]) is nn.LSTM
        assert all(isinstance(narrow[n], QuantRNN) for n in ("big_lstm", "gru", "small_rnn"))


@pytest.mark.parametrize("native", [True, False], ids=["native", "step-loop"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sorted_packed_input_leaves_the_callers_states_alone(kind, native, monkeypatch):
    """pack_sequence's default (enforce_sorted=True) passes h0 through without a copy: the
    shrinking batch must not write into it (a second call gave other results)."""
    from torch.nn.utils.rnn import pack_sequence

    if not native:
        monkeypatch.setattr(QuantRNN, "_native_loop", lambda self, *a: None)
    q = QuantRNN(_rnn(kind, num_layers=2, bidirectional=True), pyquant.Int8Config())
    packed = pack_sequence([torch.randn(5, 12), torch.randn(3, 12), torch.randn(2, 12)])
    hx = _hx(kind, 4, 3)
    saved = [t.clone() for t in _states(hx)]
    with torch.no_grad():
        first, _ = q(packed, hx)
        second, _ = q(packed, hx)
    assert torch.equal(first.data, second.data)
    for t, s in zip(_states(hx), saved):
        assert torch.equal(t, s)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn-tanh"])
def test_autocast_and_dtypes(kind):
    q = QuantRNN(_rnn(kind), pyquant.Int8Config())
    x = torch.randn(5, 2, 12)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, states = q(x)
    assert out.dtype == torch.bfloat16
    assert all(t.dtype == torch.bfloat16 for t in _states(states))
    bad = _hx(kind, 1, 2)
    bad = tuple(t.double() for t in bad) if isinstance(bad, tuple) else bad.double()
    with pytest.raises(TypeError, match="hx: expected h_0 of the input's dtype"):
        q(x, bad)
    with pytest.raises(TypeError, match="rnn"):
        QuantRNN([1, 2], pyquant.Int8Config())


class _RowReader(nn.Module):
    """Reads a digit's 8 rows as 8 time steps (sklearn's 8x8 digits, shipped with sklearn)."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(8, 64, 2, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU], ids=["lstm", "gru"])
def test_a_trained_model_keeps_its_accuracy(cell):
    """Real data: a 2-layer LSTM / GRU trained on the digits' rows; Int8 keeps the accuracy within
    a point, W4 g32 within three."""
    pytest.importorskip("sklearn")
    from pyquant.studies.digits_cnn import digits_data

    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = digits_data()
    xtr, xte = xtr[:, 0], xte[:, 0]  # [N, 8 steps, 8 features]
    model = _RowReader(cell)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):
        for i in range(0, len(ytr), 64):
            opt.zero_grad()
            F.cross_entropy(model(xtr[i:i + 64]), ytr[i:i + 64]).backward()
            opt.step()
    model.eval()

    def accuracy(m):
        with torch.no_grad():
            return (m(xte).argmax(1) == yte).float().mean().item()

    base = accuracy(model)
    assert base > 0.9
    for config, drop in ((pyquant.Int8Config(), 0.01), (pyquant.WeightOnlyConfig(4, 32), 0.03)):
        q = pyquant.quantize_(copy.deepcopy(model), config)
        assert isinstance(q.rnn, QuantRNN)
        got = accuracy(q)
        assert got >= base - drop, (type(config).__name__, got, base)


def test_relu_rnn_keeps_nan_like_torch():
    """A NaN pre-activation stays NaN through relu on both loops (it was 0 in the native one)."""
    q = QuantRNN(nn.RNN(4, 8, nonlinearity="relu").eval(), pyquant.Int8Config())
    x = torch.randn(3, 1, 4)
    x[1, 0, 2] = float("inf")
    with torch.no_grad():
        native = q(x)[0]
        with pytest.MonkeyPatch.context() as m:
            m.setattr(QuantRNN, "_native_loop", lambda self, *a: None)
            loop = q(x)[0]
    assert torch.isnan(native[1]).all() and torch.isnan(loop[1]).all()


def test_quantized_layers_keep_the_float_layers_mode():
    """A new module starts in training mode: quantize_ gives the quantized layer the float one's,
    so an eval model's QuantRNN and QuantMultiheadAttention apply no dropout (repeatable, close
    to float), and a model in training mode keeps its dropout."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"rnn": nn.LSTM(64, 256, num_layers=2, dropout=0.5),
                           "mha": nn.MultiheadAttention(64, 4, dropout=0.3)}).eval()
    q = pyquant.quantize_(copy.deepcopy(model), pyquant.Int8Config(),
                          filter_fn=pyquant.nn.every_layer_filter)
    assert not q.training and not q["rnn"].training and not q["mha"].training
    x = torch.randn(6, 2, 64)
    with torch.no_grad():
        assert torch.equal(q["rnn"](x)[0], q["rnn"](x)[0])
        assert _cos(q["rnn"](x)[0], model["rnn"](x)[0]) > 0.995
        assert torch.equal(q["mha"](x, x, x)[0], q["mha"](x, x, x)[0])
    trained = pyquant.quantize_(copy.deepcopy(model).train(), pyquant.Int8Config(),
                                filter_fn=pyquant.nn.every_layer_filter)
    assert trained["rnn"].training and trained["mha"].training


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_an_empty_batch_gives_empty_outputs(kind, config):
    rnn = _rnn(kind, num_layers=2, bidirectional=True)
    q = pyquant.quantize_(copy.deepcopy(rnn), config, filter_fn=pyquant.nn.every_layer_filter)
    x = torch.randn(5, 0, 12)
    with torch.no_grad():
        want, got = rnn(x), q(x)
        compiled = torch.compile(q, backend="eager", fullgraph=False)(x)
    assert got[0].shape == want[0].shape == compiled[0].shape == (5, 0, 32)
    assert (got[1][0] if kind == "lstm" else got[1]).shape == (4, 0, 16)


def test_calibrating_with_packed_sequences():
    """A PackedSequence batch is one argument (a named tuple), not four."""
    rnn = _rnn("gru")
    q = pyquant.quantize_(copy.deepcopy(rnn), pyquant.Int8Config(), filter_fn=pyquant.nn.every_layer_filter)
    x = torch.randn(7, 3, 12)
    packed = pack_padded_sequence(x, torch.tensor([7, 5, 2]))
    pyquant.calibrate(q, [packed])
    assert not torch.isnan(q.ih_l0.act_range).any()
