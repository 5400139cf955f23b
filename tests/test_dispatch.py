import os
import subprocess
import sys

import pytest

import pyquant


def run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_cpu_info_shape():
    info = pyquant.cpu_info()
    assert info["isa"] in info["available"]
    assert "scalar" in info["available"]
    assert info["threads"] >= 1


@pytest.mark.parametrize("name", ["scalar", "avx2", "avx512", "neon"])
def test_env_override_selects_path(name):
    if name not in pyquant.cpu_info()["available"]:
        result = run_python("import pyquant", PYQUANT_ISA=name)
        assert result.returncode != 0
        assert "PYQUANT_ISA" in result.stderr and "cannot run" in result.stderr
        return
    result = run_python("import pyquant; print(pyquant.cpu_info()['isa'])", PYQUANT_ISA=name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_env_unknown_name_is_a_clear_error():
    result = run_python("import pyquant", PYQUANT_ISA="avx1024")
    assert result.returncode != 0
    assert "PYQUANT_ISA" in result.stderr and "avx1024" in result.stderr


def test_env_disable_features_picks_a_lesser_cpus_kernels():
    """PYQUANT_DISABLE: the named features count as absent: no selected kernel needs them, they
    read False in cpu_info, and a tier whose baseline needs one is unavailable."""
    code = ("import json, pyquant; from pyquant import _kernels; "
            "print(json.dumps([pyquant.cpu_info(), [e['features'] for e in _kernels.kernel_table() "
            "if e['selected']]]))")
    import json
    for names in ("avxvnni,amx_int8", "avx512vnni, avx512vbmi", "avx512f"):
        result = run_python(code, PYQUANT_DISABLE=names)
        assert result.returncode == 0, result.stderr
        info, needs = json.loads(result.stdout)
        off = {n.strip() for n in names.split(",")}
        assert not any(info["features"][n] for n in off)
        assert not any(off & set(f) for f in needs)
        if "avx512f" in off:
            assert "avx512" not in info["available"]
    result = run_python("import pyquant", PYQUANT_DISABLE="avxvnni,avx9000")
    assert result.returncode != 0
    assert "PYQUANT_DISABLE" in result.stderr and "'avx9000'" in result.stderr


def test_threads_setting():
    pyquant.set_num_threads(3)
    assert pyquant.get_num_threads() == 3
    pyquant.set_num_threads(None)
    with pytest.raises(ValueError, match="n"):
        pyquant.set_num_threads(0)
    with pytest.raises(TypeError, match="n"):
        pyquant.set_num_threads("2")


def test_threads_follow_torch_by_default():
    import torch

    pyquant.set_num_threads(None)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert pyquant.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)


