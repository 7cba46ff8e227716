"""Loaded by the `mspn` children of tests/cli/test_megengine_free.py (this folder is put first
on their PYTHONPATH, so Python imports it at start-up).

MSPN_TEST_MEGENGINE_TRAP=<file>: importing megengine (or megenginelite) appends the module
name and the importing stack to <file> and raises RuntimeError, which no code treats as
"MegEngine is absent". Looking it up without importing it (importlib.util.find_spec) is
allowed and finds it.
MSPN_TEST_HIDE_MEGENGINE=1: MegEngine looks uninstalled (find_spec and import both fail with
ModuleNotFoundError), to test the one-line messages on a Python where it is installed.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import traceback

_TRAPPED = ("megengine", "megenginelite")


def _is_trapped(name):
    return any(name == root or name.startswith(root + ".") for root in _TRAPPED)


class _TrapLoader(importlib.abc.Loader):
    def create_module(self, spec):
        with open(os.environ["MSPN_TEST_MEGENGINE_TRAP"], "a") as handle:
            handle.write(f"import {spec.name}\n{''.join(traceback.format_stack())}\n")
        raise RuntimeError(f"{spec.name} imported in a run that must not use MegEngine")

    def exec_module(self, module):  # never reached: create_module raises
        raise RuntimeError("unreachable")


class _MegEngineGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if not _is_trapped(name):
            return None
        if os.environ.get("MSPN_TEST_HIDE_MEGENGINE") == "1":
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        if os.environ.get("MSPN_TEST_MEGENGINE_TRAP"):
            return importlib.machinery.ModuleSpec(name, _TrapLoader())
        return None


if os.environ.get("MSPN_TEST_MEGENGINE_TRAP") or os.environ.get("MSPN_TEST_HIDE_MEGENGINE") == "1":
    sys.meta_path.insert(0, _MegEngineGuard())
