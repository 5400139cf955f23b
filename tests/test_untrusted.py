"""Packed weights and state dicts from files other people wrote (issues 14 and 16).

Every header field of every op's packed weight edited, the buffer truncated or extended: the
kernels' validator (``_C.validate_packed``), every native entry point and every Python op raise
ValueError, never crash. Quantized modules refuse edited state dicts at load time, and state
dicts of plain tensors round-trip through ``torch.load(weights_only=True)`` and safetensors bit
for bit.
"""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import pyquant
from pyquant import _C
from pyquant.nn import _backend
from pyquant.packed import PackedWeight
from packed_cases import CASE_IDS, CASES, consistent_edits, header, structural_edits, with_field

STRUCTURAL = [(c, label, buf) for c in CASES for label, buf in structural_edits(c)]
CONSISTENT = [(c, label, buf) for c in CASES for label, buf in consistent_edits(c)]


def _id(case_edit):
    return f"{case_edit[0].name}-{case_edit[1]}"


# ----------------------------------------------------------------------------- the validator
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_untampered_buffers_validate(case):
    info = _C.validate_packed(case.buffer, case.op)
    assert (info["op"], info["n"], info["k"], info["nbytes"]) == (case.op, 70, 37, case.buffer.size)
    assert info["params"] == {k: tuple(v) if isinstance(v, (list, tuple)) else v
                              for k, v in case.params.items()}
    for call in case.calls.values():
        call(case.buffer)


@pytest.mark.parametrize("case_edit", STRUCTURAL, ids=[_id(e) for e in STRUCTURAL])
def test_structural_edit_is_a_value_error_everywhere(case_edit):
    case, label, buf = case_edit
    with pytest.raises(ValueError, match="w: "):
        _C.validate_packed(buf, case.op)
    for name, call in case.calls.items():
        with pytest.raises(ValueError):
            call(buf)


@pytest.mark.parametrize("case_edit", CONSISTENT, ids=[_id(e) for e in CONSISTENT])
def test_edit_that_disagrees_with_the_call_is_a_value_error(case_edit):
    case, label, buf = case_edit
    _C.validate_packed(buf, case.op)  # a header some packer writes ...
    for name, call in case.calls.items():  # ... but not for these arguments
        with pytest.raises(ValueError):
            call(buf)
    if label.startswith("k+1"):
        return
    with pytest.raises(ValueError, match="params: .* header records"):
        PackedWeight(buf, case.op, case.params).validate()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_error_names_the_field_and_expected_value(case):
    want = int(header(case.buffer)["n_padded"])  # 128 for the 64-column panels, 96 for 32
    buf = with_field(case.buffer, "n_padded", 64)
    with pytest.raises(ValueError, match=rf"w: invalid packed weight .*n_padded is 64, expected {want}"):
        _C.validate_packed(buf, case.op)
    with pytest.raises(ValueError, match=r"size \d+ bytes does not match its header"):
        _C.validate_packed(case.buffer[:-1].copy(), case.op)
    other = "lut_gemm" if case.op != "lut_gemm" else "int8_gemm"
    with pytest.raises(ValueError, match=f"packed for '{case.op}', not '{other}'"):
        _C.validate_packed(case.buffer, other)


# ----------------------------------------------------------------------------- the payload
INT8_LAYOUT = [c for c in CASES if c.op in ("int8_gemm", "sparq_gemm")]


