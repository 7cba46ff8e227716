"""Given `--boxes` (issue 15, items 7, 9, 13) and config values (item 10) through the real CLI.

* An image the boxes file does not mention has zero persons (as `detect` leaves it), said
  once in the summary; before, "no boxes for this image" failed it (exit 3, or 1 in a batch).
* `--max-persons` applies to given boxes (it was ignored).
* A box entirely outside its image is dropped and reported; the image's other boxes are kept
  (before, one such box failed the whole image).
* A config value out of range exits 5 naming the key, before any network is built or exported.

Random-weight MSPN keypoints are never compared with a threshold: only counts, box scores
and file names are checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, run_mspn

from mspn_cli.config import DEFAULT_DETECTOR_CONFIG, DEFAULT_POSE_CONFIG

GOOD_IMAGE = COCO_SAMPLE / "000000000785.jpg"  # 640 x 425
FAST = ["--backend", "onnxruntime", "--no-flip", "--batch-size", "2"]


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_unmatched_images_max_persons_and_outside_boxes(tmp_path, mspn_weights):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / GOOD_IMAGE.name).write_bytes(GOOD_IMAGE.read_bytes())
    (folder / "000000000001.jpg").write_bytes(GOOD_IMAGE.read_bytes())  # not in the boxes file
    boxes = _write(tmp_path / "boxes.json", [
        {"image_id": 785, "category_id": 1, "bbox": [5000, 5000, 100, 100], "score": 1.0},  # outside the image
        {"image_id": 785, "category_id": 1, "bbox": [280.8, 44.7, 218.7, 346.7], "score": 0.9},
        {"image_id": 785, "category_id": 1, "bbox": [10, 10, 100, 200], "score": 0.5},
        {"image_id": 785, "category_id": 1, "bbox": [400, 50, 120, 300], "score": 0.7},
    ])
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", folder, "--boxes", boxes, "--json", out, "--max-persons", "2",
                    "--weights", mspn_weights, *FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr
    records = load_json(out)
    assert [r["image_id"] for r in records] == [785, 785]
    assert sorted(r["box_score"] for r in records) == [0.699999988079071, 0.8999999761581421]  # the 2 best inside
    assert "done: 2 image(s), 2 persons, 0 failed" in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert any("1 image(s) have no entry" in line and "no persons" in line for line in warnings), proc.stderr
    assert any("dropped 1 box(es)" in line and "outside" in line and GOOD_IMAGE.name in line for line in warnings), proc.stderr


def test_detect_then_keypoints_on_an_image_without_persons(tmp_path, mspn_weights, blind_detector_weights):
    image = tmp_path / "empty_street.jpg"
    image.write_bytes(GOOD_IMAGE.read_bytes())
    dets = tmp_path / "dets.json"
    proc = run_mspn("detect", image, "-o", dets, "--detector-weights", blind_detector_weights, "--backend", "onnxruntime",
                    "--det-size", "64", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert load_json(dets) == []
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", image, "--boxes", dets, "--json", out, "--weights", mspn_weights, *FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert load_json(out) == []
    assert "done: 1 image(s), 0 persons, 0 failed" in proc.stderr


def _edited_config(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text
    path = tmp_path / source.name
    path.write_text(text.replace(old, new, 1))
    return path


def test_keypoints_with_an_out_of_range_config_exits_5_before_building_anything(tmp_path, mspn_weights):
    boxes = _write(tmp_path / "boxes.json", [{"image_id": 785, "category_id": 1, "bbox": [280.8, 44.7, 218.7, 346.7], "score": 1.0}])
    home = tmp_path / "home"
    for old, new, key in (("heat_range = 255.0", "heat_range = 0.0", "decoder.heat_range"),
                          ("input_size = [256, 192]", "input_size = [0, 192]", "model.input_size")):
        config = _edited_config(tmp_path, DEFAULT_POSE_CONFIG, old, new)
        # --backend auto would export the network to the graph cache first: nothing may land there.
        proc = run_mspn("keypoints", GOOD_IMAGE, "--boxes", boxes, "--json", tmp_path / "out.json", "--config", config,
                        "--weights", mspn_weights, "--backend", "auto", env={"MSPN_HOME": str(home)}, timeout=600)
        assert_clean_error(proc, 5)
        assert key in proc.stderr
        assert not (tmp_path / "out.json").exists()
        assert not home.exists() or not any(home.rglob("*")), sorted(map(str, home.rglob("*")))


def test_detect_with_an_out_of_range_config_exits_5(tmp_path):
    config = _edited_config(tmp_path, DEFAULT_DETECTOR_CONFIG, "nms_thr = 0.5", "nms_thr = 5")
    proc = run_mspn("detect", GOOD_IMAGE, "-o", tmp_path / "dets.json", "--detector-config", config)
    assert_clean_error(proc, 5)
    assert "postprocess.nms_thr" in proc.stderr
