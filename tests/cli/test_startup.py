"""Start-up stays light: help, version and shell completion load none of the heavy libraries.

A shell loop over thousands of photos, or a shell asking for completions, must not pay
for numpy, OpenCV, onnxruntime or MegEngine before anything is computed. The check is on
what gets imported (`-X importtime` lists every module), never on how long it takes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("numpy", "cv2", "onnxruntime", "megengine")

# Runs the CLI's entry point under the program name `mspn`, as the console script does, so
# that Typer reads the `_MSPN_COMPLETE` variable (under `python -m` the name differs).
ENTRY = "import sys; sys.argv[0] = 'mspn'; from mspn_cli.cli import main; main()"


def _run_with_import_log(args, env=None):
    full_env = dict(os.environ, COLUMNS="200")
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", ENTRY, *args],
        capture_output=True, text=True, env=full_env, timeout=120,
    )
    imported = set()
    other_stderr = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "imported package":
                imported.add(name)
        else:
            other_stderr.append(line)
    return proc, imported, "\n".join(other_stderr)


def _heavy(imported):
    return sorted(name for name in imported if name.split(".")[0] in HEAVY)


def test_help_imports_no_heavy_library():
    proc, imported, stderr = _run_with_import_log(["--help"])
    assert proc.returncode == 0, stderr
    assert "keypoints" in proc.stdout and "detect" in proc.stdout  # the real help, with every command listed
    assert "mspn_cli.cli.app" in imported
    assert _heavy(imported) == []


def test_version_imports_no_heavy_library():
    proc, imported, stderr = _run_with_import_log(["--version"])
    assert proc.returncode == 0, stderr
    assert proc.stdout.startswith("mspn-cli ")
    assert _heavy(imported) == []


@pytest.mark.parametrize(
    "words, cword, expected",
    [("mspn ke", "1", "keypoints"), ("mspn keypoints --bo", "2", "--boxes"), ("mspn weights ver", "2", "verify")],
)
def test_completion_imports_no_heavy_library(words, cword, expected):
    env = {"_MSPN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
    proc, imported, stderr = _run_with_import_log([], env=env)
    assert proc.returncode == 0, stderr
    assert expected in proc.stdout.split()
    assert _heavy(imported) == []


@pytest.mark.parametrize("command", ["keypoints", "detect", "visualize", "eval-coco", "merge-results", "export", "weights", "doctor", "track"])
def test_command_help_imports_no_heavy_library(command):
    proc, imported, stderr = _run_with_import_log([command, "--help"])
    assert proc.returncode == 0, stderr
    assert "Usage:" in proc.stdout
    assert _heavy(imported) == []