def _int8_payload_edits(buf):
    """(label, edited copy): the int8 layout's column sums (aux, int32 [N_pad]) out of step with
    the panels ([N_pad/64][K_pad/4][64][4] int8)."""
    h = header(buf)
    aux, data = int(h["aux_offset"]), int(h["data_offset"])
    edits = {"aux byte": aux, "last column's sum": aux + 4 * 69 + 3, "weight (0, 0)": data,
             "weight (69, 36)": data + (69 // 64) * 10 * 256 + 9 * 256 + (69 % 64) * 4 + 0}
    out = []
    for label, at in edits.items():
        b = buf.copy()
        b[at] ^= 0x41
        out.append((label, b))
    return out


@pytest.mark.parametrize("case", INT8_LAYOUT, ids=[c.name for c in INT8_LAYOUT])
def test_column_sums_are_checked_against_the_weights(case):
    # the aux sums are the signed-activation paths' +-128 correction: one edited byte there (or a
    # weight edited without its sum) gave the raw signed int8_gemm a silent wrong answer. The
    # load-time checks recompute them from the panels (one pass); per call the header suffices.
    for label, buf in _int8_payload_edits(case.buffer):
        with pytest.raises(ValueError, match=rf"w: invalid packed weight \({case.op}\): column "
                                             r"\d+'s sum in the aux area is -?\d+, expected -?\d+"):
            _C.validate_packed(buf, case.op)
        _C.validate_packed(buf, case.op, payload=False)  # (what the ops check per call)
        with pytest.raises(ValueError, match=r"buffer: .*aux area"):
            PackedWeight(buf, case.op, case.params).validate()
        bad = PackedWeight.__new__(PackedWeight)
        object.__setattr__(bad, "buffer", buf)
        object.__setattr__(bad, "op", case.op)
        object.__setattr__(bad, "params", case.params)
        with pytest.raises(ValueError, match="aux area"):
            pickle.loads(pickle.dumps(bad))
    # the K padding (k = 37..39) and the columns past N (70..127) reach no output: not checked
    h = header(case.buffer)
    data = int(h["data_offset"])
    b = case.buffer.copy()
    b[data + 9 * 256 + 5 * 4 + 1] = 7  # column 5, k = 37
    b[data + 1 * 10 * 256 + (100 - 64) * 4] = 9  # column 100, k = 0
    _C.validate_packed(b, case.op)


@pytest.mark.parametrize("config", [pyquant.Int8Config(), pyquant.SparqConfig()],
                         ids=["int8", "sparq"])
def test_state_dict_with_edited_column_sums_is_refused(config):
    model, fresh = _models(config)
    sd = model.state_dict()
    with torch.no_grad():
        y_fresh = fresh(X)
    for label, buf in _int8_payload_edits(sd["0.packed"].numpy()):
        bad = dict(sd)
        bad["0.packed"] = torch.from_numpy(buf)
        with pytest.raises(ValueError, match=r"0\.packed: invalid packed weight .*aux area"):
            fresh.load_state_dict(bad)
        with torch.no_grad():
            assert torch.equal(fresh(X), y_fresh), label
    fresh.load_state_dict(sd)


def test_n_within_the_padding_is_another_valid_weight():
    """The ops cannot know N: a header claiming N+1 (inside the panel padding) describes a
    weight with one more row; the kernels stay inside the buffer and agree on the first N
    columns. Side tensors of the old length and quantized modules (below) refuse it."""
    case = CASES[0]
    buf = with_field(case.buffer, "n", 71)
    full = case.calls["_C.int8_gemm"](case.buffer)
    more = case.calls["_C.int8_gemm"](buf)
    assert more.shape == (5, 71) and np.array_equal(more[:, :70], full)
    with pytest.raises(ValueError, match="col_scale"):
        case.calls["_C.int8_gemm_dequant"](buf)


def test_validate_packed_argument_errors():
    with pytest.raises(ValueError, match="op: unknown packed op"):
        _C.validate_packed(CASES[0].buffer, "int3_gemm")
    with pytest.raises(ValueError, match="1-D"):
        _C.validate_packed(CASES[0].buffer.reshape(-1, 64), "int8_gemm")
    with pytest.raises(TypeError):
        _C.validate_packed(CASES[0].buffer.astype(np.float32), "int8_gemm")
    with pytest.raises(ValueError, match="int8_gemm"):
        _C.int8_prepack(np.zeros((2, 2), np.int8), 3)
    assert _C.PACKED_MAX_K == 2**24 - 1 and _C.PACKED_MAX_N == 2**31 - 1


# ----------------------------------------------------------------------------- PackedWeight pickles
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_packed_weight_pickle(case):
    pw = PackedWeight(case.buffer.copy(), case.op, case.params)
    back = pickle.loads(pickle.dumps(pw))
    assert np.array_equal(back.buffer, pw.buffer) and back.params == pw.params
    for label, buf in structural_edits(case)[:12] + consistent_edits(case)[1:]:
        bad = PackedWeight.__new__(PackedWeight)
        object.__setattr__(bad, "buffer", buf)
        object.__setattr__(bad, "op", case.op)
        object.__setattr__(bad, "params", case.params)
        data = pickle.dumps(bad)
        with pytest.raises(ValueError):
            pickle.loads(data)


def test_packed_weight_pickle_bad_state():
    pw = PackedWeight(CASES[0].buffer.copy(), "int8_gemm")
    for state in ({"buffer": pw.buffer.astype(np.int8), "op": "int8_gemm", "params": {}},
                  {"buffer": pw.buffer, "op": 1, "params": {}},
                  {"buffer": pw.buffer, "op": "int8_gemm", "params": []},
                  {"buffer": pw.buffer}):
        with pytest.raises(TypeError):
            PackedWeight.__new__(PackedWeight).__setstate__(state)
    with pytest.raises(ValueError, match="not 'lut_gemm'"):
        PackedWeight.__new__(PackedWeight).__setstate__(
            {"buffer": pw.buffer, "op": "lut_gemm", "params": {}})


def test_packed_weight_params_that_are_not_levels():
    # params from a pickle whose levels are not integers: a ValueError naming params (int()
    # of them was an OverflowError / TypeError)
    case = next(c for c in CASES if c.op == "lut_gemm")
    for levels in ([float("inf"), 0, 0, 0], [None] * 4, [[1]] * 4, [float("nan")] * 4):
        with pytest.raises(ValueError, match=r"params: w_levels=.* but the buffer's header records"):
            PackedWeight.__new__(PackedWeight).__setstate__(
                {"buffer": case.buffer, "op": "lut_gemm", "params": {"w_levels": levels}})


def test_packed_weight_from_a_strided_buffer():
    # a strided 1-D uint8 view (numpy's "last axis must be contiguous" error when the header
    # was read) is copied into a contiguous buffer, as unpickling does
    case = next(c for c in CASES if c.op == "lut_gemm")
    big = np.zeros(case.buffer.size * 2, np.uint8)
    big[::2] = case.buffer
    pw = PackedWeight(big[::2], case.op, case.params)
    assert pw.buffer.flags.c_contiguous and np.array_equal(pw.buffer, case.buffer)
    assert pw.validate()["n"] == 70
    assert np.array_equal(case.calls["pyquant.lut_gemm"](pw.buffer),
                          case.calls["pyquant.lut_gemm"](case.buffer))


def test_packed_weight_constructor_small_buffers():
    for size in (0, 1, 63):
        with pytest.raises(ValueError, match="smaller than the 64-byte"):
            PackedWeight(np.zeros(size, np.uint8), "int8_gemm")


# ----------------------------------------------------------------------------- quantized modules
CONFIGS = [
    pytest.param(pyquant.Int8Config(), id="int8"),
    pytest.param(pyquant.WeightOnlyConfig(bits=4, group_size=32), id="w4g32"),
    pytest.param(pyquant.WeightOnlyConfig(bits=2, group_size=64), id="w2g64"),
    pytest.param(pyquant.LUT2Config(), id="lut2"),
    pytest.param(pyquant.SparqConfig(), id="sparq"),
    pytest.param(pyquant.SparqConfig(options=2, rounding="trunc", pairs=False), id="sparq-2opt"),
]


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 70), nn.ReLU(), nn.Linear(70, 9))


