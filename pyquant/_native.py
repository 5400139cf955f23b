"""Loads the compiled core and applies the PYQUANT_ISA override once, at import."""
from __future__ import annotations

import os
import pkgutil

import pyquant

# With the package at the repository root, `python -m pyquant` run from a checkout imports this
# source tree, which has no compiled _C. Extend the package path with the installed copy (if
# any), so its _C is found; the Python modules still come from the tree, first on the path.
pyquant.__path__ = pkgutil.extend_path(pyquant.__path__, "pyquant")
try:
    from . import _C
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "pyquant's compiled core (pyquant._C) is missing: this is the source tree "
        f"({pyquant.__path__[0]}) without a build. Install it with `pip install .` (or "
        "`pip install -e . --no-build-isolation`) and run from any directory; "
        f"underlying error: {exc}"
    ) from exc

_ISA_NAMES = ("scalar", "avx2", "avx512", "neon")


def _apply_env_isa() -> None:
    requested = os.environ.get("PYQUANT_ISA", "").strip().lower()
    if not requested:
        return
    if requested not in _ISA_NAMES:
        raise ImportError(
            f"PYQUANT_ISA={requested!r} is not a known path; expected one of {', '.join(_ISA_NAMES)}"
        )
    available = _C.available_isas()
    if requested not in available:
        raise ImportError(
            f"PYQUANT_ISA={requested!r}: this CPU (or this build) cannot run that path; "
            f"available: {', '.join(available)}"
        )
    _C.set_isa(requested)


def _check_env_disable() -> None:
    """PYQUANT_DISABLE=avxvnni,amx_int8,...: features the core treats as absent (it reads the
    variable when it detects the CPU); a name it does not know is an error here."""
    names = [n.strip() for n in os.environ.get("PYQUANT_DISABLE", "").split(",") if n.strip()]
    known = [k for k in _C.cpu_features() if k not in ("vendor", "brand", "family", "os_avx",
                                                           "os_avx512")]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ImportError(f"PYQUANT_DISABLE: unknown CPU feature(s) {', '.join(map(repr, unknown))}; "
                          f"expected names among {', '.join(known)}")


_check_env_disable()
_apply_env_isa()
