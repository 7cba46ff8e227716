"""What the benchmark scripts share: default folders and how they report."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The shared data set when it is beside the checkout (more and larger images), else the
# repository's own test data, so a clone on its own can run every benchmark.
DEFAULT_DATA = next((d for d in (REPO.parent / "shared" / "data", REPO / "tests" / "data") if (d / "coco_sample").is_dir()),
                    REPO / "tests" / "data")
# MSPN_HOME for the benchmarks' random weights and exported graphs, kept out of the user's cache.
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "mspn-bench-home"


def report_console():
    from rich.console import Console

    # Wide enough for the tables when the output is a file or a pipe (Rich assumes 80 columns).
    return Console(highlight=False, width=None if sys.stdout.isatty() else 130)


def write_json(path: str, data: Any, console) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"wrote {path}")
