"""Seeded fuzzing of packed weights and quantized state dicts (issue 16).

Each case mutates an untampered packed buffer (or state dict) and runs every consumer. A case
must end in one of:
- ``error``: ValueError or TypeError (from the validator, an op, or load_state_dict);
- ``same``: the untampered result, bit for bit. The format has no header field that does not
  matter, so outside payload/value edits this is allowed only for a mutation that changed nothing
  (a field set to its own value);
- ``other-n`` (ops only): the header still describes a valid weight of the same op whose only
  change is N inside the panel padding; the ops cannot know N, so the result has the header's N
  columns and equals the untampered result on the shared ones (modules refuse this at load);
- ``data``: a mutation of payload bytes or side-tensor values (not header or layout): any
  result of the right shape, or ValueError/TypeError. Data is data; this class is here to run
  the kernels on arbitrary payloads under the sanitizers.
Anything else fails the test; a crash ends the run. ``PYQUANT_FUZZ_CASES`` sets the number of
cases per op and per config (default small, for the default suite); ``PYQUANT_FUZZ_SEED`` the seed.
Run under ASan+UBSan with ``scripts/sanitize.sh test_fuzz_packed.py -s`` (``-s`` prints counts).
"""
from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import torch
from torch import nn

import pyquant
from pyquant import _C
from pyquant.packed import _HEADER, OP_IDS
from packed_cases import CASE_IDS, CASES, M, N, header

N_CASES = int(os.environ.get("PYQUANT_FUZZ_CASES", "150"))
SEED = int(os.environ.get("PYQUANT_FUZZ_SEED", "16"))
BOUNDARY = (0, 1, -1, 2, 63, 64, 65, 128, 2**15, 2**16 - 1, 2**24 - 1, 2**24, 2**31 - 1, 2**31,
            2**32 - 1, 2**32, 2**63, 2**64 - 1)
HEADER_FIELDS = list(_HEADER.names)


def _set(buf: np.ndarray, name: str, value) -> None:
    h = buf[:64].view(_HEADER)
    dt = _HEADER.fields[name][0]
    if name == "magic":
        h[name] = bytes(value)
    elif dt.shape:  # w_levels: 4 x int8
        h[name] = np.asarray(value, np.int64).astype(np.int8)
    else:
        h[name] = np.asarray(int(value) % (1 << (8 * dt.itemsize)), np.uint64).astype(dt)


def _random_value(rng, name, h):
    dt = _HEADER.fields[name][0]
    if name == "magic":
        return rng.integers(0, 256, 4, dtype=np.uint8).tobytes() if rng.random() < 0.7 else b"PQWT"
    if dt.shape:
        return rng.integers(-128, 128, 4)
    style = rng.integers(3)
    if style == 0:
        return int(rng.choice(BOUNDARY))
    if style == 1:  # near the current value (hits values inside the padding)
        return int(h[name]) + int(rng.integers(-70, 71))
    return int(rng.integers(0, 2**63)) * 2 + int(rng.integers(2))  # any value of 64 bits


def mutate_buffer(rng, buf: np.ndarray, others: list) -> tuple[str, np.ndarray]:
    """(kind, mutated copy of buf). `others`: buffers packed for the other cases."""
    kind = rng.choice(["field", "fields", "truncate", "extend", "swap_op", "swap_header",
                       "swap_buffer", "header_bytes", "data"])
    out = buf.copy()
    h = header(buf)
    if kind == "field" or kind == "fields":
        for name in rng.choice(HEADER_FIELDS, 1 if kind == "field" else rng.integers(2, 5)):
            _set(out, name, _random_value(rng, name, h))
    elif kind == "truncate":
        size = int(rng.choice([rng.integers(0, 65), rng.integers(0, buf.size),
                                buf.size - rng.integers(1, 65)]))
        out = buf[:max(size, 0)].copy()
    elif kind == "extend":
        extra = rng.integers(0, 256, int(rng.integers(1, 257)), dtype=np.uint8)
        out = np.concatenate([buf, extra])
    elif kind == "swap_op":
        _set(out, "op", int(rng.choice([0, 5, *OP_IDS.values()])))
    elif kind == "swap_header":  # another op's whole header on this payload
        other = others[rng.integers(len(others))]
        out[:64] = other[:64]
    elif kind == "swap_buffer":
        out = others[rng.integers(len(others))].copy()
    elif kind == "header_bytes":
        idx = rng.integers(0, 64, int(rng.integers(1, 9)))
        out[idx] = rng.integers(0, 256, idx.size, dtype=np.uint8)
    else:  # data: payload bytes after the header
        idx = rng.integers(64, buf.size, int(rng.integers(1, 17)))
        out[idx] = rng.integers(0, 256, idx.size, dtype=np.uint8)
    return str(kind), out


