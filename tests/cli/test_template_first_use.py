"""First use on an empty graph cache builds the ONNX graphs from the packaged templates, without MegEngine.

The child `mspn` runs with a `megengine` package first on its path that records any
import attempt in a file and then fails, so an import anywhere on the path is seen even
if the code would have caught the ImportError.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import COCO_SAMPLE, assert_clean_error, run_mspn
from tests.tripwire import megengine_trap_env

DETECTOR = "retinanet_res50_coco_3x_800size"


def test_cold_keypoints_with_boxes_never_imports_megengine(tmp_path, mspn_weights):
    env = megengine_trap_env(tmp_path / "imported", MSPN_HOME=str(tmp_path / "home"))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": [280.0, 40.0, 220.0, 380.0], "score": 1.0}]))
    out = tmp_path / "out.json"
    proc = run_mspn(
        "keypoints", COCO_SAMPLE / "000000000785.jpg", "--boxes", boxes, "--weights", mspn_weights,
        "--json", out, env=env,
    )
    marker = tmp_path / "imported"
    assert not marker.exists(), marker.read_text()
    assert proc.returncode == 0, proc.stderr
    assert "building mspn_4stage's ONNX graph from its weights (once" in " ".join(proc.stderr.split())
    records = json.loads(out.read_text())
    assert len(records) == 1 and len(records[0]["keypoints"]) == 17 * 3
    graphs = list((tmp_path / "home" / "graphs").glob("mspn_4stage-*.onnx"))
    assert len(graphs) == 1
    seal = json.loads(graphs[0].with_name(graphs[0].name + ".seal.json").read_text())
    assert seal["source"] == "template"


@pytest.fixture(scope="module")
def detector_state(detector_weights):
    from mspn_cli.weights import load_checkpoint

    return load_checkpoint(detector_weights)


def _write(path: Path, state) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(dict(state), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def test_cold_detect_with_a_misshapen_key_exits_4_naming_it(tmp_path, detector_state):
    state = dict(detector_state)
    key = next(k for k, v in state.items() if np.asarray(v).ndim == 4)
    state[key] = np.zeros((3,) + np.asarray(state[key]).shape[1:], np.float32)
    weights = _write(tmp_path / "misshapen.pkl", state)
    env = megengine_trap_env(tmp_path / "imported", MSPN_HOME=str(tmp_path / "home"))
    proc = run_mspn("detect", COCO_SAMPLE / "000000000785.jpg", "--detector-weights", weights, env=env)
    assert_clean_error(proc, code=4)
    assert f"1 wrong shape ({key}: file (3," in proc.stderr
    assert not (tmp_path / "imported").exists()
    assert not list((tmp_path / "home" / "graphs").glob("*.onnx"))


def test_cold_detect_with_a_missing_and_an_extra_key_exits_4_naming_them(tmp_path, detector_state):
    state = dict(detector_state)
    missing = list(state)[-1]
    state["head.extra.weight"] = state.pop(missing)
    weights = _write(tmp_path / "renamed.pkl", state)
    proc = run_mspn("detect", COCO_SAMPLE / "000000000785.jpg", "--detector-weights", weights,
                    env=megengine_trap_env(tmp_path / "imported", MSPN_HOME=str(tmp_path / "home")))
    assert_clean_error(proc, code=4)
    assert f"1 missing key ({missing})" in proc.stderr
    assert "1 unexpected (head.extra.weight)" in proc.stderr
    assert not (tmp_path / "imported").exists()


def test_cold_detect_never_imports_megengine(tmp_path, detector_weights):
    env = megengine_trap_env(tmp_path / "imported", MSPN_HOME=str(tmp_path / "home"))
    proc = run_mspn("detect", COCO_SAMPLE / "000000000785.jpg", "--detector-weights", detector_weights, env=env)
    assert not (tmp_path / "imported").exists(), (tmp_path / "imported").read_text()
    assert proc.returncode == 0, proc.stderr
    assert f"building {DETECTOR}'s ONNX graph from its weights (once" in " ".join(proc.stderr.split())