def _models(config):
    model = pyquant.quantize_(_net(1), config)
    fresh = pyquant.quantize_(_net(2), config)
    return model, fresh


X = torch.randn(6, 40, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_holds_plain_tensors(config):
    model, _ = _models(config)
    sd = model.state_dict()
    assert sd and all(type(v) is torch.Tensor for v in sd.values())
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in sd.values())


@pytest.mark.parametrize("config", CONFIGS)
def test_weights_only_torch_load_round_trip(config):
    model, fresh = _models(config)
    with torch.no_grad():
        y = model(X)
        assert not torch.equal(fresh(X), y)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        buf.seek(0)
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        assert torch.equal(fresh(X), y)


@pytest.mark.parametrize("config", CONFIGS)
def test_safetensors_round_trip(config, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model, fresh = _models(config)
    with torch.no_grad():
        y = model(X)
        st.save_file(model.state_dict(), tmp_path / "m.safetensors")
        fresh.load_state_dict(st.load_file(tmp_path / "m.safetensors"))
        assert torch.equal(fresh(X), y)


def _packed_keys(sd):
    return [k for k in sd if k.endswith("packed")]


@pytest.mark.parametrize("config", CONFIGS)
def test_tampered_state_dict_is_refused_at_load(config):
    model, fresh = _models(config)
    sd = model.state_dict()
    with torch.no_grad():
        y_fresh = fresh(X)
    key = _packed_keys(sd)[0]
    buf = sd[key].numpy()
    h = header(buf)
    edits = [
        ("n+1", with_field(buf, "n", int(h["n"]) + 1)),
        ("n-1", with_field(buf, "n", int(h["n"]) - 1)),
        ("k+1", with_field(buf, "k", int(h["k"]) + 1)),
        ("n=2^32-1", with_field(buf, "n", 2**32 - 1)),
        ("k=2^24", with_field(buf, "k", 2**24)),
        ("magic", with_field(buf, "magic", b"XQWT")),
        ("version", with_field(buf, "version", 2)),
        ("op", with_field(buf, "op", 1 + int(h["op"]) % 4)),
        ("op=0", with_field(buf, "op", 0)),
        ("bits", with_field(buf, "bits", 3)),
        ("nr", with_field(buf, "nr", 32)),
        ("kr", with_field(buf, "kr", 8)),
        ("n_padded", with_field(buf, "n_padded", 0)),
        ("k_padded", with_field(buf, "k_padded", int(h["k_padded"]) + 4)),
        ("flags", with_field(buf, "flags", int(h["flags"]) ^ 0x10)),
        ("w_levels", with_field(buf, "w_levels", (5, 6, 7, 8))),
        ("reserved", with_field(buf, "reserved", 7)),
        ("data_offset", with_field(buf, "data_offset", 0)),
        ("aux_offset", with_field(buf, "aux_offset", int(h["aux_offset"]) + 64)),
        ("total_bytes", with_field(buf, "total_bytes", buf.size + 64)),
        ("truncated", buf[:-1].copy()),
        ("header-only", buf[:64].copy()),
        ("empty", buf[:0].copy()),
        ("extended", np.concatenate([buf, np.zeros(64, np.uint8)])),
    ]
    for label, b in edits:
        bad = dict(sd)
        bad[key] = torch.from_numpy(b)
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            fresh.load_state_dict(bad)
        with torch.no_grad():  # nothing was copied: the module is as it was
            assert torch.equal(fresh(X), y_fresh), label


@pytest.mark.parametrize("config", CONFIGS)
def test_side_tensors_are_checked_at_load(config):
    model, fresh = _models(config)
    sd = model.state_dict()
    for key, v in sd.items():
        bad = dict(sd)
        if not key.endswith("packed"):  # (packed buffers: the header check names them first)
            bad[key] = torch.cat([v.reshape(-1), v.reshape(-1)[:1]])
            with pytest.raises(ValueError, match=f"{key.replace('.', '[.]')}: expected shape"):
                fresh.load_state_dict(bad)
        bad[key] = v.to(torch.float64 if v.dtype != torch.float64 else torch.float32)
        with pytest.raises(ValueError, match=f"{key.replace('.', '[.]')}: expected dtype"):
            fresh.load_state_dict(bad)
    bad = dict(sd)
    bad[_packed_keys(sd)[0]] = [1, 2, 3]
    with pytest.raises(TypeError, match="expected a tensor"):
        fresh.load_state_dict(bad)


@pytest.mark.parametrize("config", CONFIGS)
def test_meta_and_sparse_entries_are_type_errors(config):
    # no data (meta) or no flat memory (sparse): torch's NotImplementedError / RuntimeError from
    # deep inside the checks before; a TypeError naming the key, the module unchanged
    model, fresh = _models(config)
    sd, own = model.state_dict(), {k: v.clone() for k, v in fresh.state_dict().items()}
    with torch.no_grad():
        y_fresh = fresh(X)
    for key in sd:
        for label, make in (("meta", lambda v: v.to("meta")), ("sparse", lambda v: v.to_sparse())):
            for assign in (False, True):
                bad = dict(own)  # (the other layers load their own values)
                bad[key] = make(sd[key])
                with pytest.raises(TypeError, match=rf"{key.replace('.', '[.]')}: expected a "
                                                    "dense tensor with data"):
                    fresh.load_state_dict(bad, assign=assign)
        with torch.no_grad():
            assert torch.equal(fresh(X), y_fresh), key


@pytest.mark.parametrize("config", CONFIGS)
def test_assign_load_installs_plain_contiguous_buffers(config):
    # torch.load(weights_only=True) rebuilds Parameters and keeps strides: with assign=True torch
    # installs the given objects, so each must become a plain contiguous tensor (same values)
    model, fresh = _models(config)
    with torch.no_grad():
        y = model(X)
    variants = {
        "parameter": lambda v: nn.Parameter(v.clone(), requires_grad=v.is_floating_point()),
        "requires_grad": lambda v: v.clone().requires_grad_(True) if v.is_floating_point() else v,
        "strided": lambda v: torch.stack([v, v], -1).select(-1, 0) if v.dim() == 1 else v,
    }
    for label, make in variants.items():
        fresh = _models(config)[1]
        sd = {k: make(v) for k, v in model.state_dict().items()}
        fresh.load_state_dict(sd, assign=True)
        for name, b in fresh.named_buffers():
            assert type(b) is torch.Tensor and not b.requires_grad and b.is_contiguous(), (label, name)
        assert not list(fresh.parameters()), label
        with torch.no_grad():
            assert torch.equal(fresh(X), y), label


@pytest.mark.parametrize("config", CONFIGS)
def test_act_range_is_checked_at_load(config):
    model, fresh = _models(config)
    sd = model.state_dict()
    key = next(k for k in sd if k.endswith("act_range"))
    with torch.no_grad():
        y_fresh = fresh(X)
    # [-3e38, 3e38]: finite, but hi - lo overflows float32 (it loaded and every output was NaN)
    for bad_range in ([1.0, -1.0], [-float("inf"), float("inf")], [float("nan"), 1.0],
                      [0.0, float("nan")], [-3e38, 3e38], [-1.8e38, 1.7e38]):
        bad = dict(sd)
        bad[key] = torch.tensor(bad_range)
        with pytest.raises(ValueError, match=f"{key.replace('.', '[.]')}: expected"):
            fresh.load_state_dict(bad)
        with torch.no_grad():
            assert torch.equal(fresh(X), y_fresh)
    good = dict(sd)
    for ok in ([-2.0, 3.0], [0.0, 3.4e38], [-1.7e38, 1.7e38]):  # static ranges float32 holds
        good[key] = torch.tensor(ok)
        fresh.load_state_dict(good)


@pytest.mark.parametrize("config", CONFIGS)
def test_w_scale_is_bounded_at_load(config):
    # a scale whose dequantized row sums overflow float32 (3e38 loaded: NaN/inf outputs) is
    # refused by name; the bound is float32's max / (largest weight code x K)
    model, fresh = _models(config)
    sd = model.state_dict()
    key = "0.w_scale"
    code, k = fresh[0].scheme.code_max, fresh[0].in_features_k
    limit = torch.finfo(torch.float32).max / (code * k)
    with torch.no_grad():
        y_fresh = fresh(X)
    for value in (3e38, -3e38, limit * 1.01):
        bad = dict(sd)
        bad[key] = sd[key].clone()
        bad[key].view(-1)[1] = value
        with pytest.raises(ValueError, match=r"0\.w_scale: expected \|values\| <= "):
            fresh.load_state_dict(bad)
        with torch.no_grad():
            assert torch.equal(fresh(X), y_fresh)
    ok = dict(sd)
    ok[key] = sd[key].clone()
    ok[key].view(-1)[1] = limit * (0.99 if sd[key].dtype == torch.float32 else 0.9)
    fresh.load_state_dict(ok)  # at the bound: loads


def test_packed_of_two_dims_is_refused_by_name():
    model, fresh = _models(pyquant.Int8Config())
    sd = model.state_dict()
    key = _packed_keys(sd)[0]
    bad = dict(sd)
    bad[key] = sd[key].unsqueeze(-1)
    with pytest.raises(ValueError, match=f"{key.replace('.', '[.]')}: expected a 1-D tensor"):
        fresh.load_state_dict(bad)


def test_state_dict_of_another_config_is_refused():
    sd_w4 = pyquant.quantize_(_net(1), pyquant.WeightOnlyConfig(bits=4, group_size=32)).state_dict()
    w2 = pyquant.quantize_(_net(1), pyquant.WeightOnlyConfig(bits=2, group_size=32))
    with pytest.raises(ValueError, match="packed"):
        w2.load_state_dict(sd_w4)
    sd_lut = pyquant.quantize_(_net(1), pyquant.LUT2Config()).state_dict()
    lut_other = pyquant.quantize_(_net(1), pyquant.LUT2Config(w_levels=(-2, -1, 0, 1)))
    with pytest.raises(ValueError, match="w_levels"):
        lut_other.load_state_dict(sd_lut)
    sparq_trunc = pyquant.quantize_(_net(1), pyquant.SparqConfig(rounding="trunc"))
    with pytest.raises(ValueError, match="rounding"):
        sparq_trunc.load_state_dict(pyquant.quantize_(_net(1), pyquant.SparqConfig()).state_dict())
    # another family: named as a config mismatch, before any dtype or shape check could fire
    configs = [pyquant.Int8Config(), pyquant.WeightOnlyConfig(4, 32), pyquant.LUT2Config(),
               pyquant.SparqConfig(), pyquant.SparqConfig(sparse24=True)]
    saved = [pyquant.quantize_(_net(1), c).state_dict() for c in configs]
    for i, theirs in enumerate(configs):
        for j, mine in enumerate(configs):
            if i != j:
                model = pyquant.quantize_(_net(1), mine)
                with pytest.raises(ValueError, match=r"packed for '\w+' \(saved with .*Config"):
                    model.load_state_dict(saved[i], strict=False)


def test_reference_modules_check_dtype_and_shape():
    with _backend.use_reference():
        model, fresh = _models(pyquant.Int8Config())
    sd = model.state_dict()
    fresh.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(fresh(X), model(X))
    bad = dict(sd)
    bad["0.packed"] = sd["0.packed"][:-1]
    with pytest.raises(ValueError, match=r"0\.packed: expected shape"):
        fresh.load_state_dict(bad)


@pytest.mark.parametrize("config", CONFIGS + [
    pytest.param(pyquant.SparqConfig(sparse24=True), id="sparq24")])
def test_whole_module_copies(config, tmp_path):
    import copy
    model, _ = _models(config)
    with torch.no_grad():
        y = model(X)
        torch.save(model, tmp_path / "m.pt")
        for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)),
                      torch.load(tmp_path / "m.pt", weights_only=False)):
            assert torch.equal(other(X), y)


