"""A pytest plugin (loaded by tests/conftest.py): in CI, a skip for a missing package is a failure.

Hard dependencies are imported, never skipped, but a skip can still creep in (an optional
import in a helper, a probe that fails for the wrong reason). Wherever the `CI` variable is
set, a skip whose reason reads like a broken install fails the test instead, unless the
reason is on the short list of skips CI may legitimately have. Every skip is printed with
its reason either way (`-ra` in pyproject.toml's addopts).
"""

from __future__ import annotations

import os
import re

import pytest

# Reasons that mean "the environment is broken", which CI must never accept.
FORBIDDEN_SKIP_REASONS = re.compile(
    r"no module named|not installed|could not import|cannot import|importerror|pip install|is not available",
    re.IGNORECASE,
)

# Skips that are facts about the machine or the Python, not a broken install.
ALLOWED_SKIP_REASONS = (
    # runtime/lite_probe.py: MegEngine Lite's JIT fails on some CPUs (AMD EPYC Zen 4).
    re.compile(r"^MegEngine Lite does not run on this CPU"),
    # Tests marked `megengine` where MegEngine has no wheels (Python >= 3.11).
    re.compile(r"^MegEngine\b.*\bPython (>= ?)?3\.1[1-9]"),
    # The torch tests skip in the main (MegEngine) world; .ci/run runs them in its Python 3.11
    # venv with PyTorch and fails there when they skip.
    re.compile(r"^PyTorch \(the optional \[torch\] extra\) is not installed"),
    # Root without CAP_SETPCAP cannot make file modes apply to a child.
    re.compile(r"^running as root without CAP_SETPCAP"),
)


def ci_forbids_skip(reason: str) -> bool:
    """True when a skip with this reason must fail a CI run."""
    reason = re.sub(r"^Skipped: ", "", reason.strip())
    if any(pattern.search(reason) for pattern in ALLOWED_SKIP_REASONS):
        return False
    return bool(FORBIDDEN_SKIP_REASONS.search(reason))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_forbidden_skip(report) -> None:
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if ci_forbids_skip(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI for a reason CI must never have (a broken install?): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())
