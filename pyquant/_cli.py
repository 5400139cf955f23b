"""argparse types shared by the command lines: bad numbers and unwritable output paths are a
usage error before any work starts, not a traceback at the end of a run."""
from __future__ import annotations

import argparse
import os


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def writable_file(path: str) -> str:
    """A file path the run can write at its end: not a directory, in an existing writable one."""
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a directory; expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {parent} is not a writable "
                                         "directory")
    return path


def output_dir(path: str) -> str:
    """A directory the run creates (or reuses) for its outputs."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(path))
    probe = path if os.path.isdir(path) else parent
    while not os.path.exists(probe):  # the nearest existing ancestor must be writable
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot create outputs in {path}: {probe} is not a "
                                         "writable directory")
    return path
