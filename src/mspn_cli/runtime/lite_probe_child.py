"""The child process of the MegEngine Lite probe (runtime/lite_probe.py): a tiny Lite forward.

Prints lite_probe.OK_LINE and exits 0 when it works; a CPU whose Lite JIT fails makes
it abort or hang instead, which the parent observes from outside.
"""

from __future__ import annotations

import os
import sys

from mspn_cli.runtime.lite_probe import OK_LINE


def _probe() -> int:
    import numpy as np

    from mspn_cli._mge import import_megengine
    from mspn_cli.export.mge import export_mge_bytes
    from mspn_cli.runtime.lite_backend import load_lite_network

    mge = import_megengine()

    class Tiny(mge.module.Module):
        def __init__(self):
            super().__init__()
            self.conv = mge.module.Conv2d(3, 8, 3, padding=1)
            self.bn = mge.module.BatchNorm2d(8)

        def forward(self, x):
            return mge.functional.relu(self.bn(self.conv(x)))

    model = Tiny()
    model.eval()
    graph = export_mge_bytes(model, np.zeros((1, 3, 16, 16), np.float32))
    runner = load_lite_network(graph.data, threads=1)
    out = runner.run(np.ones((2, 3, 16, 16), np.float32))[0]
    if out.shape != (2, 8, 16, 16) or not np.isfinite(out).all():
        return 1
    print(OK_LINE, flush=True)
    os._exit(0)  # skip MegEngine's own finalisers: the verdict is given


if __name__ == "__main__":
    sys.exit(_probe())
