"""MegEngine's outputs of the seeded networks on fixed inputs, for backends that run where
MegEngine cannot (tests only).

The torch tests run in .ci/run's Python 3.11 world, which has no MegEngine. The reference
world (Python 3.10, first in .ci/run) computes MegEngine's outputs on the same inputs and
the same weight files (tests/slow/test_megengine_reference.py) and writes them to
$MSPN_CROSS_WORLD_DIR; the other world reads them. Same machine, so no verdict depends on
the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import numpy as np

NETWORKS = ("mspn", "detector")


def reference_inputs(which: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    if which == "mspn":  # normalised crops
        return rng.standard_normal((3, 3, 256, 192)).astype(np.float32)
    return rng.uniform(0, 255, (1, 3, 192, 256)).astype(np.float32)  # raw pixels, a non-square detector input


def network_of(which: str, mspn_weights: Path, detector_weights: Path):
    from mspn_cli.config import load_detector_config, load_pose_config

    return (load_pose_config(), mspn_weights) if which == "mspn" else (load_detector_config(), detector_weights)


def reference_file(which: str) -> Optional[Path]:
    folder = os.environ.get("MSPN_CROSS_WORLD_DIR")
    return Path(folder) / f"megengine_outputs_{which}.npz" if folder else None


def megengine_outputs(which: str, mspn_weights: Path, detector_weights: Path) -> List[np.ndarray]:
    """MegEngine's outputs on `reference_inputs(which)` (needs MegEngine)."""
    from mspn_cli.runtime.megengine_backend import MegEngineBackend
    from mspn_cli.runtime.network import load_network

    config, weights = network_of(which, mspn_weights, detector_weights)
    model, _, _ = load_network(config.model.name, config.weights, str(weights), progress=False)
    return MegEngineBackend(model).run(reference_inputs(which))


def save_outputs(path: Path, outputs: List[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, *outputs)
    tmp.replace(path)


def load_outputs(path: Path) -> List[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]
