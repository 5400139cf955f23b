"""`python -m pyquant search --task digits-gru|mlp --method nsga2|hgq --budget quick|full --out DIR`."""
from __future__ import annotations

import json
import time

from .._cli import nonneg_int, output_dir, positive_float, positive_int


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="choose per-layer / per-operator bit widths (HGQ, NSGA-II)")
    p.add_argument("--task", choices=("digits-gru", "mlp"), required=True)
    p.add_argument("--method", choices=("nsga2", "hgq"), required=True)
    p.add_argument("--budget", choices=("quick", "full", "tiny"), default="quick",
                   help="quick: a few minutes on 2 cores; tiny: seconds (smoke tests)")
    p.add_argument("--out", required=True, type=output_dir,
                   help="directory for front.json and front.png")
    p.add_argument("--seed", type=nonneg_int, default=0)
    # options of one task or method: None = not given (a given one that does not apply is
    # named in a warning, not silently dropped; OPTION_DEFAULTS fills the rest)
    p.add_argument("--groups", type=positive_int, default=None,
                   help="mlp: width groups of output channels per layer (1 = per layer; default 4)")
    p.add_argument("--data", choices=("synthetic", "digits"), default=None,
                   help="mlp: generated 16-feature 5-class data (default) or sklearn digits")
    p.add_argument("--beta", type=positive_float, nargs=2, default=None, metavar=("BETA0", "BETA1"),
                   help="hgq: beta ramp (log scale) on cost / cost(uniform 8) (default 0.01 1)")
    p.add_argument("--cost", choices=("size", "ebops", "latency"), default=None,
                   help="mlp hgq: cost term (latency = table measured from the kernels; default size)")
    p.add_argument("--latency", action="store_true", default=None,
                   help="digits-gru nsga2: add measured latency as a third objective")
    p.add_argument("--fitness", choices=("trainval", "val"), default=None,
                   help="digits-gru: split whose accuracy NSGA-II maximizes / HGQ selects checkpoints on "
                        "(default trainval; test is never used)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="hgq: training epochs (default: the budget's)")
    p.add_argument("--latency-cache", default=None, help="JSON cache for the latency table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


OPTION_DEFAULTS = {"groups": 4, "data": "synthetic", "beta": (1e-2, 1.0), "cost": "size",
                   "latency": False, "fitness": "trainval", "epochs": None}


def _applies(name: str, task: str, method: str) -> bool:
    return {"groups": task == "mlp", "data": task == "mlp", "beta": method == "hgq",
            "epochs": method == "hgq", "cost": task == "mlp" and method == "hgq",
            "latency": task == "digits-gru" and method == "nsga2",
            "fitness": task == "digits-gru"}[name]


def _resolve_options(args) -> None:
    """Warns about given options that do not apply to this task / method, then fills defaults."""
    import warnings

    for name, default in OPTION_DEFAULTS.items():
        given = getattr(args, name)
        if given is not None and not _applies(name, args.task, args.method):
            warnings.warn(f"search: --{name} does not apply to --task {args.task} --method "
                          f"{args.method}; ignored", stacklevel=2)
        if given is None:
            setattr(args, name, default)


def _run(args) -> int:
    from .._extras import require

    _resolve_options(args)

    # before any training: the front is plotted at the very end
    needs = {"matplotlib": "matplotlib", "sklearn": "scikit-learn"}
    if args.method == "nsga2":
        needs["pymoo"] = "pymoo"
    require("search", needs, "search")
    import torch

    from .front import write_front
    from .runs import run_gru_hgq, run_gru_nsga, run_mlp_hgq, run_mlp_nsga, summarize

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine
    show = not args.quiet
    t0 = time.time()
    if args.task == "digits-gru" and args.method == "nsga2":
        doc = run_gru_nsga(args.budget, args.seed, latency=args.latency, show=show,
                           latency_cache=args.latency_cache, fitness=args.fitness)
    elif args.task == "digits-gru":
        doc = run_gru_hgq(args.budget, args.seed, beta=tuple(args.beta), show=show,
                          epochs=args.epochs, select=args.fitness)
    elif args.method == "hgq":
        doc = run_mlp_hgq(args.budget, args.seed, groups=args.groups, cost=args.cost, show=show,
                          latency_cache=args.latency_cache, data_name=args.data,
                          beta=tuple(args.beta), epochs=args.epochs)
    else:
        doc = run_mlp_nsga(args.budget, args.seed, groups=args.groups, show=show,
                           data_name=args.data)
    doc["seconds"] = round(time.time() - t0, 1)
    doc["summary"] = summarize(doc)
    jpath, ppath = write_front(doc, args.out)
    s = doc["summary"]
    print(f"wrote {jpath} and {ppath} ({len(doc['points'])} points, {doc['seconds']} s)")
    print(f"uniform-8: accuracy {s['uniform8_accuracy']:.4f}, size {s['uniform8_size_bits']} bits")
    for tag, label in (("best", "test"), ("search_best", "search")):
        b = s.get(tag)
        if b is None:
            print(f"no mixed point within 1 point of uniform-8 on the {label} split")
            continue
        print(f"smallest point within 1 point of uniform-8 (chosen on the {label} split): "
              f"{b['size_ratio']:.3f}x size, test accuracy {b['accuracy']:.4f} "
              f"(search split {b['search_accuracy']:.4f}), deployed {b['deployed_accuracy']:.4f}")
        print("  config: " + json.dumps(b["config"]))
    print(f"largest |accuracy - deployed_accuracy|: {s['max_deployed_gap']:.4f}")
    return 0
