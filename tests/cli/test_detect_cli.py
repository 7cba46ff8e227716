"""End-to-end runs of `mspn detect` and the full `mspn keypoints` pipeline (detector + MSPN)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conftest import IMAGES, WEIGHTS_CACHE, assert_clean_error, load_json, run_mspn

ALL_IMAGES = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png"))
FAST = ("--det-size", "256", "--backend", "onnxruntime")


def test_detect_all_vendored_images_gives_loadable_coco_results(tmp_path, eager_detector_weights):
    out = tmp_path / "dets.json"
    proc = run_mspn("detect", *ALL_IMAGES, "--detector-weights", eager_detector_weights, "-o", out,
                    "--max-persons", "3", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    dets = load_json(out)
    assert {d["file_name"] for d in dets} <= {p.name for p in ALL_IMAGES}
    for det in dets:
        assert det["category_id"] == 1 and isinstance(det["image_id"], int)
        x, y, w, h = det["bbox"]
        assert w > 0 and h > 0 and det["score"] == 1.0
    per_image = {}
    for det in dets:
        per_image[det["file_name"]] = per_image.get(det["file_name"], 0) + 1
    assert per_image == {p.name: 3 for p in ALL_IMAGES}
    # pycocotools accepts it as detection results for these images.
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i + 1, "file_name": p.name, "width": 10, "height": 10} for i, p in enumerate(ALL_IMAGES)],
        "annotations": [],
        "categories": [{"id": 1, "name": "person"}],
    }
    gt.createIndex()
    results = gt.loadRes([{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in dets])
    assert len(results.getAnnIds()) == len(dets)


def test_detect_output_feeds_keypoints_boxes(tmp_path, eager_detector_weights, mspn_weights):
    image = IMAGES / "pilots_three_people_rgba.png"
    dets = tmp_path / "dets.json"
    proc = run_mspn("detect", image, "--detector-weights", eager_detector_weights, "-o", dets, "--max-persons", "2", *FAST)
    assert proc.returncode == 0, proc.stderr
    boxes = load_json(dets)
    assert len(boxes) == 2
    proc = run_mspn("keypoints", image, "--boxes", dets, "--weights", mspn_weights, "--json", "-", "--no-flip",
                    "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert len(records) == 2
    np.testing.assert_allclose([r["det_bbox"] for r in records], [b["bbox"] for b in boxes], atol=0.02)


def test_headline_command_keypoints_without_boxes(tmp_path, eager_detector_weights, mspn_weights):
    out = tmp_path / "vis_skeleton.jpg"
    proc = run_mspn("keypoints", IMAGES / "pilots_three_people_rgba.png", "-o", out, "--json", tmp_path / "k.json",
                    "--detector-weights", eager_detector_weights, "--weights", mspn_weights, "--max-persons", "2", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "done: 1 image(s), 2 persons, 0 failed" in proc.stderr
    assert cv2.imread(str(out)).shape == (471, 600, 3)
    records = load_json(tmp_path / "k.json")
    assert len(records) == 2 and all(len(r["keypoints"]) == 51 for r in records)


def test_no_person_image_is_empty_and_exit_zero(tmp_path, blind_detector_weights, mspn_weights, large_image):
    large = large_image
    proc = run_mspn("detect", large, "--detector-weights", blind_detector_weights, "-o", "-", "--box-thr", "0", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    proc = run_mspn("keypoints", large, "--detector-weights", blind_detector_weights, "--weights", mspn_weights,
                    "--json", "-", "-o", tmp_path / "vis.jpg", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    assert cv2.imread(str(tmp_path / "vis.jpg")).shape == (2638, 1853, 3)


def _make_video(path, frames=4):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (320, 240))
    sources = [IMAGES / "pilots_three_people_rgba.png", IMAGES / "cameraman_grayscale.png"]
    for index in range(frames):
        image = cv2.imread(str(sources[index % 2]), cv2.IMREAD_COLOR)
        writer.write(cv2.resize(image, (320, 240)))
    writer.release()
    return path


def test_video_is_annotated_frame_by_frame(tmp_path, eager_detector_weights, mspn_weights):
    clip = _make_video(tmp_path / "clip.mp4")
    out, js = tmp_path / "out.mp4", tmp_path / "out.json"
    # The eager detector finds a person in every frame, so which frames have records shows --every alone.
    proc = run_mspn("keypoints", clip, "-o", out, "--json", js, "--every", "2", "--detector-weights", eager_detector_weights,
                    "--weights", mspn_weights, "--max-persons", "1", "--no-flip", "--det-size", "256",
                    "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    records = load_json(js)
    assert sorted(r["frame_index"] for r in records) == [0, 2]
    capture = cv2.VideoCapture(str(out))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_bad_video_and_det_size(tmp_path, detector_weights, mspn_weights):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    proc = run_mspn("keypoints", corrupt, "-o", tmp_path / "out.mp4", "--detector-weights", detector_weights,
                    "--weights", mspn_weights)
    assert_clean_error(proc, code=3)
    assert not (tmp_path / "out.mp4").exists()
    for bad in ("10", "900,500", "abc"):
        proc = run_mspn("detect", IMAGES / "cameraman_grayscale.png", "--det-size", bad,
                        "--detector-weights", detector_weights)
        assert_clean_error(proc, code=2)
    # A missing output folder is created (README); a file where the folder should be is refused before work.
    (tmp_path / "afile").write_text("x")
    proc = run_mspn("detect", IMAGES / "cameraman_grayscale.png", "-o", tmp_path / "afile" / "d.json",
                    "--detector-weights", detector_weights)
    assert_clean_error(proc, code=2)
    assert (tmp_path / "afile").read_text() == "x"


def test_official_weights_offline_say_where_to_put_them(tmp_path):
    proc = run_mspn("detect", IMAGES / "cameraman_grayscale.png")
    assert_clean_error(proc, code=4)
    assert "retinanet_res50_coco_3x_800size_39dot3_8eaec532.pkl" in proc.stderr


