"""Command line: python -m pyquant info | bench | search."""
from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    import pyquant

    info = pyquant.cpu_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"pyquant {pyquant.__version__}")
    print(f"CPU:        {info['brand'] or info['vendor']}")
    print(f"active ISA: {info['isa']}   (available: {', '.join(info['available'])}; "
          f"force one with PYQUANT_ISA=...)")
    print(f"threads:    {info['threads']}")
    flags = [k for k, v in info["features"].items() if v]
    print(f"features:   {' '.join(flags)}")
    from ._kernels import kernel_table

    print("kernels:")
    for op, desc in kernel_table(info["isa"]).items():
        print(f"  {op:<14} {desc}")
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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
