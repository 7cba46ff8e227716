"""Does MegEngine Lite run on this CPU? Asked once, in a child process, and remembered.

MegEngine Lite 1.13's JIT fails on some CPUs ("bad err=45 in Xbyak::Error", seen on
AMD EPYC Zen 4) and the process then hangs or aborts inside `forward`. That cannot be
caught in-process, so a child runs a tiny graph; its verdict is cached per CPU model and
MegEngine version in the package's cache ($MSPN_LITE_PROBE_DIR, else $MSPN_HOME, else the
per-user cache), so the probe costs a few seconds once.

The child is `python -m mspn_cli.runtime.lite_probe_child`: it prints OK_LINE and exits 0
when a Lite forward works. It is a module of its own because it needs the Lite backend,
which asks this module for the verdict: one direction each, no import circle.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Tuple

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60  # a hang guard for the child only: a working probe takes a few seconds
OK_LINE = "lite-probe-ok"


def _cpu_identity() -> str:
    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return hashlib.sha256(f"{model}|{flags}".encode()).hexdigest()[:16]


def _cache_file() -> Path:
    try:
        from importlib.metadata import version

        mge_version = version("megengine")
    except Exception:  # noqa: BLE001 - no metadata: still cache per CPU
        mge_version = "unknown"
    # $MSPN_LITE_PROBE_DIR (the test suite keeps its verdicts apart from the user's), else
    # $MSPN_HOME, which holds everything else the package caches, else the per-user cache.
    configured = os.environ.get("MSPN_LITE_PROBE_DIR") or os.environ.get("MSPN_HOME")
    base = Path(configured).expanduser() if configured else Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mspn-cli"
    return base / f"lite-probe-{mge_version}-{_cpu_identity()}.json"


def lite_runs_here() -> bool:
    """True when a MegEngine Lite forward works on this machine (probed once, cached)."""
    return lite_verdict()[0]


@functools.lru_cache(maxsize=None)
def lite_verdict() -> Tuple[bool, str]:
    """(whether a MegEngine Lite forward works on this machine, why not), probed once and cached."""
    cache = _cache_file()
    try:
        record = json.loads(cache.read_text())
        return bool(record["runs"]), str(record.get("detail", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        proc = subprocess.run([sys.executable, "-m", "mspn_cli.runtime.lite_probe_child"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        runs = proc.returncode == 0 and OK_LINE in proc.stdout and "Xbyak" not in proc.stderr
        detail = "" if runs else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0][:200]
    except subprocess.TimeoutExpired:
        runs, detail = False, "a Lite forward did not return"
    if not runs:
        log.warning("MegEngine Lite does not run on this CPU (%s); the mge-lite backend is not offered", detail)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        from mspn_cli.io.writers import write_bytes_atomic

        write_bytes_atomic(cache, json.dumps({"runs": runs, "detail": detail}).encode(), overwrite=True)
    except Exception:  # noqa: BLE001 - an unwritable cache only means probing again next time
        pass
    return runs, detail
