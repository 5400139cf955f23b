"""Command-line handling shared by the stand-alone benchmark scripts (not a pytest module)."""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


def parsed_args(doc: str, parse: Callable[[list[str]], T]) -> T:
    """``parse(sys.argv[1:])``; the script's docstring on -h / --help (exit 0), and on arguments
    ``parse`` cannot read (a ValueError, IndexError or KeyError) the docstring and the error
    (exit 2), never a traceback."""
    argv = sys.argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip())
        sys.exit(0)
    try:
        return parse(argv)
    except (ValueError, IndexError, KeyError) as e:
        print(doc.strip(), file=sys.stderr)
        sys.exit(f"\nerror: cannot read the arguments {argv}: {type(e).__name__}: {e}")


def no_args(doc: str) -> None:
    """For a script without arguments: -h / --help prints its docstring, anything else is refused."""
    def parse(argv: list[str]) -> None:
        if argv:
            raise ValueError("this script takes no arguments")
    parsed_args(doc, parse)


def import_transformers():
    """transformers, or exit with the extra to install (the model benchmarks build from configs)."""
    try:
        import transformers
    except ImportError:
        raise SystemExit("needs transformers: pip install '.[llm]'")
    return transformers
