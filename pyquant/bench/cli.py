"""`python -m pyquant bench`: the main job."""
from __future__ import annotations

import os
import sys
import time

from .._cli import positive_int, writable_file
from .cases import l3_bytes


def _progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="case", leave=False, file=sys.stderr)
    except ImportError:
        return None


def _header(args, env: dict, seconds: float) -> str:
    ghz = env["clock_ghz"]
    lines = [f"pyquant bench ({'quick' if args.quick else 'full'}) on {env['cpu']}, "
             f"ISA {env['isa']}, torch {env['torch']}, {env['date']} ({seconds:.0f} s)"]
    if ghz:
        lines.append(f"clock {ghz:.2f} GHz, measured (dependent-add chain: "
                     f"{env['clock_ghz_start']:.2f} before the run, {env['clock_ghz_end']:.2f} "
                     "after); MAC/cyc = MACs / s / clock.")
    else:
        lines.append("clock: could not be measured on this CPU, so no MAC/cycle column "
                     "(GOP/s only).")
    if env.get("dram_read_gbps"):
        bw = ", ".join(f"{g:.1f} GB/s on {t} thread{'s' if t > 1 else ''}"
                       for t, g in sorted(env["dram_read_gbps"].items()))
        lines.append(f"DRAM read, one float32 stream (x.sum()), measured: {bw} (a reference: "
                     "kernels reading several streams can pass it).")
    lines.append("'x int8' = time of pyquant.int8_gemm / time (same problem, same run); 'x fp32' = "
                 "the float layer's time (nn.Conv2d on conv problems, else F.linear) / time; 'cold' = "
                 f"each kernel's weights rotated through >= 2x L3 ({l3_bytes() >> 20} MiB here); "
                 "'(1 round)' = a call over 1 s, timed once.")
    from .runner import isa_cap

    if isa_cap() and not os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS"):
        lines.append(f"PYQUANT_ISA={isa_cap()} caps pyquant only: torch's baselines still use "
                     "this CPU's best instructions (FBGEMM_ENABLE_INSTRUCTIONS=AVX2 caps fbgemm's "
                     "dynamic int8 Linear; torch._int_mm is not capped).")
    return "\n".join(lines)


def run(args) -> int:
    if args.plot:
        from .._extras import require

        require("bench --plot", {"matplotlib": "matplotlib"}, "bench")
    from . import cases, machine, report, runner

    problems = cases.problems(quick=args.quick)
    if args.filter:
        names = [p.name for p in problems]
        problems = [p for p in problems if args.filter in p.name]
        if not problems:
            print(f"bench: no problem name contains {args.filter!r}; the problems: "
                  f"{', '.join(names)}", file=sys.stderr)
            return 2
    only = None
    if args.kernel:
        kernels = {c.kernel for p in problems for c in cases.cases_for(p)}
        if not any(s in k for s in args.kernel for k in kernels):
            print(f"bench: no kernel name contains {' or '.join(map(repr, args.kernel))}; the "
                  f"kernels: {', '.join(sorted(kernels))}", file=sys.stderr)
            return 2
        only = lambda c: any(s in c.kernel for s in args.kernel) or c.kind in (
            "int8-baseline", "fp32")
    t0 = time.time()
    # measured before and after the run; the bandwidth keeps the better (less disturbed) one
    cold_threads = sorted({p.threads for p in problems if p.cold})
    measured = {"clock_ghz_start": machine.clock_ghz()}
    dram = {t: machine.dram_read_gbps(t) for t in cold_threads}
    total = sum(len([c for c in cases.cases_for(p) if only is None or only(c)]) for p in problems)
    bar = _progress(total) if not args.no_progress else None
    results = []
    for p in problems:
        def on_case(msg, bar=bar):
            if bar is not None:
                bar.set_description(msg[:60])
                bar.update(1)
        results += runner.run_problem(p, rounds=args.rounds or (3 if args.quick else 5),
                                      min_sample=0.01 if args.quick else 0.03, only=only,
                                      on_case=on_case)
    if bar is not None:
        bar.close()
    measured["clock_ghz_end"] = machine.clock_ghz()
    measured["dram_read_gbps"] = {t: max(g, machine.dram_read_gbps(t)) for t, g in dram.items()}
    ends = [g for g in (measured["clock_ghz_start"], measured["clock_ghz_end"]) if g]
    measured["clock_ghz"] = sum(ends) / len(ends) if len(ends) == 2 else None
    rows = report.speedups(results, measured["clock_ghz"])
    env = report.environment(measured)
    print(_header(args, env, time.time() - t0))
    print(report.format_table(rows, with_cycles=measured["clock_ghz"] is not None))
    if args.json:
        report.save_json(rows, args.json, measured)
        print(f"wrote {args.json}")
    if args.plot:
        report.save_plot(rows, args.plot, measured["dram_read_gbps"])
        print(f"wrote {args.plot}")
    return 0


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="kernel comparison on this CPU (the main job)")
    p.add_argument("--quick", action="store_true", help="a small set of problems, under a minute")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="save results as JSON")
    p.add_argument("--plot", metavar="PATH", type=writable_file,
                   help="save a PNG of speedups over int8 and decode times vs their DRAM references "
                        "(needs matplotlib: pip install 'pyquant[bench]')")
    p.add_argument("--filter", metavar="TEXT", help="only problems whose name contains TEXT")
    p.add_argument("--kernel", metavar="TEXT", action="append",
                   help="only kernels whose name contains TEXT (repeatable; the int8 and fp32 "
                        "baselines are kept)")
    p.add_argument("--rounds", type=positive_int, default=None, help="timing rounds per case")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
