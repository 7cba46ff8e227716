"""A child process in which `import megengine` is recorded and fails (tests only)."""

from __future__ import annotations

import os
from pathlib import Path


def megengine_tripwire(root: Path) -> dict:
    """Environment for a child in which importing megengine is recorded in `root/imported` and fails."""
    package = root / "tripwire" / "megengine"
    package.mkdir(parents=True)
    marker = root / "imported"
    (package / "__init__.py").write_text(
        "import traceback\n"
        f"with open({str(marker)!r}, 'a') as handle:\n"
        "    handle.write(''.join(traceback.format_stack()))\n"
        "raise ImportError('megengine is blocked in this test')\n"
    )
    path = os.pathsep.join(p for p in (str(package.parent), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "MSPN_HOME": str(root / "home")}
