"""`python -m pyquant bench`: the main job."""
from __future__ import annotations

import sys
import time


def _progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="case", leave=False, file=sys.stderr)
    except ImportError:
        return None


def run(args) -> int:
    from . import cases, report, runner

    problems = cases.problems(quick=args.quick)
    if args.filter:
        problems = [p for p in problems if args.filter in p.name]
    only = None
    if args.kernel:
        only = lambda c: any(s in c.kernel for s in args.kernel) or c.kernel in (
            "pyquant.int8_gemm", "fp32 F.linear")
    total = sum(len([c for c in cases.cases_for(p) if only is None or only(c)]) for p in problems)
    bar = _progress(total) if not args.no_progress else None
    t0 = time.time()
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
    rows = report.speedups(results)
    env = report.environment()
    print(f"pyquant bench ({'quick' if args.quick else 'full'}) on {env['cpu']}, ISA {env['isa']}, "
          f"torch {env['torch']}, {env['date']} ({time.time() - t0:.0f} s)")
    print(f"MAC/cycle assumes {runner.NOMINAL_GHZ} GHz; 'x int8' = time of pyquant.int8_gemm / time "
          f"(same problem, same run); 'cold' = weights rotated through > 4x L3.")
    print(report.format_table(rows))
    if args.json:
        report.save_json(rows, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        report.save_plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="kernel comparison on this CPU (the main job)")
    p.add_argument("--quick", action="store_true", help="a small set of problems, under a minute")
    p.add_argument("--json", metavar="PATH", help="save results as JSON")
    p.add_argument("--plot", metavar="PATH", help="save a PNG of speedups over int8")
    p.add_argument("--filter", metavar="TEXT", help="only problems whose name contains TEXT")
    p.add_argument("--kernel", metavar="TEXT", action="append",
                   help="only kernels whose name contains TEXT (repeatable; baselines kept)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds per case")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
