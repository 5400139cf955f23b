"""The benchmark reports (issue 13): measured clock, n/a rows for kernels the CPU lacks, slow
baselines timed once, cold sets in distinct pages, and optional dependencies checked before a
command starts working. All fast: tiny problems, monkeypatched imports."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import pyquant
from pyquant import _C
from pyquant.__main__ import main as cli_main
from pyquant.bench import machine, report, runner
from pyquant._kernels import kernel_table
from pyquant.bench.cases import PAGE, Case, Problem, cases_for, packed_copies

TINY = Problem(4, 16, 64, 1, label="tiny")


def _counting_case(kernel="counted", **kw):
    calls = []

    def make(p):
        def fn():
            calls.append(1)
        return fn
    return Case(TINY, kernel, make, **kw), calls


# ---- clock -----------------------------------------------------------------------------------

def test_measured_clock_is_plausible():
    ghz = _C.measure_clock_ghz()
    assert 0.3 < ghz < 8.0, ghz
    assert machine.clock_ghz() == pytest.approx(ghz, rel=0.5)  # a second sample, a noisy machine


def test_mac_per_cycle_uses_the_given_clock_and_none_without_one():
    assert machine.mac_per_cycle(3_000_000_000, 1.0, 3.0) == pytest.approx(1.0)
    assert machine.mac_per_cycle(3_000_000_000, 1.0, None) is None
    assert machine.mac_per_cycle(3_000_000_000, None, 3.0) is None


def test_unmeasurable_clock_falls_back_to_gops(monkeypatch):
    monkeypatch.delattr(_C, "measure_clock_ghz")  # an old build
    assert machine.clock_ghz() is None
    res = runner.Result(TINY, "k", "pyquant", "avx2", 1e-3, rounds=3)
    rows = report.speedups([res], None)
    assert rows[0]["mac_per_cycle"] is None
    table = report.format_table(rows, with_cycles=False)
    assert "MAC/cyc" not in table and "GOP/s" in table


# ---- n/a rows, slow baselines -------------------------------------------------------------

def test_a_kernel_the_cpu_lacks_is_an_na_row_naming_the_feature(monkeypatch):
    ok, ok_calls = _counting_case("runs")
    na, na_calls = _counting_case("lacks", requires=lambda: "needs AVX-512 VBMI")
    monkeypatch.setattr(runner, "cases_for", lambda p: [ok, na])
    results = runner.run_problem(TINY, rounds=2, min_sample=0.0)
    assert [r.kernel for r in results] == ["runs", "lacks"]  # not silently missing
    assert results[0].seconds is not None and results[0].skipped is None
    assert results[1].seconds is None and results[1].error is None
    assert results[1].skipped == "needs AVX-512 VBMI" and not na_calls
    table = report.format_table(report.speedups(results, 3.0))
    assert "| n/a (needs AVX-512 VBMI) |" in table and "error" not in table


def test_a_path_the_cpu_lacks_is_named():
    missing = [i for i in ("avx2", "avx512", "neon") if i not in pyquant.cpu_info()["available"]]
    if not missing:
        pytest.skip("this CPU runs every path")
    case, _ = _counting_case(isa=missing[0])
    assert runner.unavailable(case) == f"needs {runner.ISA_FEATURE[missing[0]]}"


def test_vpermb_case_says_what_it_needs():
    case = next(c for c in cases_for(TINY) if c.kernel == "pyquant.lut_gemm[vpermb]")
    reason = runner.unavailable(case)
    if pyquant.lut.lut_kernel(kernel="vpermb"):
        assert reason is None
    elif "avx512" in pyquant.cpu_info()["available"]:
        assert "needs the avx512 path" in reason
    else:
        assert reason == "needs AVX-512 VBMI"


def test_a_slow_case_is_timed_once(monkeypatch):
    case, calls = _counting_case()
    monkeypatch.setattr(runner, "cases_for", lambda p: [case])
    monkeypatch.setattr(runner, "SLOW_CALL_SECONDS", 0.0)
    (res,) = runner.run_problem(TINY, rounds=5)
    assert len(calls) == 1  # the first call is the timing: no warm-up, no rounds
    assert res.rounds == 1 and "timed once" in res.note
    assert "(1 round)" in report.format_table(report.speedups([res], None), with_cycles=False)


def test_tiny_problem_runs_every_case_or_says_why():
    results = runner.run_problem(TINY, rounds=1, min_sample=0.0)
    assert results
    for r in results:
        assert r.error is None, (r.kernel, r.error)
        assert (r.seconds is None) == (r.skipped is not None), r.kernel


# ---- cold sets ----------------------------------------------------------------------------

def test_packed_copies_are_distinct_in_every_page(rng):
    w = rng.integers(-128, 128, (64, 8192), dtype=np.int8)
    pw = pyquant.prepack(w, "int8_gemm")
    copies = packed_copies(pw, 3)
    h = pw.header()
    start, stop = int(h["data_offset"]), int(h["aux_offset"])
    assert all(c.buffer[:64].tobytes() == pw.buffer[:64].tobytes() for c in copies)
    assert all(c.buffer[stop:].tobytes() == pw.buffer[stop:].tobytes() for c in copies)
    assert len({id(c.buffer) for c in copies}) == 3
    for page in range(start, stop - PAGE, PAGE):
        blocks = {c.buffer[page:page + PAGE].tobytes() for c in copies}
        assert len(blocks) == 3, page
    assert packed_copies(pw, 1) == [pw]


# ---- plot -----------------------------------------------------------------------------------

def test_plot_renders(tmp_path):
    pytest.importorskip("matplotlib")
    cold = Problem(1, 4096, 4096, 1, cold=True, label="decode")
    res = [runner.Result(TINY, "pyquant.int8_gemm", "int8-baseline", "avx2", 2e-3, rounds=3),
           runner.Result(TINY, "fp32 F.linear", "fp32", "torch", 3e-3, rounds=3),
           runner.Result(cold, "pyquant.int8_gemm", "int8-baseline", "avx2", 2e-3, rounds=3),
           runner.Result(cold, "pyquant.lowbit_gemm[W2A8]", "pyquant", "avx2", 5e-4, rounds=3,
                         bytes_per_weight=0.25),
           runner.Result(cold, "pyquant.lut_gemm[vpermb]", "pyquant", "avx2", None,
                         skipped="needs AVX-512 VBMI")]
    path = tmp_path / "bench.png"
    report.save_plot(report.speedups(res, 3.0), str(path), {1: 20.0})
    assert path.stat().st_size > 10_000


# ---- optional dependencies: named before any work -----------------------------------------

def _no_work(*args, **kw):
    raise AssertionError("started working before checking its dependencies")


def test_bench_plot_without_matplotlib_says_which_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(runner, "run_problem", _no_work)
    with pytest.raises(SystemExit, match=r"^bench --plot needs matplotlib: "
                                         r"pip install 'pyquant\[bench\]'$"):
        cli_main(["bench", "--quick", "--plot", str(tmp_path / "b.png")])


@pytest.mark.parametrize("method,missing,name", [("hgq", "matplotlib", "matplotlib"),
                                                 ("nsga2", "pymoo", "pymoo"),
                                                 ("hgq", "sklearn", "scikit-learn")])
def test_search_without_its_extra_stops_before_training(monkeypatch, tmp_path, method, missing,
                                                        name):
    monkeypatch.setitem(sys.modules, missing, None)
    import pyquant.search.runs as runs

    for fn in ("run_gru_nsga", "run_mlp_hgq", "run_mlp_nsga"):
        monkeypatch.setattr(runs, fn, _no_work)
    with pytest.raises(SystemExit, match=rf"^search needs {name}: pip install 'pyquant\[search\]'$"):
        cli_main(["search", "--task", "mlp", "--method", method, "--out", str(tmp_path)])


@pytest.mark.parametrize("study,missing,name,extra", [
    ("digits_cnn", "sklearn", "scikit-learn", "search"),
    ("sparq_digits", "sklearn", "scikit-learn", "search"),
    ("minilm", "sentence_transformers", "sentence-transformers", "demo"),
])
def test_studies_without_their_extra_stop_first(monkeypatch, study, missing, name, extra):
    import importlib

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # minilm sets these at import; restored afterwards
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    mod = importlib.import_module(f"pyquant.studies.{study}")
    monkeypatch.setitem(sys.modules, missing, None)
    for fn in ("train_cnn", "run", "load_model"):
        if hasattr(mod, fn):
            monkeypatch.setattr(mod, fn, _no_work)
    with pytest.raises(SystemExit, match=rf"^python -m pyquant.studies.{study} needs {name}.*: "
                                         rf"pip install 'pyquant\[{extra}\]'$"):
        mod.main([])


# ---- arguments: a usage error before any work -----------------------------------------------

@pytest.mark.parametrize("argv", [
    ["bench", "--quick", "--rounds", "0"],
    ["bench", "--quick", "--rounds", "-1"],
    ["bench", "--quick", "--plot", "/nonexistent-dir/b.png"],
    ["bench", "--quick", "--json", "."],
    ["search", "--task", "mlp", "--method", "hgq", "--out", "OUT", "--epochs", "0"],
    ["search", "--task", "mlp", "--method", "hgq", "--out", "OUT", "--groups", "0"],
    ["search", "--task", "mlp", "--method", "hgq", "--out", "OUT", "--seed", "-1"],
    ["search", "--task", "mlp", "--method", "hgq", "--out", "FILE"],
    ["search", "--task", "digits-gru", "--method", "hgq", "--out", "OUT", "--beta", "0", "1"],
    ["search", "--task", "digits-gru", "--method", "hgq", "--out", "OUT", "--beta", "-1", "nan"],
])
def test_bad_arguments_are_usage_errors(monkeypatch, tmp_path, argv, capsys):
    import pyquant.search.runs as runs

    monkeypatch.setattr(runner, "run_problem", _no_work)
    for fn in ("run_gru_nsga", "run_gru_hgq", "run_mlp_hgq", "run_mlp_nsga"):
        monkeypatch.setattr(runs, fn, _no_work)
    (tmp_path / "file").write_text("")
    argv = [str(tmp_path / "out") if a == "OUT" else str(tmp_path / "file") if a == "FILE" else a
            for a in argv]
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.parametrize("study,argv", [("minilm", ["--repeats", "0"]), ("minilm", ["--threads", "0"]),
                                        ("sparq_digits", ["--seeds", "0"]),
                                        ("sparq_digits", ["--noise", "-1"]),
                                        ("digits_cnn", ["--epochs", "-5"]),
                                        ("llm", ["--bandwidth-gib", "0"])])
def test_study_arguments_are_checked(monkeypatch, study, argv):
    import importlib

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    mod = importlib.import_module(f"pyquant.studies.{study}")
    for fn in ("train_cnn", "run", "load_model"):
        if hasattr(mod, fn):
            monkeypatch.setattr(mod, fn, _no_work)
    with pytest.raises(SystemExit) as e:
        (mod.parse_args if study == "llm" else mod.main)(argv)
    assert e.value.code == 2


def test_bench_filter_without_a_match_says_so(capsys):
    assert cli_main(["bench", "--quick", "--filter", "no-such-problem"]) == 2
    assert "no problem name contains 'no-such-problem'" in capsys.readouterr().err


def test_isa_cap_excludes_higher_paths(monkeypatch):
    monkeypatch.setenv("PYQUANT_ISA", "scalar")
    case, _ = _counting_case(isa="avx2")
    if "avx2" not in pyquant.cpu_info()["available"]:
        pytest.skip("this CPU has no AVX2")
    assert runner.unavailable(case) == "excluded by PYQUANT_ISA=scalar"


# ---- a review of the reports (2026-12-03) ---------------------------------------------------
def test_cold_sets_pass_twice_the_l3_in_each_kernels_own_bytes(monkeypatch):
    """Every kernel rotates its own set of >= 2x L3 (a 2-bit set needs 4x the int8 copies);
    warm-up and samples cover the whole rotation (rotating's count)."""
    from pyquant.bench import cases as bench_cases

    assert bench_cases.l3_bytes() >= 1 << 20  # this CPU's, from sysconf or sysfs
    monkeypatch.setattr(bench_cases, "l3_bytes", lambda: 32 << 20)
    p = Problem(1, 4096, 4096, 1, cold=True)
    assert p.copies() * 4096 * 4096 >= 64 << 20 and p.copies() == 4
    assert p.copies(0.25) == 16 and p.copies(4.0) == 2
    assert Problem(1, 4096, 4096, 1).copies(0.25) == 1  # hot: one copy
    assert bench_cases.rotating([lambda: 1] * 5).count == 5


def test_rows_name_the_kernel_that_ran_and_the_float_layer_compared():
    """int8 / lowbit rows carry the kernel the dispatch picked (a tier holds several); conv
    problems compare against nn.Conv2d, others against F.linear; '(1 round)' marks only calls
    timed once, not --rounds 1."""
    res = runner.run_problem(TINY, rounds=1, min_sample=0.0,
                             only=lambda c: c.kernel in ("pyquant.int8_gemm", "fp32 F.linear"))
    rows = report.speedups(res, None)
    int8 = next(r for r in rows if r["kernel"] == "pyquant.int8_gemm")
    chosen = next(e["name"] for e in kernel_table() if e["family"] == "int8_gemm" and e["selected"])
    assert int8["kernel_ran"] == chosen and f": {chosen}" in report.format_table(rows)
    assert "(1 round)" not in report.format_table(rows)
    conv = [runner.Result(TINY, "fp32 F.linear", "fp32", "torch", 2e-3, rounds=1),
            runner.Result(TINY, "nn.Conv2d fp32", "fp32", "torch", 4e-3, rounds=1),
            runner.Result(TINY, "QuantConv2d[int8]", "pyquant", "avx2", 1e-3, rounds=1)]
    q = next(r for r in report.speedups(conv, None) if r["kernel"] == "QuantConv2d[int8]")
    assert q["speedup_vs_fp32"] == pytest.approx(4.0)


def test_info_lists_only_kernels_within_the_cap(monkeypatch, capsys):
    if "avx512" not in pyquant.cpu_info()["available"]:
        pytest.skip("needs a CPU with a tier above AVX2")
    monkeypatch.setenv("PYQUANT_ISA", "avx2")
    before = _C.active_isa()
    _C.set_isa("avx2")
    try:
        assert cli_main(["info"]) == 0
    finally:
        _C.set_isa(before)
    out = capsys.readouterr().out
    also = [line.split("also runs here:", 1)[1] for line in out.splitlines() if "also runs here:" in line]
    avx512 = {e["name"] for e in kernel_table() if e["tier"] == "avx512"}
    assert also and not any(name in line for line in also for name in avx512)


SCRIPTS = ["forced_kernels", "grouped_decode_cold", "nn_forward_ratio", "int8_vs_fbgemm",
           "reload_decode", "bench_lowbit_gemm", "moe_decode", "moe_block_decode",
           "transformer_encoder", "speech_encoder", "recurrent", "gptq_llm"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_scripts_answer_help_and_bad_arguments(script):
    import subprocess
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{script}.py"
    run = lambda *args: subprocess.run([sys.executable, str(path), *args], capture_output=True,  # noqa: E731
                                       text=True, timeout=120)
    helped = run("--help")
    assert helped.returncode == 0 and "Traceback" not in helped.stderr and helped.stdout.strip()
    bad = {"bench_lowbit_gemm": ["no-such-group"], "reload_decode": ["extra"]}.get(script, ["x"])
    refused = run(*bad)
    assert refused.returncode not in (0, None) and "Traceback" not in refused.stderr


def test_search_names_options_that_do_not_apply(monkeypatch, tmp_path):
    """An option of another task or method is a warning naming it (it was dropped silently);
    the ones that apply get their defaults."""
    pytest.importorskip("pymoo")
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    import pyquant.search.runs as runs

    class Stop(Exception):
        pass

    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(runs, "run_gru_nsga", record)
    with pytest.warns(UserWarning) as caught, pytest.raises(Stop):
        cli_main(["search", "--task", "digits-gru", "--method", "nsga2", "--out",
                  str(tmp_path / "o"), "--cost", "ebops", "--groups", "2", "--quiet"])
    said = " ".join(str(w.message) for w in caught)
    assert "--cost does not apply" in said and "--groups does not apply" in said
    assert seen["latency"] is False and seen["fitness"] == "trainval"


def test_pytest_benchmark_only_at_the_root_runs_the_comparisons():
    """`pytest --benchmark-only` typed at the root (the design card's command) times benchmark
    cases, a hot one and a cold set (a session once left the shared fixture reading a field the
    cases no longer had: every run_case benchmark failed, and nothing in the suite noticed)."""
    pytest.importorskip("pytest_benchmark")
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    pick = "int8_baselines and pyquant and (cold or small)"
    run = subprocess.run([sys.executable, "-m", "pytest", "--benchmark-only", "-q",
                          "-p", "no:cacheprovider", "-k", pick], cwd=root, capture_output=True,
                         text=True, timeout=600)
    tail = run.stdout[-2000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert "\n2 passed" in run.stdout and "failed" not in run.stdout, tail
