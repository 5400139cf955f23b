"""QuantGRU's native forward (csrc/gru): bit-identical state codes to the Python integer reference
(backend "torch", and tests/reference_gru.py) for every kind of width combination, shape and
input; validated constants (tampered state_dicts raise, naming the buffer); nn.GRU's call forms."""
import copy
import io
import pickle
import threading
import warnings

import numpy as np
import pytest
import torch

import pyquant
from pyquant.nn.gru import GRU_OPS, QuantGRU, StateDictTypeError, StateDictValueError

from reference_gru import gru_reference


def _widths(rng, matmul=None, other=None):
    w = {}
    for op in GRU_OPS:
        if op.startswith("w_"):
            w[op] = int(rng.choice([2, 4, 8])) if matmul is None else matmul
        else:
            w[op] = int(rng.integers(2, 9)) if other is None else other
    return w


def _model(seed, i, h, widths, calib_scale=1.0, batch_first=True):
    torch.manual_seed(seed)
    gru = torch.nn.GRU(i, h, batch_first=batch_first)
    with torch.no_grad():  # larger weights than the default init: saturating gates happen
        for p in gru.parameters():
            p.mul_(2.0)
    calib = torch.randn(2, 3, i) * calib_scale
    return QuantGRU.from_gru(gru, widths, calib=calib if batch_first else calib.transpose(0, 1))


def _codes(q, x, h0, backend):
    q.backend = backend
    try:
        return q.forward_codes(x, h0)
    finally:
        q.backend = "kernels"


