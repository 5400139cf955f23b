"""Optional dependencies, checked before a command starts working: a missing one is a message
naming the extra to install, not a traceback minutes into a run."""
from __future__ import annotations

import importlib


def require(command: str, modules: dict[str, str], extra: str) -> None:
    """Exit with "`command` needs <pip names>: pip install 'pyquant[extra]'" unless every module
    (import name -> pip name) imports."""
    missing = []
    for name, pip_name in modules.items():
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(pip_name)
    if missing:
        raise SystemExit(f"{command} needs {' and '.join(missing)}: pip install 'pyquant[{extra}]'")
