"""Command line: python -m pyquant info | bench | search."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _weight_memory() -> str:
    """Where quantized layers keep their streamed buffers: decode reads every weight byte once per
    token, and 4 KiB pages cost 4-25% of a cold GEMV (docs/notes/nn.md, 32nd session)."""
    import pyquant

    if not pyquant._C.HUGEPAGE_ARENAS:
        return "the heap (no huge-page arenas in this build or OS)"
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        mode = "unknown"
    off = "" if mode in ("always", "madvise") else "; off here, so they stay on 4 KiB pages"
    return f"buffers >= 64 KiB in huge-page arenas (transparent huge pages: {mode}{off})"


def _info(args) -> int:
    import pyquant

    from ._kernels import FAMILIES, kernel_table, select_kernels

    info = pyquant.cpu_info()
    table = kernel_table()
    rank = {"scalar": 0, "avx2": 1, "neon": 1, "avx512": 2}
    for e in table:  # supported by the CPU and within PYQUANT_ISA's cap
        e["usable"] = bool(e["supported"]) and rank.get(e["tier"], 0) <= rank.get(info["isa"], 0)
    if args.json:
        print(json.dumps(dict(info, kernels=table), indent=2))
        return 0
    print(f"pyquant {pyquant.__version__}")
    print(f"CPU:        {info['brand'] or info['vendor']}")
    print(f"active ISA: {info['isa']}   (available: {', '.join(info['available'])}; "
          f"force one with PYQUANT_ISA=...)")
    cap = os.environ.get("PYQUANT_ISA", "").strip().lower()
    if cap:
        print(f"            PYQUANT_ISA={cap}: kernels above this tier are not used")
    disabled = os.environ.get("PYQUANT_DISABLE", "").strip()
    if disabled:
        print(f"            PYQUANT_DISABLE={disabled}: these CPU features count as absent")
    runtime = pyquant._C.parallel_runtime()
    print(f"threads:    {info['threads']}   (run on: {'the OpenMP runtime ' + runtime if runtime else 'pyquant pool'})")
    print(f"weights:    {_weight_memory()}")
    flags = [k for k, v in info["features"].items() if v and not k.startswith("os_")]
    print(f"features:   {' '.join(flags)}")
    print("kernels (per family: the one that runs, tile MRxNR, how it was verified, the CPU "
          "features it needs; then the others this CPU runs):")
    for family in FAMILIES:
        entries = [e for e in table if e["family"] == family]
        chosen = next(e for e in entries if e["selected"])
        print(f"  {family:<12} {chosen['name']:<20} {chosen['mr']}x{chosen['nr']:<4} "
              f"{chosen['verified']:<8} {chosen['description']}")
        needs = " ".join(chosen["features"]) or "nothing (portable C++)"
        others = [f"{e['name']} ({e['verified']})" for e in entries
                  if e["usable"] and not e["selected"]]
        print(f"  {'':<12} needs {needs}" + (f"; also runs here: {', '.join(others)}"
                                              if others else ""))
        if family == "lut_gemm":
            order = select_kernels()[family]
            if len(order) > 2:
                print(f"  {'':<12} (per codebook, the first that runs it exactly: "
                      f"{' > '.join(order)})")
    lacking = [e for e in table if e["built"] and not e["supported"]]
    if lacking:
        print("not run on this CPU:")
        for e in lacking:
            print(f"  {e['family']:<12} {e['name']:<20} needs {' '.join(e['missing'])}")
    qemu = [f"{e['family']}/{e['name']}" for e in table if e["verified"] == "qemu"]
    never = [f"{e['family']}/{e['name']}" for e in table if e["verified"] == "not run"]
    if qemu:
        print(f"verified only under emulation (qemu-aarch64): {', '.join(qemu)}")
    if never:
        print(f"not run on hardware (no such CPU at hand; see the kernel's description): "
              f"{', '.join(never)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyquant")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="CPU, active path, kernels in use")
    p_info.add_argument("--json", action="store_true")
    p_info.set_defaults(func=_info)
    try:
        from .bench import add_bench_parser

        add_bench_parser(sub)
    except ImportError:
        pass
    try:
        from .search.cli import add_search_parser

        add_search_parser(sub)
    except ImportError:
        pass
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `python -m pyquant info | head`: the reader left, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