CASES = [  # (batch, steps, input, hidden)
    (1, 1, 1, 1), (1, 9, 5, 7), (3, 4, 8, 13), (5, 3, 3, 33), (2, 2, 9, 65), (7, 5, 16, 32),
    (4, 6, 4, 64), (1, 12, 7, 70),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_native_matches_reference_random_widths(case, isa):
    """Random mixed widths (several per shape), h0 given or not, inputs beyond the calibration
    range (clipping) and large ones (saturating gates)."""
    B, T, I, H = CASES[case]
    rng = np.random.default_rng(100 + case)
    for rep in range(6):
        q = _model(case * 10 + rep, I, H, _widths(rng))
        scale = (0.5, 3.0, 40.0)[rep % 3]
        x = torch.randn(B, T, I) * scale
        h0 = None if rep % 2 == 0 else torch.rand(B, H) * 2.4 - 1.2  # beyond [-1, 1] clips
        ref = _codes(q, x, h0, "torch")
        nat = _codes(q, x, h0, "kernels")
        assert nat.dtype == torch.int64 and nat.shape == (B, T, H)
        assert torch.equal(nat, ref), (case, rep, q.widths)


@pytest.mark.parametrize("matmul", [2, 4, 8])
@pytest.mark.parametrize("other", [2, 3, 5, 8])
@pytest.mark.parametrize("hidden", [19, 20])
def test_native_matches_reference_uniform_widths(matmul, other, hidden, isa):
    """Every matmul width with low, odd and full elementwise widths (odd batch; hidden 19 runs
    the int64 step, 20 the narrow one on AVX2)."""
    rng = np.random.default_rng(matmul * 10 + other)
    q = _model(matmul + other, 6, hidden, _widths(rng, matmul, other))
    assert q._plan.narrow_step == (hidden % 4 == 0)
    x = torch.randn(3, 5, 6) * 2
    for h0 in (None, torch.rand(3, hidden) - 0.5):
        assert torch.equal(_codes(q, x, h0, "kernels"), _codes(q, x, h0, "torch"))


@pytest.mark.parametrize("what", ["b_hh", "b_ih", "mult_pre_z_1", "mult_zh_0", "lut_r", "lut_n"])
def test_constants_beyond_32_bits_take_the_int64_step(what, isa):
    """A constant that does not fit the narrow step's 32-bit operands (huge biases, multipliers
    near 2^62, negative or wide table values) sends the plan to the int64 step, still exact
    (wrapping like torch) against the reference."""
    q = _model(5, 6, 16, _widths(np.random.default_rng(9), 8, 6))
    assert q._plan.narrow_step
    sd = q.state_dict()
    t = sd[what].clone()
    t[0] = {"b_hh": 3 << 40, "b_ih": -(3 << 33), "mult_pre_z_1": (1 << 62) + 12345,
            "mult_zh_0": -(1 << 62) - 7, "lut_r": -1, "lut_n": 1 << 20}[what]
    sd[what] = t
    q.load_state_dict(sd)
    assert not q._plan.narrow_step
    x = torch.randn(4, 5, 6) * 3
    for h0 in (None, torch.rand(4, 16) - 0.5):
        assert torch.equal(_codes(q, x, h0, "kernels"), _codes(q, x, h0, "torch")), what


def test_native_matches_every_matmul_width_combination():
    """All 3^6 combinations of the six matmul widths appear across the per-gate groupings: each
    gate of both matrices at each of 2/4/8 with the others at every width (one model each)."""
    rng = np.random.default_rng(7)
    x = torch.randn(3, 4, 5) * 1.5
    for combo in range(27):  # (w_ir, w_iz, w_in) x (w_hr, w_hz, w_hn) gate patterns
        bits = [(2, 4, 8)[(combo // 3 ** k) % 3] for k in range(3)]
        w = _widths(rng)
        for j, g in enumerate("rzn"):
            w["w_i" + g] = bits[j]
            w["w_h" + g] = bits[(j + combo) % 3]
        q = _model(combo, 5, 11, w)
        assert torch.equal(_codes(q, x, None, "kernels"), _codes(q, x, None, "torch")), w


def test_native_matches_independent_numpy_reference():
    rng = np.random.default_rng(3)
    for seed in range(3):
        q = _model(seed, 5, 9, _widths(rng))
        x = torch.randn(2, 4, 5) * 2
        assert np.array_equal(q.forward_codes(x).numpy(), gru_reference(q, x.numpy()))


def test_python_backend_matches_too():
    rng = np.random.default_rng(11)
    q = _model(4, 5, 12, _widths(rng))
    x = torch.randn(3, 4, 5)
    assert torch.equal(_codes(q, x, None, "python"), _codes(q, x, None, "kernels"))


def test_forward_forms_match_nn_gru_shapes():
    """batch_first or not, h0, unbatched input: nn.GRU's shapes; h_n is the last output."""
    for batch_first in (True, False):
        q = _model(5, 4, 10, 8, batch_first=batch_first)
        x = torch.randn(3, 6, 4) if batch_first else torch.randn(6, 3, 4)
        h0 = torch.rand(1, 3, 10) - 0.5
        out, hn = q(x, h0)
        assert out.shape == x.shape[:2] + (10,) and hn.shape == (1, 3, 10)
        last = out[:, -1] if batch_first else out[-1]
        assert torch.equal(hn[0], last)
        q.backend = "torch"
        out_t, hn_t = q(x, h0)
        q.backend = "kernels"
        assert torch.equal(out, out_t) and torch.equal(hn, hn_t)
        xu = x[0] if batch_first else x[:, 0]
        ou, hu = q(xu, h0[:, 0])
        assert ou.shape == (6, 10) and hu.shape == (1, 10)
        assert torch.equal(ou, out[0] if batch_first else out[:, 0])
    with pytest.raises(ValueError, match="x: expected"):
        q.forward_codes(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="h0: expected"):
        q.forward_codes(torch.randn(2, 3, 4), torch.zeros(3, 10))
    q.backend = "fast"
    with pytest.raises(ValueError, match="backend"):
        q(x)


class _WithState(torch.nn.Module):
    def __init__(self, q):
        super().__init__()
        self.q = q

    def forward(self, x, h0):
        return self.q(x, h0)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-first"])
def test_trace_compile_and_export_give_the_eager_bits(batch_first):
    """Traced, compiled and exported, QuantGRU runs as the op pyquant::quant_gru on its constants
    (not as a recorded output): the eager bits on new inputs, for two modules side by side (each
    its own plan), with and without h0, in float32 and float64."""
    rng = np.random.default_rng(3)
    mods = [_model(s, 6, 12, _widths(rng), batch_first=batch_first) for s in (1, 2)]
    shape = (3, 5, 6) if batch_first else (5, 3, 6)
    x1, x2 = torch.randn(shape), torch.randn(shape)
    h0 = torch.rand(1, 3, 12) - 0.5
    for q in mods:
        want = q(x2, h0)
        with warnings.catch_warnings():  # (the shape checks' warnings: a trace fixes shapes)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(_WithState(q), (x1, h0))
        program = torch.export.export(_WithState(q), (x1, h0))
        assert "pyquant.quant_gru" in str(program.graph)
        torch._dynamo.reset()
        compiled = torch.compile(q, backend="aot_eager", fullgraph=True)
        for got in (traced(x2, h0), program.module()(x2, h0), compiled(x2, h0)):
            assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert torch.equal(compiled(x2)[0], q(x2)[0])
        assert torch.equal(compiled(x2.double())[0], q(x2.double())[0])
    assert not torch.equal(mods[0](x2)[0], mods[1](x2)[0])


def test_compiled_quantgru_sees_new_weights_and_inference_tensors():
    """The op's plans follow the constants: weights edited in place reach a compiled module
    (their version counters), and a module built under inference_mode (no version counters:
    their bytes' checksum) compiles and runs; h_n is a tensor of its own."""
    rng = np.random.default_rng(5)
    q, other = _model(1, 6, 12, 8), _model(2, 6, 12, 8)
    x = torch.randn(2, 5, 6)
    torch._dynamo.reset()
    compiled = torch.compile(q, backend="aot_eager")
    before = q(x)[0]
    assert torch.equal(compiled(x)[0], before)
    with torch.no_grad():
        for name in ("w_ih_codes", "w_hh_codes", "b_ih", "b_hh"):
            getattr(q, name).copy_(getattr(other, name))
    q._build_plan()
    assert torch.equal(compiled(x)[0], q(x)[0]) and not torch.equal(q(x)[0], before)
    with torch.inference_mode():
        qi = _model(3, 6, 12, _widths(rng))
    torch._dynamo.reset()
    assert torch.equal(torch.compile(qi, backend="aot_eager")(x)[0], qi(x)[0])
    out, h_n = q(x.clone().requires_grad_())
    h_n.mul_(2)  # (not a view of out)
    assert torch.equal(out[:, -1], q(x)[1][0])


def test_backward_through_quantgru_is_a_clear_error():
    """A plain call whose input or state requires grad (after float layers) gives the no_grad
    bits; a backward from either output is the error naming the layer (not a silent cut)."""
    q = _model(4, 6, 12, 8)
    x, h0 = torch.randn(2, 5, 6), torch.rand(1, 2, 12) - 0.5
    with torch.no_grad():
        want = q(x, h0)
    for xg, hg in ((x.clone().requires_grad_(), h0), (x, h0.clone().requires_grad_())):
        got = q(xg, hg)
        for a, b in zip(got, want):
            assert a.requires_grad and torch.equal(a.detach(), b)
            with pytest.raises(RuntimeError, match="QuantGRU is inference-only"):
                a.sum().backward(retain_graph=True)
    assert not q(x)[0].requires_grad


def test_empty_sequence_and_threads():
    q = _model(6, 3, 8, 4)
    assert q.forward_codes(torch.randn(2, 0, 3)).shape == (2, 0, 8)
    x = torch.randn(40, 5, 3)
    ref = q.forward_codes(x)
    prev = pyquant.get_num_threads()
    try:
        pyquant.set_num_threads(2)
        assert torch.equal(q.forward_codes(x), ref)
    finally:
        pyquant.set_num_threads(prev)
    # concurrent callers (the GIL is released inside): same results
    res = [None] * 4

    def work(k):
        res[k] = q.forward_codes(x)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(torch.equal(r, ref) for r in res)


def test_copy_pickle_and_state_dict_round_trip():
    q = _model(7, 5, 9, {**{op: 4 for op in GRU_OPS}, "w_hz": 2, "w_in": 8, "add_h": 6})
    x = torch.randn(2, 3, 5)
    ref = q.forward_codes(x)
    assert torch.equal(copy.deepcopy(q).forward_codes(x), ref)
    assert torch.equal(pickle.loads(pickle.dumps(q)).forward_codes(x), ref)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    q2 = QuantGRU(5, 9, batch_first=True)
    q2.load_state_dict(torch.load(buf))
    assert torch.equal(q2.forward_codes(x), ref)


def test_whole_module_pickle_is_validated():
    q = _model(7, 5, 9, 4)
    with torch.no_grad():
        q._buffers["scales_t"] = torch.tensor([float(q.scales_t[0]), 1e300], dtype=torch.float64)
    with pytest.raises(StateDictValueError, match="scales_t: element 1"):
        pickle.loads(pickle.dumps(q))


def _tampered(sd, name, value):
    sd = {k: v.clone() for k, v in sd.items()}
    sd[name] = value
    return sd


def test_tampered_state_dict_is_rejected_naming_the_buffer():
    q = _model(8, 5, 9, {**{op: 4 for op in GRU_OPS}, "add_r": 5})
    x = torch.randn(2, 3, 5)
    ref = q.forward_codes(x)
    sd = q.state_dict()
    bad = [
        ("w_hh_codes", sd["w_hh_codes"].float(), StateDictTypeError, "w_hh_codes: expected dtype"),
        ("w_hh_codes", sd["w_hh_codes"][:-1], StateDictValueError, r"w_hh_codes: expected shape \[27, 9\]"),
        ("w_ih_codes", torch.full_like(sd["w_ih_codes"], 100), StateDictValueError,
         r"w_ih_codes: rows of w_ir \(4 bits\) must hold codes in \[-7, 7\]"),
        ("w_hh_codes", torch.full_like(sd["w_hh_codes"], -128), StateDictValueError,
         r"w_hh_codes: rows of w_hr \(4 bits\) must hold codes in \[-7, 7\], found 128"),
        ("lut_r", sd["lut_r"][:-1], StateDictValueError, r"lut_r: expected shape \[31\]"),
        ("lut_n", sd["lut_n"].to(torch.int32), StateDictTypeError, "lut_n: expected dtype"),
        ("widths_t", torch.tensor([8] * 16 + [9]), StateDictValueError, "widths_t: .*add_h"),
        ("widths_t", torch.tensor([3] + [8] * 16), StateDictValueError, "widths_t: .*w_ir"),
        ("widths_t", torch.tensor([8] * 17, dtype=torch.int64)[:16], StateDictValueError,
         r"widths_t: expected shape \[17\]"),
        ("mult_pre_n_1", sd["mult_pre_n_1"][:3], StateDictValueError, r"mult_pre_n_1: expected shape \[9\]"),
        ("mult_h_0", sd["mult_h_0"].repeat(2), StateDictValueError, r"mult_h_0: expected shape \[1\]"),
        ("b_hh", sd["b_hh"][:5], StateDictValueError, r"b_hh: expected shape \[27\]"),
        ("scales_t", torch.tensor([float("nan"), 1.0], dtype=torch.float64), StateDictValueError,
         "scales_t: expected finite"),
        ("ranges_t", [1.0] * 5, StateDictTypeError, "ranges_t: expected a torch.Tensor"),
        ("mult_zn_0", sd["mult_zn_0"].double(), StateDictTypeError,
         "mult_zn_0: expected dtype torch.int64"),
        # the hidden state's scale follows from add_h's width: not another free constant
        ("scales_t", torch.tensor([float(sd["scales_t"][0]), 2.0], dtype=torch.float64),
         StateDictValueError, r"scales_t: element 1 .* must be 1 / 7"),
        ("lut_r", sd["lut_r"].to("meta"), StateDictTypeError, "lut_r: expected a dense tensor"),
        ("lut_z", sd["lut_z"].to_sparse(), StateDictTypeError, "lut_z: expected a dense tensor"),
    ]
    # an 8-bit row holding -128 (outside the symmetric codes) too
    q8 = _model(8, 5, 9, 8)
    sd8 = q8.state_dict()
    w8 = sd8["w_hh_codes"].clone()
    w8[0, 0] = -128
    with pytest.raises(StateDictValueError, match="found 128"):
        QuantGRU(5, 9, batch_first=True).load_state_dict({**sd8, "w_hh_codes": w8})
    for name, value, exc, msg in bad:
        q2 = QuantGRU(5, 9, batch_first=True)
        with pytest.raises(exc, match=msg):
            q2.load_state_dict(_tampered(sd, name, value))
        # a failed load leaves a converted module as it was
        with pytest.raises(exc):
            q.load_state_dict(_tampered(sd, name, value))
        assert torch.equal(q.forward_codes(x), ref)
    # both kinds are RuntimeErrors too, like torch's own load_state_dict errors
    assert issubclass(StateDictValueError, RuntimeError) and issubclass(StateDictTypeError, RuntimeError)
    # a width change comes with table lengths that match it: a consistent state_dict of other
    # widths loads (shapes follow the widths), and says so (QuantLinear refuses another config)
    q3 = _model(9, 5, 9, {**{op: 8 for op in GRU_OPS}, "add_n": 3})
    with pytest.warns(UserWarning, match="operator widths differ .*w_ir 4 -> 8"):
        q.load_state_dict(q3.state_dict())
    assert torch.equal(q.forward_codes(x), q3.forward_codes(x))


def test_native_plan_validates_on_its_own():
    """The C++ plan re-checks shapes, ranges and table lengths (ValueError, never a crash)."""
    q = _model(10, 3, 4, 4)
    mults = [getattr(q, f"mult_{k}_{j}").numpy() for k, n in q._MULTS for j in range(n)]
    args = dict(w_ih=q.w_ih, w_hh=q.w_hh, widths=q.widths_t.tolist(), b_ih=q.b_ih.numpy(),
                b_hh=q.b_hh.numpy(), lut_r=q.lut_r.numpy(), lut_z=q.lut_z.numpy(),
                lut_n=q.lut_n.numpy(), mults=mults, shift=36)
    pyquant._C.GruPlan(**args)
    for key, val, msg in (("lut_z", q.lut_z.numpy()[:-1], "lut_z"),
                          ("w_hh", np.full_like(q.w_hh, 8), "w_hh_codes"),
                          ("widths", [8] * 16 + [1], "add_h"),
                          ("mults", mults[:-1], "mults"),
                          ("b_ih", q.b_ih.numpy()[:2], "b_ih")):
        with pytest.raises(ValueError, match=msg):
            pyquant._C.GruPlan(**{**args, key: val})
    plan = pyquant._C.GruPlan(**args)
    with pytest.raises(ValueError, match="x: expected 3 features"):
        plan.forward(np.zeros((1, 2, 4), np.int8), None)
    with pytest.raises(ValueError, match="h0"):
        plan.forward(np.zeros((1, 2, 3), np.int8), np.zeros((2, 4), np.int8))


def test_native_input_quantization_matches_quantize_input():
    """The native forward quantizes float32 inputs itself: the same codes as quantize_input
    (division in float64, ties to even, clamp), on ties, range edges and beyond."""
    q = _model(1, 5, 8, _widths(np.random.default_rng(2), 8, 8))
    s = q.s_x
    k = torch.arange(-140, 141, dtype=torch.float64)
    vals = torch.cat([(k + 0.5) * s, k * s, (k + 0.5) * s * (1 + 1e-7), torch.tensor([0.0, -0.0, 1e30, -1e30])])
    x = vals.float()[: (vals.numel() // 5) * 5].reshape(1, -1, 5)
    ref = q.quantize_input(x).numpy()
    assert np.array_equal(pyquant._C.gru_quantize_input(x.numpy(), s), ref)
    with pytest.raises(ValueError, match="s_x"):
        pyquant._C.gru_quantize_input(x.numpy(), 0.0)


def test_unbatched_calibration_and_empty_sequences():
    """calib= takes an unbatched sequence as nn.GRU does (the same ranges as a batch of one);
    a sequence without time steps is a clear error."""
    torch.manual_seed(4)
    for batch_first in (False, True):
        g = torch.nn.GRU(6, 16, batch_first=batch_first)
        seq = torch.randn(5, 6)
        one = seq.unsqueeze(0 if batch_first else 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = QuantGRU.from_gru(g, 8, calib=seq)
            b = QuantGRU.from_gru(g, 8, calib=one)
        x = torch.randn(5, 2, 6)
        assert torch.equal(a(x)[0], b(x)[0])
        with pytest.raises(ValueError, match="at least one time step"):
            a(torch.randn(0, 3, 6) if not batch_first else torch.randn(3, 0, 6))
    with pytest.raises(ValueError, match="calib: expected"):
        QuantGRU.from_gru(torch.nn.GRU(6, 16), 8, calib=torch.randn(5, 7))
