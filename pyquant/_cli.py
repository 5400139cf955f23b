"""argparse types shared by the command lines: bad numbers and unwritable output paths are a
usage error before any work starts, not a traceback at the end of a run."""
from __future__ import annotations

import argparse
import os
import tempfile


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


def _can_create_in(directory: str) -> bool:
    """Whether a file can be created in ``directory``: tried for real, because permission bits
    say yes to root even where the file system refuses (/proc, read-only mounts)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def writable_file(path: str) -> str:
    """A file path the run can write at its end: not a directory, in an existing writable one."""
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a directory; expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not _can_create_in(parent):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {parent} is not a writable "
                                         "directory")
    return path


def output_dir(path: str) -> str:
    """A directory the run creates (or reuses) for its outputs: tried here (made, a file created
    in it, removed again), so a path that cannot hold it is a usage error before the run."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} exists and is not a directory")
    made = []  # directories created for the probe, removed again (the run makes its own)
    head = os.path.abspath(path)
    while not os.path.exists(head):
        made.append(head)
        head = os.path.dirname(head)
    try:
        for d in reversed(made):
            os.mkdir(d)
        ok = _can_create_in(path)
    except OSError:
        ok = False
    finally:
        for d in made:
            if os.path.isdir(d):
                os.rmdir(d)
    if not ok:
        raise argparse.ArgumentTypeError(f"cannot create outputs in {path}: not a writable "
                                         "location")
    return path
