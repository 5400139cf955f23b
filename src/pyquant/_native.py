"""Loads the compiled core and applies the PYQUANT_ISA override once, at import."""
from __future__ import annotations

import os

from . import _C

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


_apply_env_isa()