def test_whole_module_pickle_is_validated(tmp_path):
    model, _ = _models(pyquant.SparqConfig())
    with torch.no_grad():
        y = model(X)
    torch.save(model, tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=False)(X), y)
    buf = model[0].packed
    with torch.no_grad():
        model[0].packed = torch.from_numpy(with_field(buf.numpy(), "n", 65536))
    torch.save(model, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="packed: invalid packed weight"):
        torch.load(tmp_path / "bad.pt", weights_only=False)


@pytest.mark.parametrize("config", CONFIGS)
def test_whole_module_pickle_checks_side_tensors(config, tmp_path):
    """torch.load(weights_only=False) of a whole model runs the state-dict path's checks on the
    side tensors too (dtype, shape, finite values), not only on the packed weights."""
    n = 0
    for name, edit, match in (
            ("w_scale", lambda t: torch.full_like(t, float("nan")), "w_scale: expected finite"),
            ("w_scale", lambda t: t[:3].clone(), "w_scale: expected shape"),
            ("w_scale", lambda t: t.double(), "w_scale: expected dtype"),
            ("bias", lambda t: torch.full_like(t, float("inf")), "bias: expected finite"),
            ("act_range", lambda t: torch.tensor([1.0, -1.0]), "act_range: expected")):
        model, _ = _models(config)
        with torch.no_grad():
            model[0]._buffers[name] = edit(model[0]._buffers[name])
        torch.save(model, tmp_path / f"bad{n}.pt")
        with pytest.raises(ValueError, match=match):
            torch.load(tmp_path / f"bad{n}.pt", weights_only=False)
        n += 1


