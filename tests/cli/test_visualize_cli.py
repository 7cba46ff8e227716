"""`mspn visualize` run as a user would: ground-truth records drawn on a COCO image."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mspn_cli.skeleton import NUM_KEYPOINTS
from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, run_mspn

SKIER = COCO_SAMPLE / "000000000785.jpg"
SKIER_ID = 785
BASEBALL = COCO_SAMPLE / "000000196141.jpg"


# --------------------------------------------------------------------------- CLI


def ground_truth_results(image_id: int) -> list:
    """COCO annotations of one image as result records (score 1; joint score 2, full confidence, if labelled, else 1)."""
    annotations = load_json(COCO_SAMPLE / "person_keypoints_sample.json")["annotations"]
    records = []
    for ann in annotations:
        if ann["image_id"] != image_id or ann["num_keypoints"] == 0:
            continue
        kp = ann["keypoints"]
        records.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "keypoints": [float(v) if i % 3 != 2 else 1.0 for i, v in enumerate(kp)],
                "score": 1.0,
                "bbox": ann["bbox"],
                "keypoint_scores": [2.0 if kp[3 * j + 2] > 0 else 1.0 for j in range(NUM_KEYPOINTS)],
            }
        )
    return records


@pytest.fixture()
def skier_results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(ground_truth_results(SKIER_ID)))
    return path


def test_cli_draws_ground_truth_on_coco_image(tmp_path, skier_results):
    out = tmp_path / "skier.jpg"
    proc = run_mspn("visualize", SKIER, "--keypoints", skier_results, "-o", out, check=True)

    assert proc.stdout == ""  # stdout stays clean; the report goes to stderr
    assert str(out) in proc.stderr
    drawn = cv2.imread(str(out))
    original = cv2.imread(str(SKIER))
    assert drawn is not None and drawn.shape == original.shape
    # Differs well beyond JPEG re-encoding noise, around the annotated joints.
    diff = np.abs(drawn.astype(int) - original.astype(int)).max(axis=2)
    joints = np.array(ground_truth_results(SKIER_ID)[0]["keypoints"]).reshape(-1, 3)[:, :2].astype(int)
    assert sum(diff[y, x] > 40 for x, y in joints) >= 15
    # No temporary files left beside the output.
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "skier.jpg"}


def test_cli_default_output_name_and_matching_by_file_name(tmp_path):
    # Records carrying file_name match by basename even when image_id is unrelated.
    records = ground_truth_results(196141)
    for record in records:
        record["image_id"] = 7
        record["file_name"] = "some/folder/000000196141.jpg"
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))

    # run_mspn has no working-directory option; the default output lands in the cwd.
    proc = subprocess.run(
        [sys.executable, "-m", "mspn_cli", "visualize", str(BASEBALL), "-k", str(results)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    assert (tmp_path / "000000196141_vis.jpg").exists()


def test_cli_refuses_to_overwrite(tmp_path, skier_results):
    out = tmp_path / "skier.png"
    out.write_bytes(b"keep me")
    proc = run_mspn("visualize", SKIER, "-k", skier_results, "-o", out)
    assert_clean_error(proc)
    assert "--overwrite" in proc.stderr
    assert out.read_bytes() == b"keep me"

    run_mspn("visualize", SKIER, "-k", skier_results, "-o", out, "--overwrite", check=True)
    assert cv2.imread(str(out)).shape == cv2.imread(str(SKIER)).shape


def test_cli_malformed_json_is_a_clean_error(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 785, "keypoints": [1, 2,')
    proc = run_mspn("visualize", SKIER, "-k", broken, "-o", tmp_path / "out.jpg")
    assert_clean_error(proc, code=3)
    assert "not valid JSON" in proc.stderr
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"annotations": []}, "JSON list"),
        ([{"image_id": SKIER_ID, "keypoints": [1.0] * 34, "score": 1.0}], "expected 51"),
    ],
)
def test_cli_wrong_shape_results_are_clean_errors(tmp_path, content, message):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(content))
    proc = run_mspn("visualize", SKIER, "-k", results, "-o", tmp_path / "out.jpg")
    assert_clean_error(proc, code=3)
    assert message in proc.stderr


def test_cli_missing_image_is_a_clean_error(tmp_path, skier_results):
    proc = run_mspn("visualize", tmp_path / "nope.jpg", "-k", skier_results, "-o", tmp_path / "out.jpg")
    assert_clean_error(proc, code=3)
    assert "nope.jpg" in proc.stderr


def test_cli_missing_output_folder_is_created(tmp_path, skier_results):
    proc = run_mspn("visualize", SKIER, "-k", skier_results, "-o", tmp_path / "missing" / "sub" / "out.jpg")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "missing" / "sub" / "out.jpg").is_file()


def test_cli_no_matching_records_warns_and_writes_plain_image(tmp_path, skier_results):
    out = tmp_path / "out.png"
    proc = run_mspn("visualize", SKIER, "-k", skier_results, "-o", out, "--image-id", 1, check=True)
    assert "warning" in proc.stderr and "785" in proc.stderr
    assert np.array_equal(cv2.imread(str(out)), cv2.imread(str(SKIER)))
