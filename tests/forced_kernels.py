"""One kernel-table entry forced for its family, for tests that must reach every kernel (the
`isa` fixture reaches only the kernel dispatch ranks first per tier). A module of its own: the
repository root's pytest run sees benchmarks/conftest.py and tests/conftest.py both as
`conftest`."""
from __future__ import annotations

import contextlib

import pytest

from pyquant import _C


@contextlib.contextmanager
def forced_kernel(entry):
    """`entry` (from `_C.kernel_table()`): its ISA tier and the kernel itself, restored after;
    skipped where this CPU or build cannot run it."""
    if not entry["built"] or entry["missing"]:
        pytest.skip(f"{entry['name']}: this CPU or build cannot run it")
    previous = _C.active_isa()
    _C.set_isa(entry["tier"])
    _C.set_kernel(entry["family"], entry["name"])
    try:
        yield entry["name"]
    finally:
        _C.set_kernel(entry["family"], None)
        _C.set_isa(previous)
