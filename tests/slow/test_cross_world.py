"""Same bytes in both worlds: Python 3.10 + numpy 1 + MegEngine (the reference) and a
MegEngine-free Python 3.11+ with numpy 2.

.ci/run sets MSPN_CROSS_WORLD_DIR and runs this file in the reference world first, which
writes its outputs there, then in the other world, which compares its own with them byte
for byte. Same machine, same official-format weight files (the shared MSPN_TEST_CACHE),
each world building its own graphs in an empty MSPN_HOME, so no verdict depends on the CPU.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import COCO_SAMPLE, MEGENGINE_SKIPS, run_mspn

CROSS_WORLD_DIR = os.environ.get("MSPN_CROSS_WORLD_DIR")
pytestmark = pytest.mark.skipif(not CROSS_WORLD_DIR, reason="set MSPN_CROSS_WORLD_DIR (.ci/run does) to compare two worlds")

ANN = COCO_SAMPLE / "person_keypoints_sample.json"
DETS = COCO_SAMPLE / "person_dets_sample.json"
IMAGE = COCO_SAMPLE / "000000000785.jpg"
REFERENCE_WORLD = sys.version_info[:2] == (3, 10) and not MEGENGINE_SKIPS


def _world_outputs(tmp_path: Path, mspn_weights: Path) -> dict:
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps([row for row in json.loads(DETS.read_text()) if row["image_id"] == 785]))
    env = {"MSPN_HOME": str(tmp_path / "home")}  # empty: this world builds its own graphs
    # One CPU, so one inference thread in both worlds, however each world's suite was spread over
    # the CPUs (tests/conftest.py pins each pytest-xdist worker to its own share).
    run_mspn("keypoints", IMAGE, "--boxes", boxes, "--json", tmp_path / "out.json", "--weights", mspn_weights,
             env=env, check=True, one_cpu=True)
    run_mspn("eval-coco", "--dets", DETS, "--ann", ANN, "--images", COCO_SAMPLE, "--weights", mspn_weights,
             "--results", tmp_path / "results.json", "--summary", tmp_path / "summary.json", env=env, check=True,
             one_cpu=True)
    # The summary names its own output files: this world's temporary folder becomes "<tmp>".
    return {name: (tmp_path / name).read_bytes().replace(str(tmp_path).encode(), b"<tmp>")
            for name in ("out.json", "results.json", "summary.json")}


def _differences(name: str, mine: bytes, reference: bytes) -> str:
    """Which values differ, for the failure message."""
    def leaves(value, path=""):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from leaves(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from leaves(item, f"{path}[{index}]")
        else:
            yield path, value

    ours, theirs = dict(leaves(json.loads(mine))), dict(leaves(json.loads(reference)))
    changed = [f"{key}: {ours.get(key)!r} vs reference {theirs.get(key)!r}"
               for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    return f"{name}: {len(changed)} values differ: " + "; ".join(changed[:10])


def test_keypoints_and_eval_coco_write_the_same_bytes_in_both_worlds(tmp_path, mspn_weights):
    folder = Path(CROSS_WORLD_DIR)
    outputs = _world_outputs(tmp_path, mspn_weights)
    if REFERENCE_WORLD:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in outputs.items():
            (folder / name).write_bytes(data)
        return
    missing = [name for name in outputs if not (folder / name).is_file()]
    assert not missing, f"no reference outputs in {folder}: run this test on Python 3.10 with MegEngine first"
    for name, data in outputs.items():
        reference = (folder / name).read_bytes()
        assert data == reference, _differences(name, data, reference)
