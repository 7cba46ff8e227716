"""Partial downloads are bad inputs for `keypoints`, `detect` and `visualize` (issue 15, item 2),
and the decoders' own lines never reach the user's stderr; unreadable formats in a folder
and multi-page TIFFs are said in the summary (item 13).

Before, a JPEG cut to a third or two thirds of its bytes was processed with exit 0 (OpenCV
fills the missing rows), and a cut PNG printed "libpng error: ..." before our error line.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conftest import COCO_SAMPLE, load_json, run_mspn

FAST = ["--backend", "onnxruntime", "--no-flip", "--batch-size", "1"]
DETECT_FAST = ["--backend", "onnxruntime", "--det-size", "64"]
PHOTOS = sorted(COCO_SAMPLE.glob("*.jpg"), key=lambda p: p.stat().st_size)


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


@pytest.fixture()
def mixed_folder(tmp_path) -> dict:
    """Two good photos, and a JPEG and a PNG each cut to 1/3 and 2/3, with a box for each by file name."""
    folder = tmp_path / "images"
    folder.mkdir()
    jpeg = PHOTOS[0].read_bytes()
    png = cv2.imencode(".png", cv2.imread(str(PHOTOS[1])))[1].tobytes()
    files = {
        "good_a.jpg": jpeg, "good_b.png": png,
        "jpeg_third.jpg": _cut(jpeg, 1 / 3), "jpeg_two_thirds.jpg": _cut(jpeg, 2 / 3),
        "png_third.png": _cut(png, 1 / 3), "png_two_thirds.png": _cut(png, 2 / 3),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"file_name": name, "category_id": 1, "bbox": [20, 20, 100, 150], "score": 1.0}
                                 for name in files]))
    return {"folder": folder, "boxes": boxes, "bad": sorted(n for n in files if not n.startswith("good"))}


def _error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _assert_no_decoder_chatter(stderr: str) -> None:
    for phrase in ("libpng", "[ERROR:", "[ WARN:", "Corrupt JPEG", "Premature end"):
        assert phrase not in stderr, stderr


def test_keypoints_reports_each_truncated_file_once(tmp_path, mixed_folder, mspn_weights):
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", mixed_folder["folder"], "--boxes", mixed_folder["boxes"], "--json", out,
                    "--weights", mspn_weights, *FAST, timeout=600)
    assert proc.returncode == 1, proc.stderr  # partial: the good images are processed
    assert "Traceback" not in proc.stderr
    _assert_no_decoder_chatter(proc.stderr)
    errors = _error_lines(proc.stderr)
    assert len(errors) == len(mixed_folder["bad"]), proc.stderr
    for name in mixed_folder["bad"]:
        (line,) = [e for e in errors if name in e]
        assert "truncated" in line
    assert sorted(r["file_name"] for r in load_json(out)) == ["good_a.jpg", "good_b.png"]


def test_keypoints_allow_truncated_uses_cut_jpegs(tmp_path, mixed_folder, mspn_weights):
    folder = mixed_folder["folder"]
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", folder / "jpeg_third.jpg", folder / "jpeg_two_thirds.jpg", "--boxes", mixed_folder["boxes"],
                    "--json", out, "--allow-truncated", "--weights", mspn_weights, *FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["file_name"] for r in load_json(out)) == ["jpeg_third.jpg", "jpeg_two_thirds.jpg"]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:") and "truncated" in line]
    assert len(warnings) == 2, proc.stderr  # said, not silent


def test_detect_reports_truncated_files(tmp_path, mixed_folder, blind_detector_weights):
    out = tmp_path / "dets.json"
    proc = run_mspn("detect", mixed_folder["folder"], "-o", out, "--detector-weights", blind_detector_weights, *DETECT_FAST, timeout=600)
    assert proc.returncode == 1, proc.stderr
    _assert_no_decoder_chatter(proc.stderr)
    errors = _error_lines(proc.stderr)
    assert sorted(name for name in mixed_folder["bad"] for e in errors if name in e and "truncated" in e) == mixed_folder["bad"]
    assert load_json(out) == []  # the blind detector finds nobody in the two good images


@pytest.mark.parametrize("fraction", [1 / 3, 2 / 3])
@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_visualize_refuses_a_truncated_image(tmp_path, fraction, extension):
    image = tmp_path / f"cut{extension}"
    data = PHOTOS[0].read_bytes() if extension == ".jpg" else cv2.imencode(".png", cv2.imread(str(PHOTOS[0])))[1].tobytes()
    image.write_bytes(_cut(data, fraction))
    results = tmp_path / "results.json"
    results.write_text("[]")
    proc = run_mspn("visualize", image, "--keypoints", results, "-o", tmp_path / "out.jpg")
    assert proc.returncode == 3, proc.stderr
    assert len(_error_lines(proc.stderr)) == 1 and "truncated" in proc.stderr
    _assert_no_decoder_chatter(proc.stderr)
    assert not (tmp_path / "out.jpg").exists()


def test_skipped_formats_multi_page_tiff_and_icc_chatter_are_reported(tmp_path, blind_detector_weights):
    from tests.unit.test_image_checks import png_with_bad_icc_profile

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(PHOTOS[0].read_bytes())
    (folder / "animation.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / "profile.png").write_bytes(png_with_bad_icc_profile())
    pages = [np.full((64, 48, 3), value, np.uint8) for value in (30, 200)]
    assert cv2.imwritemulti(str(folder / "scan.tiff"), pages)
    proc = run_mspn("detect", folder, "-o", tmp_path / "dets.json", "--detector-weights", blind_detector_weights,
                    *DETECT_FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "done: 3 image(s)" in proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if "skipped 2 file(s)" in line]
    assert len(skipped) == 1 and "animation.gif" in skipped[0] and "phone.heic" in skipped[0], proc.stderr
    assert "scan.tiff: a multi-page TIFF (2 pages); only page 1 is used" in proc.stderr
    _assert_no_decoder_chatter(proc.stderr)


def test_a_folder_of_only_unreadable_formats_says_which(tmp_path):
    folder = tmp_path / "gifs"
    folder.mkdir()
    (folder / "a.gif").write_bytes(b"GIF89a")
    proc = run_mspn("detect", folder, "-o", tmp_path / "dets.json")
    assert proc.returncode == 3, proc.stderr
    assert "no images found" in proc.stderr and ".gif" in proc.stderr
