"""The native kernel table, read from the compiled core (csrc/core/kernel_table.cc).

One entry per micro-kernel variant: family, name, tier, required CPU features, tile (mr x nr),
how it was verified ("native", "qemu" or "not run"), a one-line description, and for this
process whether it is compiled in, whether this CPU runs it and whether dispatch selected it.
`python -m pyquant info`, the tests and the benchmarks read it from here; nothing is retyped.
"""
from __future__ import annotations

from ._native import _C

# the families, in table order (a family added to the table appears here by itself)
FAMILIES = tuple(dict.fromkeys(e["family"] for e in _C.kernel_table()))


def kernel_table() -> list[dict]:
    """Every kernel entry (a fresh list of dicts; `selected` reflects the active tier)."""
    return list(_C.kernel_table())


def kernels(family: str) -> list[dict]:
    """The entries of one family, best first."""
    if family not in FAMILIES:
        raise ValueError(f"family: unknown kernel family {family!r}; expected one of {', '.join(FAMILIES)}")
    return [e for e in kernel_table() if e["family"] == family]


def active_kernels() -> dict[str, dict]:
    """Per family, the entry that runs now (dispatch's choice on the active tier)."""
    return {e["family"]: e for e in kernel_table() if e["selected"]}


def select_kernels(features=None, isa: str | None = None, any_build: bool = False,
                   vendor: str | None = None, family: int | None = None) -> dict[str, list[str]]:
    """Pure dispatch: per family, the kernel names (best first) a CPU with `features` (names,
    None: this CPU) made by `vendor` (CPUID vendor string such as "GenuineIntel") of x86 CPU
    `family` (25: AMD Zen 3/4; vendor and family None: this CPU's when `features` is None,
    else none) would use under tier `isa` (None: the active one). `any_build`: as if this
    build held every architecture's kernels (to ask what an AArch64 CPU would run)."""
    features = None if features is None else list(features)
    return dict(_C.select_kernels(features, isa, any_build, vendor, family))


def requirement(family: str, name: str) -> str | None:
    """None if this CPU and build run kernel `name` of `family`, else why not
    ("needs avx512vbmi", "not built for this architecture")."""
    for e in kernels(family):
        if e["name"] == name:
            if not e["built"]:
                return f"not built for this architecture ({e['tier']} code)"
            return f"needs {', '.join(e['missing'])}" if e["missing"] else None
    raise ValueError(f"name: no {family} kernel named {name!r}")


def describe(entry: dict) -> str:
    """'3x16, native: <description>' for reports."""
    return f"{entry['mr']}x{entry['nr']}, verified {entry['verified']}: {entry['description']}"
