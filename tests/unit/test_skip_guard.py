"""In CI a skip for a missing package fails the run; legitimate skips stay skips (tests/skip_guard.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO
from tests.skip_guard import ci_forbids_skip

SAMPLE = '''
import pytest

def test_broken_install():
    pytest.importorskip("a_package_that_is_not_there_23")

def test_lite_on_this_cpu():
    pytest.skip("MegEngine Lite does not run on this CPU (runtime/lite_probe.py)")

def test_other_reason():
    pytest.skip("needs a display")
'''


def test_reasons_that_mean_a_broken_install_are_forbidden():
    assert ci_forbids_skip("Skipped: could not import 'onnx': No module named 'onnx'")
    assert ci_forbids_skip("Ray is not installed: pip install 'mspn-cli[ray]' to test --engine ray")
    assert not ci_forbids_skip("MegEngine Lite does not run on this CPU (runtime/lite_probe.py)")
    assert not ci_forbids_skip("MegEngine has no wheels for Python 3.12 (it is not installed)")
    assert not ci_forbids_skip("needs a display")
    assert not ci_forbids_skip("PyTorch (the optional [torch] extra) is not installed")


def _run(tmp_path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "tests.skip_guard", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_in_ci_a_missing_package_fails_and_is_named(tmp_path):
    proc = _run(tmp_path, ci=True)
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 2 skipped" in proc.stdout
    assert "a_package_that_is_not_there_23" in proc.stdout
    assert "MegEngine Lite does not run on this CPU" in proc.stdout  # -rs prints every skip's reason


def test_outside_ci_the_same_skips_stay_skips(tmp_path):
    proc = _run(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout
    assert "3 skipped" in proc.stdout
