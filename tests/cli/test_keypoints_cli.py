"""End-to-end runs of the real `mspn keypoints` on the vendored images (tests/data), with given boxes."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from tests.conftest import COCO_SAMPLE, IMAGES, assert_clean_error, load_json, run_mspn

DETS = COCO_SAMPLE / "person_dets_sample.json"


def _check_record(record):
    assert record["category_id"] == 1
    assert isinstance(record["image_id"], int)
    assert len(record["keypoints"]) == 51
    assert all(isinstance(v, (int, float)) for v in record["keypoints"])
    assert record["keypoints"][2::3] == [1.0] * 17  # visibility 1, as the official test writes
    assert len(record["keypoint_scores"]) == 17
    assert len(record["det_bbox"]) == 4
    mean_kpt = float(np.mean(record["keypoint_scores"]))
    assert record["score"] == pytest.approx(mean_kpt * record["box_score"], rel=1e-3)


def test_keypoints_with_boxes_writes_json_and_skeleton(tmp_path, mspn_weights):
    image = COCO_SAMPLE / "000000000785.jpg"
    vis, out = tmp_path / "vis.jpg", tmp_path / "out.json"
    proc = run_mspn("keypoints", image, "--boxes", DETS, "--weights", mspn_weights, "-o", vis, "--json", out,
                    "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "cuda" not in proc.stderr.lower()
    records = load_json(out)
    expected = [d for d in load_json(DETS) if d["image_id"] == 785]
    assert len(records) == len(expected) == 1
    _check_record(records[0])
    assert records[0]["image_id"] == 785 and records[0]["file_name"] == "000000000785.jpg"
    np.testing.assert_allclose(records[0]["det_bbox"], expected[0]["bbox"], atol=0.01)
    drawn, original = cv2.imread(str(vis)), cv2.imread(str(image))
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 50  # something was drawn


def test_batch_of_real_images_by_file_name_with_jsonl_and_output_folder(tmp_path, mspn_weights):
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["cameraman_grayscale.png", "pilots_three_people_rgba.png", "woman_with_dog_portrait.jpg"]
    for name in names:
        shutil.copy(IMAGES / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    boxes = [
        {"file_name": "cameraman_grayscale.png", "bbox": [120, 40, 250, 460], "score": 0.9, "category_id": 1},
        {"file_name": "pilots_three_people_rgba.png", "bbox": [20, 60, 180, 400], "score": 0.8, "category_id": 1},
        {"file_name": "pilots_three_people_rgba.png", "bbox": [210, 50, 180, 400], "score": 0.7, "category_id": 1},
        {"file_name": "woman_with_dog_portrait.jpg", "bbox": [300, 100, 250, 800], "score": 0.95, "category_id": 1},
        {"file_name": "broken.jpg", "bbox": [0, 0, 10, 10], "score": 0.95, "category_id": 1},
    ]
    dets = tmp_path / "boxes.json"
    dets.write_text(json.dumps(boxes))
    out_dir = tmp_path / "vis"
    proc = run_mspn("keypoints", folder, "--boxes", dets, "--weights", mspn_weights, "--no-flip", "--jsonl",
                    "-o", out_dir, "--batch-size", "3", "--backend", "onnxruntime")
    # One bad file: the others are processed, the bad one reported once at the end, exit 1.
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file_name"] for line in lines] == sorted(names)
    counts = {line["file_name"]: len(line["instances"]) for line in lines}
    assert counts == {"cameraman_grayscale.png": 1, "pilots_three_people_rgba.png": 2, "woman_with_dog_portrait.jpg": 1}
    for line in lines:
        for record in line["instances"]:
            _check_record(record)
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == sorted(f"{n.rsplit('.', 1)[0]}_pose.jpg" for n in names)


def test_zero_persons_is_a_normal_result(tmp_path, mspn_weights):
    dets = tmp_path / "low.json"
    dets.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": [1, 1, 50, 50], "score": 0.1}]))
    proc = run_mspn("keypoints", COCO_SAMPLE / "000000000785.jpg", "--boxes", dets, "--box-thr", "0.5",
                    "--weights", mspn_weights, "--json", "-", "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_existing_output_is_not_overwritten(tmp_path, mspn_weights):
    out = tmp_path / "out.json"
    out.write_text("precious")
    proc = run_mspn("keypoints", COCO_SAMPLE / "000000000785.jpg", "--boxes", DETS, "--weights", mspn_weights,
                    "--json", out)
    assert_clean_error(proc)
    assert "--overwrite" in proc.stderr
    assert out.read_text() == "precious"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "expected a JSON list"),
        ('[{"image_id": 785, "bbox": [1, 2, 3]}]', "bbox must be 4"),
        ('[{"image_id": 785, "bbox": [1, 2, -3, 4]}]', "negative width or height"),
        ('[{"image_id": "785", "bbox": [1, 2, 3, 4]}]', "image_id must be an integer"),
    ],
)
def test_malformed_boxes_file_is_one_clean_error(tmp_path, content, message):
    dets = tmp_path / "bad.json"
    dets.write_text(content)
    proc = run_mspn("keypoints", COCO_SAMPLE / "000000000785.jpg", "--boxes", dets, "--json", tmp_path / "o.json")
    assert_clean_error(proc, code=3)
    assert message in proc.stderr
    assert not (tmp_path / "o.json").exists()


def test_missing_input_and_unmatched_image(tmp_path, mspn_weights):
    proc = run_mspn("keypoints", tmp_path / "nope.jpg", "--boxes", DETS, "--weights", mspn_weights, "--json", "-")
    assert_clean_error(proc, code=3)
    assert "nope.jpg" in proc.stderr
    # An image the boxes file does not mention has no persons (as `mspn detect` writes no
    # entry for an image without persons); the summary says so and how matching works.
    proc = run_mspn("keypoints", IMAGES / "cyclists_crowd_usgov.jpg", "--boxes", DETS, "--weights", mspn_weights,
                    "--json", "-", "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    assert "no entry in" in proc.stderr and "no persons" in proc.stderr and "file_name" in proc.stderr


def test_empty_folder_and_foreign_weights(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_mspn("keypoints", empty, "--boxes", DETS)
    assert_clean_error(proc, code=3)
    assert "no images" in proc.stderr
    foreign = tmp_path / "foreign.pkl"
    import pickle

    foreign.write_bytes(pickle.dumps({"fc.weight": np.zeros((3, 3), np.float32)}))
    proc = run_mspn("keypoints", COCO_SAMPLE / "000000000785.jpg", "--boxes", DETS, "--weights", foreign, "--json", "-")
    assert_clean_error(proc, code=4)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"head.0.weight": np.zeros((64, 3, 3, 3), np.float32)})[:50])
    proc = run_mspn("keypoints", COCO_SAMPLE / "000000000785.jpg", "--boxes", DETS, "--weights", truncated, "--json", "-")
    assert_clean_error(proc, code=4)


def test_box_outside_image_is_dropped_and_reported(tmp_path, mspn_weights):
    """One box outside the image is dropped and reported; the image's other boxes are kept."""
    dets = tmp_path / "outside.json"
    dets.write_text(json.dumps([
        {"image_id": 785, "category_id": 1, "bbox": [5000, 5000, 50, 50], "score": 0.9},
        {"image_id": 785, "category_id": 1, "bbox": [280, 44, 218, 346], "score": 0.8},
    ]))
    proc = run_mspn("keypoints", COCO_SAMPLE / "000000000785.jpg", "--boxes", dets, "--weights", mspn_weights,
                    "--json", "-", "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    assert "dropped 1 box(es) lying entirely outside" in proc.stderr
    records = json.loads(proc.stdout)
    assert [r["box_score"] for r in records] == [pytest.approx(0.8)]