def test_info_command_runs():
    result = subprocess.run([sys.executable, "-m", "pyquant", "info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "active ISA" in result.stdout
    assert "weights:    " in result.stdout  # (where the layers' buffers live: huge pages or not)


# ---- the kernel table (csrc/core/kernel_table.cc) and per-feature dispatch ----

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pyquant import _C, _kernels  # noqa: E402

TABLE = _kernels.kernel_table()
FAMILIES = _kernels.FAMILIES
AVX2 = ["avx2", "fma", "bmi2", "f16c"]
AVX512 = AVX2 + ["avx512f", "avx512bw", "avx512dq", "avx512vl"]
# simulated CPUs: feature sets of real parts
SKYLAKE_SP = AVX512
CASCADE_LAKE = AVX512 + ["avx512vnni"]  # AVX-512 VNNI without VBMI
ICE_LAKE = AVX512 + ["avx512vnni", "avx512vbmi", "avx512vpopcntdq", "avx512bitalg", "gfni"]
SAPPHIRE_RAPIDS = ICE_LAKE + ["avxvnni"]
ALDER_LAKE = AVX2 + ["avxvnni", "gfni"]
GRAVITON2 = ["neon", "neon_dotprod"]
GRAVITON3 = GRAVITON2 + ["neon_i8mm"]
TIER_ORDER = {"scalar": 0, "avx2": 1, "avx512": 2}


def _flag_features(flags: list[str]) -> set[str]:
    out = set()
    for flag in flags:
        if flag.startswith("-march=armv8"):
            out |= {"neon"} | {"neon_" + ext for ext in flag.split("+")[1:]}
        elif flag in ("-mamx-tile", "-mamx-int8"):
            out.add("amx_int8")  # one feature: both extensions, the OS state and its grant
        elif flag.startswith("-m"):
            out.add(flag[2:])
    return out


def _suffix_features() -> dict[str, set[str]]:
    path = Path(__file__).resolve().parents[1] / "csrc" / "core" / "isa_flags.txt"
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            suffix, _arch, *flags = line.split()
            out[suffix] = _flag_features(flags)
    return out


def test_table_every_family_has_a_scalar_entry_last():
    for family in FAMILIES:
        entries = [e for e in TABLE if e["family"] == family]
        assert entries, family
        last = entries[-1]
        assert (last["tier"], last["features"], last["built"]) == ("scalar", [], True), family
        names = [e["name"] for e in entries]
        assert len(names) == len(set(names)), f"{family}: duplicate kernel names {names}"


def test_table_entries_are_well_formed():
    baseline = {"scalar": set(), "avx2": set(AVX2), "avx512": set(AVX512), "neon": set(GRAVITON2)}
    suffixes = _suffix_features()
    for e in TABLE:
        where = f"{e['family']}/{e['name']}"
        assert e["family"] in FAMILIES, where
        assert e["mr"] >= 1 and e["nr"] >= 1, where
        assert e["verified"] in ("native", "qemu", "not run"), where
        assert e["description"], where
        features = set(e["features"])
        assert baseline[e["tier"]] <= features, f"{where}: lacks its tier's baseline"
        # a kernel declares exactly the flags of one file suffix (so the compiler cannot emit
        # an instruction the entry does not declare)
        assert e["tier"] == "scalar" or features in suffixes.values(), where
        assert set(e["missing"]) <= features, where
        assert e["supported"] == (e["built"] and not e["missing"]), where


def test_selected_kernels_run_on_this_cpu():
    cpu = {k for k, v in _C.cpu_features().items() if v is True}
    isa = _C.active_isa()
    for family in FAMILIES:
        selected = [e for e in TABLE if e["family"] == family and e["selected"]]
        assert len(selected) == 1, family
        e = selected[0]
        assert set(e["features"]) <= cpu, e
        assert e["tier"] in ("scalar", isa) or TIER_ORDER.get(e["tier"], 9) <= TIER_ORDER.get(isa, -1)
        assert _C.active_kernel(family) == e["name"]
        assert _kernels.select_kernels()[family][0] == e["name"]


def test_selection_never_exceeds_the_tier():
    everything = ICE_LAKE + ["avxvnni"] + GRAVITON3
    by_name = {(e["family"], e["name"]): e for e in TABLE}
    for isa, allowed in (("scalar", {"scalar"}), ("avx2", {"scalar", "avx2"}),
                         ("avx512", {"scalar", "avx2", "avx512"}), ("neon", {"scalar", "neon"})):
        for family, names in _kernels.select_kernels(everything, isa, any_build=True).items():
            tiers = {by_name[family, n]["tier"] for n in names}
            assert tiers <= allowed, (isa, family, names)
            assert names[-1] == "scalar"


@pytest.mark.parametrize("cpu, isa, expected", [
    (CASCADE_LAKE, "avx512", {"int8_gemm": "avx512vnni_6x64", "lut_gemm": "avx2_pair",
                              "lowbit_gemm": "avx512vnni_6x64", "sparq_gemm": "vnni256_evex",
                              "pack": "avx512", "quantize": "avx512"}),
    (SKYLAKE_SP, "avx512", {"int8_gemm": "avx2_1x64", "lut_gemm": "avx2_pair",
                            "lowbit_gemm": "avx2_2x64", "pack": "avx512"}),
    (ICE_LAKE, "avx512", {"int8_gemm": "avx512vnni_6x64", "lut_gemm": "avx512vbmi_vpermb",
                          "sparq_gemm": "avx512vbmi", "lowbit_gemm": "avx512vnni_gfni_6x64"}),
    (ICE_LAKE, "avx2", {"int8_gemm": "avx2_1x64", "lut_gemm": "avx2_pair", "pack": "avx2"}),
    (SAPPHIRE_RAPIDS, "avx2", {"int8_gemm": "avxvnni_6x16", "lowbit_gemm": "avxvnni_6x16"}),
    (SAPPHIRE_RAPIDS, "avx512", {"int8_gemm": "avx512vnni_6x64",
                                 "lowbit_gemm": "avx512vnni_gfni_6x64"}),
    (ALDER_LAKE, "avx2", {"int8_gemm": "avxvnni_6x16", "lowbit_gemm": "avxvnni_6x16",
                          "sparq_gemm": "avxvnni"}),
    (AVX2, "avx2", {"int8_gemm": "avx2_1x64", "lowbit_gemm": "avx2_2x64", "sparq_gemm": "avx2"}),
    (AVX2, "scalar", {f: "scalar" for f in FAMILIES}),
    (GRAVITON3, "neon", {"int8_gemm": "neon_i8mm_8x8", "lut_gemm": "neon_deepgemm"}),
    (GRAVITON2, "neon", {"int8_gemm": "neon_dotprod_4x16"}),
    # the same features from an Intel CPU: the strip-scheduled AVX2 int8 kernel ranks first
    ((AVX2, "GenuineIntel"), "avx2", {"int8_gemm": "avx2_4x16", "lowbit_gemm": "avx2_2x64",
                                     "sparq_gemm": "avx2"}),
    ((SKYLAKE_SP, "GenuineIntel"), "avx512", {"int8_gemm": "avx2_4x16"}),
    ((AVX2, "AuthenticAMD"), "avx2", {"int8_gemm": "avx2_1x64", "sparq_gemm": "avx2_one_stream",
                                     "lowbit_gemm": "avx2_2x64_l1_prefetch"}),
    ((SAPPHIRE_RAPIDS, "GenuineIntel"), "avx2", {"int8_gemm": "avxvnni_6x16"}),
    # Zen 4 (AMD family 25): the GFNI grouped tile measured slower there, the plain one first
    ((ICE_LAKE, "AuthenticAMD", 25), "avx512", {"lowbit_gemm": "avx512vnni_6x64",
                                                "sparq_gemm": "avx512vbmi_one_stream"}),
    # Ice Lake's features from Intel: the two-stream 2:4 decode tile (the one-stream one is AMD's)
    ((ICE_LAKE, "GenuineIntel", 6), "avx512", {"sparq_gemm": "avx512vbmi"}),
    ((ICE_LAKE + ["avxvnni"], "AuthenticAMD", 26), "avx512",
     {"lowbit_gemm": "avx512vnni_gfni_6x64"}),
], ids=["cascadelake", "skylake-sp", "icelake", "icelake-avx2", "sapphirerapids-avx2",
        "sapphirerapids", "alderlake", "zen3", "zen3-scalar", "graviton3", "graviton2",
        "haswell", "skylake-sp-intel", "zen3-amd", "sapphirerapids-avx2-intel", "zen4",
        "icelake-intel", "zen5"])
def test_simulated_cpus_pick_per_feature(cpu, isa, expected):
    features, vendor, cpu_family = ((cpu + (None,))[:3] if isinstance(cpu, tuple)
                                    else (cpu, None, None))
    chosen = {f: names[0] for f, names in
              _kernels.select_kernels(features, isa, any_build=True, vendor=vendor,
                                      family=cpu_family).items()}
    for family, name in expected.items():
        assert chosen[family] == name, (family, chosen)


def test_vendor_tuned_kernel_runs_everywhere_but_ranks_on_its_vendor():
    # preferred_vendor only reorders: on an AMD CPU the Intel-tuned entry is still a candidate
    # (tests and set_kernel reach it), ranked after the kernels tuned for any CPU, before scalar
    amd, intel = (_kernels.select_kernels(AVX2, "avx2", any_build=True, vendor=v)["int8_gemm"]
                  for v in ("AuthenticAMD", "GenuineIntel"))
    assert amd[0] == "avx2_1x64" and amd[-2:] == ["avx2_4x16", "scalar"]
    assert intel[:2] == ["avx2_4x16", "avx2_1x64"]
    tuned = {e["name"]: e["preferred_vendor"] for e in TABLE if e["family"] == "int8_gemm"}
    assert tuned["avx2_4x16"] == "GenuineIntel" and tuned["avx2_1x64"] is None


def test_family_slower_kernel_runs_everywhere_but_ranks_last_there():
    # slower_on only reorders, and only on that vendor's CPUs of that family
    order = {(v, fam): _kernels.select_kernels(ICE_LAKE, "avx512", any_build=True, vendor=v,
                                               family=fam)["lowbit_gemm"]
             for v, fam in (("AuthenticAMD", 25), ("AuthenticAMD", 26), ("GenuineIntel", 25))}
    zen4 = order["AuthenticAMD", 25]
    assert zen4[0] == "avx512vnni_6x64" and zen4[-2:] == ["avx512vnni_gfni_6x64", "scalar"]
    assert order["AuthenticAMD", 26][0] == order["GenuineIntel", 25][0] == "avx512vnni_gfni_6x64"
    slower = {e["name"]: e["slower_on"] for e in TABLE if e["family"] == "lowbit_gemm"}
    assert slower["avx512vnni_gfni_6x64"] == ("AuthenticAMD", 25)
    assert slower["avx512vnni_6x64"] is None


def test_tier_available_with_its_baseline_only():
    # Cascade Lake's lut falls back past both VBMI kernels to the next one, never to scalar
    order = _kernels.select_kernels(CASCADE_LAKE, "avx512")["lut_gemm"]
    assert order == ["avx2_pair", "avx2_deepgemm", "scalar"]


def test_select_kernels_bad_input():
    with pytest.raises(ValueError, match="features"):
        _kernels.select_kernels(["avx2", "avx9000"], "avx2")
    with pytest.raises(ValueError, match="isa"):
        _kernels.select_kernels(AVX2, "avx1024")


def test_set_kernel_errors_name_the_argument():
    with pytest.raises(ValueError, match="family"):
        _C.set_kernel("int4_gemm", "scalar")
    with pytest.raises(ValueError, match="name"):
        _C.set_kernel("int8_gemm", "no_such_kernel")
    missing = [e for e in TABLE if e["built"] and e["missing"]]
    for e in missing:
        with pytest.raises(ValueError, match="needs " + e["missing"][0]):
            _C.set_kernel(e["family"], e["name"])
    for e in TABLE:
        if not e["built"]:
            with pytest.raises(ValueError, match="not compiled"):
                _C.set_kernel(e["family"], e["name"])
    assert _kernels.requirement("int8_gemm", "scalar") is None


def test_env_avx2_never_selects_avx512_kernels():
    if "avx2" not in pyquant.cpu_info()["available"]:
        pytest.skip("this CPU cannot run the avx2 path")
    code = ("from pyquant import _kernels; "
            "print(sorted({e['tier'] for e in _kernels.kernel_table() if e['selected']}))")
    result = run_python(code, PYQUANT_ISA="avx2")
    assert result.returncode == 0, result.stderr
    assert "avx512" not in result.stdout and "avx2" in result.stdout


def test_info_lists_kernels_per_family_and_emulation_only():
    # the full table whatever tier this run caps (PYQUANT_ISA=scalar lists scalar kernels only)
    env = {k: v for k, v in os.environ.items() if k not in ("PYQUANT_ISA", "PYQUANT_DISABLE")}
    result = subprocess.run([sys.executable, "-m", "pyquant", "info"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1], env=env)
    assert result.returncode == 0, result.stderr
    for family in FAMILIES:
        assert family in result.stdout
    assert "verified only under emulation" in result.stdout
    assert "neon_i8mm_8x8" in result.stdout and "avxvnni_6x16" in result.stdout


# ---- every kernel of the table, forced in turn, bit-exact ----

def _entry_param(e):
    return pytest.param(e, id=f"{e['family']}-{e['name']}")


@pytest.fixture
def force(request):
    """force(entry): run the entry's family on it (skipped if this CPU or build cannot)."""
    forced = []

    def apply(e):
        if not e["built"]:
            pytest.skip(f"{e['name']}: not built for this architecture ({e['tier']} code)")
        if e["missing"]:
            pytest.skip(f"{e['name']}: this CPU lacks {', '.join(e['missing'])} "
                        f"(verified: {e['verified']})")
        _C.set_kernel(e["family"], e["name"])
        forced.append(e["family"])

    yield apply
    for family in forced:
        _C.set_kernel(family, None)


INT8_SHAPES = [(m, n, k) for m in (1, 2, 3, 5, 6, 7, 8, 9, 13, 17)
               for n, k in ((1, 1), (17, 3), (64, 64), (65, 1025), (130, 7))]
INT8_SHAPES += [(9, 200, 4096), (17, 130, 2100)]
# AMX: 16-row tiles (M = 16, 31-33, 48), K tails past whole 64-k steps and across its 512-k
# blocks, and M split into row chunks that fit L2 (M = 150 at K = 8200)
INT8_SHAPES += [(16, 64, 64), (31, 65, 1025), (32, 17, 576), (33, 130, 2100), (48, 100, 4096),
                (150, 70, 8200)]
# avx2_4x16: M > 16 in even blocks of at most 16 rows (N = 520: 9 panels, so the driver does
# not split M and a task holds 40 = 3 x 13-14 or 77 = 5 x 15-16 rows)
INT8_SHAPES += [(40, 520, 300), (77, 520, 1025)]


@pytest.mark.parametrize("entry", [_entry_param(e) for e in TABLE if e["family"] == "int8_gemm"])
def test_int8_kernel_bit_exact(entry, force, rng):
    force(entry)
    assert _C.active_kernel("int8_gemm") == entry["name"]
    for m, n, k in INT8_SHAPES:
        for signed in (False, True):
            for extreme in (False, True):
                if extreme:
                    a = np.full((m, k), -128 if signed else 255, np.int8 if signed else np.uint8)
                    w = np.full((n, k), -128, np.int8)
                else:
                    a = rng.integers(-128 if signed else 0, 128 if signed else 256, (m, k)).astype(
                        np.int8 if signed else np.uint8)
                    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
                ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
                got = pyquant.int8_gemm(a, w)
                assert np.array_equal(got, ref), (entry["name"], m, n, k, signed, extreme)
                if not signed and not extreme:  # 7-bit rows: the AVX2 kernels' fast route
                    a7 = a >> 1
                    ref7 = (a7.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
                    assert np.array_equal(pyquant.int8_gemm(a7, w), ref7), (entry["name"], m, n, k)


def _run_family(family, rng):
    """One representative call of the family's public op (its result, compared across kernels)."""
    if family == "lut_gemm":
        a = rng.integers(0, 4, (7, 301)).astype(np.uint8)
        w = rng.integers(0, 4, (70, 301)).astype(np.uint8)
        return pyquant.lut_gemm(a, w)
    if family == "lowbit_gemm":  # raw ops (signed and unsigned rows) and the grouped forward
        out = []
        # raw sums: 6-row zmm passes below 16 rows; AMX tiles from 16 (17, 40: a staged last row
        # tile; 77: a 64-row call + 13; K = 301: a staged tail step, K = 1100: two driver K
        # blocks), unsigned and signed rows, and the grouped raw op (one group per tile call)
        for m, k in ((1, 301), (7, 301), (13, 301), (17, 301), (40, 1100), (77, 301)):
            a = rng.integers(0, 256, (m, k)).astype(np.uint8)
            for bits in (4, 2):
                w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (70, k)).astype(np.int8)
                out += [pyquant.lowbit_gemm(a, w, bits=bits).ravel(),
                        pyquant.lowbit_gemm(a.view(np.int8), w, bits=bits).ravel()]
                if m >= 17 or m == 1:  # M = 1: the raw grouped decode GEMVs, both row kinds
                    sc = rng.standard_normal((70, -(-k // 32))).astype(np.float32)
                    pw = pyquant.prepack(w, "lowbit_gemm", bits=bits)
                    for rows in ((a, a.view(np.int8)) if m == 1 else (a,)):
                        y = pyquant.lowbit_gemm_grouped(rows, pw, bits=bits, group_size=32, scales=sc)
                        out.append(y.view(np.int32).ravel())
        # 13 rows: 6-row tiles + 1; 17, 31, 40, 49: AMX's staged last row tile; 77: a 64-row
        # call + 13 rows (zmm). K = 600: three AMX K blocks, a short last group; K = 576 at g128:
        # a last block of whole steps read in place, half a group. Group sizes QuantLinear does
        # not offer (the native forward takes any multiple of 4): 48 (12 k-groups, steps of 12),
        # 256 (one group per AMX block), 512 (past a block: the zmm kernel), 36 and 4 (groups of
        # 9 k-groups and of 1: the decode GEMVs' odd step). M = 1 and 2: the decode GEMVs; K = 520
        # at g4: 130 groups, past the AMX entry's two-stream chunks (64, 64, then 2).
        for bits, gs, k in ((4, 32, 600), (4, 64, 600), (2, 128, 600), (4, 128, 576),
                            (2, 32, 600), (4, 48, 600), (2, 256, 600), (4, 512, 600),
                            (2, 36, 600), (4, 36, 604), (4, 4, 96), (4, 4, 520), (2, 4, 520)):
            lin = torch.nn.Linear(k, 70)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(rng.standard_normal((70, k)).astype(np.float32)))
                lin.bias.copy_(torch.from_numpy(rng.standard_normal(70).astype(np.float32)))
            config = pyquant.WeightOnlyConfig(bits, 64)
            object.__setattr__(config, "group_size", gs)  # past the config's 32/64/128 check
            mod = pyquant.nn.QuantLinear.from_linear(lin, config)
            for m in (1, 2, 13, 17, 31, 40, 49, 77):
                with torch.no_grad():
                    y = mod(torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)))
                out.append(y.numpy().view(np.int32).ravel())
        return np.concatenate(out)
    if family == "sparq_gemm":
        a = rng.integers(0, 256, (7, 301)).astype(np.uint8)
        w = rng.integers(-128, 128, (70, 301)).astype(np.int8)
        out = [pyquant.sparq_quantize(a).astype(np.int32).ravel(), pyquant.sparq_gemm(a, w).ravel()]
        # 2:4: decode (1 row, a signed row's 2 table rows) and the rows kernels (3, 8 rows:
        # 2-row tiles + 1); K = 1100: 275 k groups, past two 128-group blocks, odd; extreme values
        w24 = np.asarray(pyquant.prune_24(rng.integers(-128, 128, (70, 1100)).astype(np.int8)))
        w24[:2] = np.where(w24[:2] != 0, np.int8(-128), np.int8(0))
        for m in (1, 3, 8):
            a24 = rng.integers(0, 256, (m, 1100)).astype(np.uint8)
            a24[:, ::3] = 0
            a24[0, 4:] = 255
            signed = np.where(rng.random((m, 1100)) < 0.5, -a24.astype(np.int16), a24)
            out += [pyquant.sparq_gemm(a24, w24, sparse24=True).ravel(),
                    pyquant.sparq_gemm(signed, w24, sparse24=True).ravel()]
        return np.concatenate(out)
    if family == "pack":
        codes = rng.integers(0, 4, (5, 301)).astype(np.uint8)
        packed = pyquant.pack(codes, 2)
        return np.concatenate([packed.ravel().astype(np.int32), pyquant.unpack(packed, 2, 301).ravel()])
    if family == "quantize":
        from pyquant.int8 import quantize_rows_u8
        x = rng.standard_normal((5, 301)).astype(np.float32)
        q, scale, zp = quantize_rows_u8(x)
        return np.concatenate([q.ravel().astype(np.float64), np.asarray(scale, np.float64).ravel(),
                               np.asarray(zp, np.float64).ravel()])
    raise AssertionError(family)


@pytest.mark.parametrize("entry", [_entry_param(e) for e in TABLE
                                   if e["family"] not in ("int8_gemm",) and e["tier"] != "scalar"])
def test_kernel_matches_scalar_kernel(entry, force, rng):
    """Every non-int8 kernel, forced, gives the bits of its family's scalar kernel (the scalar
    kernels are checked against references in each family's own tests)."""
    family = entry["family"]
    state = rng.bit_generator.state
    _C.set_kernel(family, "scalar")
    try:
        ref = _run_family(family, rng)
    finally:
        _C.set_kernel(family, None)
    rng.bit_generator.state = state
    force(entry)
    got = _run_family(family, rng)
    assert np.array_equal(got, ref), entry["name"]