def test_per_group_layout_offsets_are_checked(monkeypatch):
    config = pyquant.WeightOnlyConfig(bits=4, group_size=32)
    monkeypatch.setattr(_backend, "available", lambda op: op != "lowbit_gemm_grouped")
    model, fresh = _models(config)
    sd = model.state_dict()
    assert "0.packed_offsets" in sd
    fresh.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(fresh(X), model(X))
    for offsets in (sd["0.packed_offsets"].flip(0), sd["0.packed_offsets"] + 1):
        bad = dict(sd)
        bad["0.packed_offsets"] = offsets
        with pytest.raises(ValueError, match="packed"):
            fresh.load_state_dict(bad)
    bad = dict(sd)
    bad["0.packed"] = torch.from_numpy(with_field(sd["0.packed"].numpy(), "k", 31))
    with pytest.raises(ValueError, match=r"0\.packed: header field k is 31, expected 32"):
        fresh.load_state_dict(bad)


def test_whole_module_pickle_of_reference_modules_and_other_default_dtypes(monkeypatch):
    """The unpickling checks take nothing from the unpickling process's state: a reference
    module whose op this build lacks, and a float64 default dtype, both round-trip."""
    model, _ = _models(pyquant.Int8Config())
    with torch.no_grad():
        y = model(X)
    torch.set_default_dtype(torch.float64)
    try:
        assert torch.equal(pickle.loads(pickle.dumps(model))(X), y)
        built = pyquant.quantize_(_net(1), pyquant.WeightOnlyConfig(4, 32))  # (float32 buffers)
        assert all(t.dtype != torch.float64 for t in built.state_dict().values())
        pickle.loads(pickle.dumps(built))
    finally:
        torch.set_default_dtype(torch.float32)
    with _backend.use_reference():
        ref = pyquant.quantize_(_net(1), pyquant.LUT2Config())
    monkeypatch.setattr(_backend, "available", lambda op: op != "lut_gemm")
    with torch.no_grad():
        assert torch.equal(pickle.loads(pickle.dumps(ref))(X), ref(X))
