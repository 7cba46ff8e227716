"""Environments for `mspn` children that must not use MegEngine (tests only).

Both put tests/megengine_trap first on the child's PYTHONPATH, whose sitecustomize.py
installs the guard at start-up (its docstring says how it works).
"""

from __future__ import annotations

import os
from pathlib import Path

TRAP_FOLDER = Path(__file__).resolve().parent / "megengine_trap"


def _guarded_env(**extra: str) -> dict:
    path = [str(TRAP_FOLDER)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {"PYTHONPATH": os.pathsep.join(path), **extra}


def megengine_trap_env(record: Path, **extra: str) -> dict:
    """Importing megengine appends the importing stack to `record` and raises RuntimeError,
    which no code treats as "MegEngine is absent": a run that imports it is caught."""
    return _guarded_env(MSPN_TEST_MEGENGINE_TRAP=str(record), **extra)


def megengine_hidden_env(**extra: str) -> dict:
    """MegEngine looks uninstalled (find_spec and import fail), as on Python 3.11+."""
    return _guarded_env(MSPN_TEST_HIDE_MEGENGINE="1", **extra)