def _equal(r, ref) -> bool:
    return r.shape == ref.shape and np.array_equal(r, ref, equal_nan=r.dtype.kind == "f")


def _only_n_differs(buf, orig) -> bool:
    if buf.size != orig.size or buf.size < 64:
        return False
    a, b = header(buf), header(orig)
    return all(np.array_equal(a[f], b[f]) for f in HEADER_FIELDS if f != "n") and bool(
        np.array_equal(buf[64:], orig[64:]))


def judge_op(kind, buf, orig, call, ref) -> str:
    try:
        r = np.asarray(call(buf))
    except (ValueError, TypeError):
        return "error"
    identity = buf.size == orig.size and np.array_equal(buf, orig)
    if _equal(r, ref) and (identity or kind == "data"):
        return "same"
    assert not identity, "an unchanged buffer gave another result"
    if kind == "data":
        assert r.shape == ref.shape, f"data mutation changed the result shape to {r.shape}"
        return "data"
    n2 = int(header(buf)["n"])
    shared = min(n2, N)
    assert _only_n_differs(buf, orig) and r.shape == (M, n2) and _equal(
        r[:, :shared], ref[:, :shared]), f"{kind}: a result that is neither an error nor the untampered one"
    return "other-n"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fuzz_op_buffers(case):
    rng = np.random.default_rng([SEED, CASE_IDS.index(case.name)])
    refs = {label: np.asarray(call(case.buffer)) for label, call in case.calls.items()}
    others = [c.buffer for c in CASES if c is not case]
    counts = collections.Counter()
    for i in range(N_CASES):
        kind, buf = mutate_buffer(rng, case.buffer, others)
        for label, call in case.calls.items():
            try:
                counts[judge_op(kind, buf, case.buffer, call, refs[label])] += 1
            except AssertionError as exc:
                raise AssertionError(f"case {i} ({label}, {kind}): {exc}") from None
        try:  # the validator agrees with the ops: a buffer it accepts runs, one it refuses errs
            _C.validate_packed(buf, case.op)
        except ValueError:
            counts["validator-error"] += 1
    print(f"\nfuzz {case.name}: {N_CASES} buffers x {len(case.calls)} calls: {dict(counts)}")
    assert counts["error"] > 0


# ----------------------------------------------------------------------------- state dicts
CONFIGS = {
    "int8": pyquant.Int8Config(),
    "w4g32": pyquant.WeightOnlyConfig(bits=4, group_size=32),
    "w2g64": pyquant.WeightOnlyConfig(bits=2, group_size=64),
    "lut2": pyquant.LUT2Config(a_scale="minmax"),
    "sparq": pyquant.SparqConfig(),
}
X = torch.rand(4, 40, generator=torch.Generator().manual_seed(5)) - 0.25


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 70), nn.ReLU(), nn.Linear(70, 9))


_MODELS = {}


def _model(name):
    if name not in _MODELS:
        _MODELS[name] = pyquant.quantize_(_net(1), CONFIGS[name])
    return _MODELS[name]


