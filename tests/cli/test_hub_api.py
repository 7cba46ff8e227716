"""The seed's Python API (`mspn_cli.hub.load`, `mspn_cli.KeypointEvaluator`) against the real `mspn keypoints`.

hub.load finds the official weights where the CLI does, in $MSPN_HOME/weights/<official
file name>; the tests put the seeded random files there (symlinks) and share the
suite's graph cache, so nothing is downloaded or exported twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np

import mspn_cli
from mspn_cli.config import load_detector_config, load_pose_config
from mspn_cli.detection.detector import PersonDetector
from tests.conftest import COCO_SAMPLE, REPO, WEIGHTS_CACHE, load_json, run_mspn

IMAGE = COCO_SAMPLE / "000000000785.jpg"
# Boxes whose corners are exact in float32 either way ([x, y, w, h] in the file, x1 y1 x2 y2 in Python).
BOXES_XYWH = [[280.75, 44.75, 218.5, 346.75, 0.875], [38.0, 110.0, 174.5, 174.5, 0.75]]


def _hub_home(root: Path, mspn_weights: Path, detector_weights: Path) -> Path:
    """A $MSPN_HOME whose cache holds the given files under the official names, sharing the suite's graphs."""
    home = root / "mspn_home"
    (home / "weights").mkdir(parents=True)
    (home / "weights" / load_pose_config().weights.filename).symlink_to(mspn_weights)
    (home / "weights" / load_detector_config().weights.filename).symlink_to(detector_weights)
    shared_graphs = WEIGHTS_CACHE / "home" / "graphs"
    shared_graphs.mkdir(parents=True, exist_ok=True)
    (home / "graphs").symlink_to(shared_graphs, target_is_directory=True)
    return home


def test_predict_equals_mspn_keypoints_with_the_same_boxes(tmp_path, mspn_weights, monkeypatch):
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": b[:4], "score": b[4]} for b in BOXES_XYWH]))
    out = tmp_path / "cli.json"
    run_mspn("keypoints", IMAGE, "--boxes", boxes_file, "--weights", mspn_weights, "--json", out, "-q", check=True)
    records = load_json(out)

    monkeypatch.setenv("MSPN_HOME", str(WEIGHTS_CACHE / "home"))  # where run_mspn's child cached its graph
    model = mspn_cli.hub.load("megengine/models", "mspn_4stage", pretrained=True, weights=str(mspn_weights))
    model.eval()
    evaluator = mspn_cli.KeypointEvaluator(_NoDetector(), model)
    boxes = np.float32([[x, y, x + w, y + h, s] for x, y, w, h, s in BOXES_XYWH])
    all_keypoints = evaluator.predict(cv2.imread(str(IMAGE)), boxes)

    assert len(all_keypoints) == len(records) == 2
    for keypoints, record, box in zip(all_keypoints, records, boxes):
        assert keypoints.shape == (17, 3) and keypoints.dtype == np.float32
        assert record["keypoints"][0::3] == [round(float(v), 3) for v in keypoints[:, 0]]
        assert record["keypoints"][1::3] == [round(float(v), 3) for v in keypoints[:, 1]]
        assert record["keypoint_scores"] == [round(float(v), 5) for v in keypoints[:, 2]]
        # The instance score is written unrounded: mean keypoint score x box score, in float32 as the CLI computes it.
        assert record["score"] == float(np.float32(keypoints[:, 2].mean()) * np.float32(box[4]))


class _NoDetector(PersonDetector):
    """predict needs no detector: none is loaded."""

    def __init__(self):
        pass


SEED_SNIPPET = """
import cv2
import mspn_cli as megengine                 # was: import megengine
from mspn_cli import hub as Det              # was: import official.vision.detection.models as Det
import mspn_cli as models_api                # was: import official.vision.keypoints.models as models_api

image = cv2.imread({image!r})
det_func = keypoint_func = None              # the official script's traced functions: ignored

model = megengine.hub.load("megengine/models", "mspn_4stage", pretrained=True)
model.eval()
detector = Det.retinanet_res50_1x_800size(pretrained=True)
evaluator = models_api.KeypointEvaluator(detector, det_func, model, keypoint_func)
person_boxes = evaluator.detect_persons(image)
all_keypoints = evaluator.predict(image, person_boxes)
canvas = evaluator.vis_skeletons(image, all_keypoints)
cv2.imwrite("vis_skeleton.jpg", canvas)
print(len(person_boxes), len(all_keypoints))
"""


def test_the_seed_snippet_runs_with_only_its_imports_changed(tmp_path, mspn_weights, blind_detector_weights):
    home = _hub_home(tmp_path, mspn_weights, blind_detector_weights)
    env = {**os.environ, "MSPN_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SEED_SNIPPET.format(image=str(IMAGE)))],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "0"]  # the blind detector finds nobody, whatever the CPU
    written = cv2.imread(str(tmp_path / "vis_skeleton.jpg"))
    assert written is not None and written.shape == cv2.imread(str(IMAGE)).shape
    assert not any(p.is_file() and not p.is_symlink() for p in (home / "weights").iterdir())  # nothing downloaded