def mutate_state(rng, sd: dict, foreign: list) -> tuple[str, dict]:
    """(kind, mutated copy of sd): packed buffers edited like the op buffers, side tensors of
    another shape/dtype/type, values swapped between layers or with another config's."""
    out = dict(sd)
    keys = sorted(sd)
    packed = [k for k in keys if k.endswith("packed")]
    key = str(rng.choice(packed if rng.random() < 0.6 else keys))
    v = sd[key]
    kind = str(rng.choice(["buffer", "shape", "dtype", "type", "swap_layer", "swap_config",
                           "values"]))
    if kind == "buffer" and key in packed:
        others = [f[k].numpy() for f in foreign for k in f if k.endswith("packed")]
        kind, buf = mutate_buffer(rng, v.numpy(), others)
        out[key] = torch.from_numpy(buf)
    elif kind in ("shape", "buffer"):
        kind = "shape"
        flat = v.reshape(-1)
        choice = rng.integers(3)
        out[key] = (flat[: max(flat.numel() - int(rng.integers(1, 5)), 0)] if choice == 0 else
                    torch.cat([flat, flat[:1].repeat(int(rng.integers(1, 5)))]) if choice == 1 else
                    flat.reshape(1, -1))
    elif kind == "dtype":
        out[key] = v.to(rng.choice([torch.float64, torch.float16, torch.int32, torch.int8,
                                    torch.uint8, torch.float32]))
    elif kind == "type":
        out[key] = [None, 3, 2.5, v.tolist(), v.numpy(), "x"][int(rng.integers(6))]
    elif kind in ("swap_layer", "swap_config"):
        if kind == "swap_layer":
            twin = key.replace("0.", "2.", 1) if key.startswith("0.") else key.replace("2.", "0.", 1)
            out[key] = sd.get(twin, v)
        else:
            out[key] = foreign[int(rng.integers(len(foreign)))].get(key, v)
        if key not in packed:  # another float vector of the same shape is just other values
            kind = "data"
    else:  # values of a side tensor, or payload bytes of a packed one
        kind = "data"
        t = v.clone()
        if t.dtype == torch.uint8:
            idx = torch.from_numpy(rng.integers(64, t.numel(), 8))
            t[idx] = torch.from_numpy(rng.integers(0, 256, 8, dtype=np.uint8))
        else:
            vals = [0.0, -1.0, 1e30, -1e30, float("inf"), float("nan"), float(rng.normal())]
            t.view(-1)[int(rng.integers(t.numel()))] = vals[int(rng.integers(len(vals)))]
        out[key] = t
    return kind, out


def _identical(bad: dict, sd: dict) -> bool:
    return bad.keys() == sd.keys() and all(
        isinstance(bad[k], torch.Tensor) and bad[k].dtype == v.dtype and bad[k].shape == v.shape
        and torch.equal(_bytes(bad[k]), _bytes(v)) for k, v in sd.items())


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)  # NaN == NaN, bit for bit


def judge_state(kind, fresh, bad, sd, y_ref) -> str:
    try:
        fresh.load_state_dict(bad)
        with torch.no_grad():
            y = fresh(X)
    except (ValueError, TypeError):
        return "error"
    if kind != "data":
        assert _identical(bad, sd), f"{kind}: an edited state dict loaded"
    if torch.equal(y, y_ref):
        return "same"
    assert kind == "data", f"{kind}: loaded and gave a result that differs from the untampered"
    assert y.shape == y_ref.shape
    return "data"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fuzz_state_dicts(name):
    rng = np.random.default_rng([SEED, 100 + list(CONFIGS).index(name)])
    model = _model(name)
    sd = model.state_dict()
    foreign = [_model(o).state_dict() for o in CONFIGS if o != name]
    fresh = pyquant.quantize_(_net(2), CONFIGS[name])
    with torch.no_grad():
        y_ref = model(X)
    counts = collections.Counter()
    for i in range(max(N_CASES // 2, 1)):
        kind, bad = mutate_state(rng, sd, foreign)
        try:
            counts[judge_state(kind, fresh, bad, sd, y_ref)] += 1
        except AssertionError as exc:
            raise AssertionError(f"case {i} ({kind}): {exc}") from None
    fresh.load_state_dict(sd)  # still loads and runs exactly after all that
    with torch.no_grad():
        assert torch.equal(fresh(X), y_ref)
    print(f"\nfuzz state dict {name}: {max(N_CASES // 2, 1)} cases: {dict(counts)}")
    assert counts["error"] > 0
