"""Nothing clobbered, nothing claimed that did not happen (issue 15, items 3, 4, 6 and 12).

* Same file names in two folders with `-o DIR`: the annotated images mirror the folders
  (before, the second overwrote the first), and records carry the input's path.
* A `--boxes` file whose file_name is ambiguous for the given inputs is refused.
* No output may be an input, with or without `--overwrite` (exit 2, input unchanged).
* An existing output without `--overwrite` exits 2; `detect --vis` no longer replaces images.
* `-o out.avi` / `-o vis.gif` for an image input is refused instead of creating a folder.
* When every input fails: no `-o` folder, no JSON file, no "wrote N instance(s)" line.

Cases checked before any network is built cost well under a second of work each.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, run_mspn

GOOD_IMAGE = COCO_SAMPLE / "000000000785.jpg"
GOOD_BOX = [280.79, 44.73, 218.7, 346.68]
FAST = ["--backend", "onnxruntime", "--no-flip", "--batch-size", "1"]
DETECT_FAST = ["--backend", "onnxruntime", "--det-size", "64"]


def _boxes(path: Path, entries) -> Path:
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture()
def work(tmp_path):
    image = tmp_path / GOOD_IMAGE.name
    image.write_bytes(GOOD_IMAGE.read_bytes())
    boxes = _boxes(tmp_path / "boxes.json", [{"image_id": 785, "category_id": 1, "bbox": GOOD_BOX, "score": 1.0}])
    return {"dir": tmp_path, "image": image, "boxes": boxes}


# ----------------------------------------------------------------------------- collisions


def test_same_file_names_in_two_folders_get_mirrored_outputs_and_paths(tmp_path, mspn_weights):
    first, second = tmp_path / "cam1" / GOOD_IMAGE.name, tmp_path / "cam2" / GOOD_IMAGE.name
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(GOOD_IMAGE.read_bytes())
    cv2.imwrite(str(second), cv2.flip(cv2.imread(str(GOOD_IMAGE)), 1))  # another picture, same name
    boxes = _boxes(tmp_path / "boxes.json", [{"image_id": 785, "category_id": 1, "bbox": GOOD_BOX, "score": 1.0}])
    out, vis = tmp_path / "out.json", tmp_path / "vis"
    proc = run_mspn("keypoints", first.parent, second.parent, "--boxes", boxes, "--json", out, "-o", vis,
                    "--weights", mspn_weights, *FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr
    drawn = sorted(str(p.relative_to(vis)) for p in vis.rglob("*.jpg"))
    assert drawn == ["cam1/000000000785_pose.jpg", "cam2/000000000785_pose.jpg"]
    a, b = (cv2.imread(str(vis / name)) for name in drawn)
    assert (a != b).any()
    assert sorted(r["path"] for r in load_json(out)) == sorted([str(first), str(second)])


@pytest.mark.parametrize("command", ["keypoints"])
def test_ambiguous_file_name_in_boxes_is_refused(tmp_path, command):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo.jpg").write_bytes(GOOD_IMAGE.read_bytes())
    boxes = _boxes(tmp_path / "boxes.json", [{"file_name": "photo.jpg", "category_id": 1, "bbox": GOOD_BOX, "score": 1.0}])
    proc = run_mspn(command, tmp_path / "a", tmp_path / "b", "--boxes", boxes, "--json", tmp_path / "out.json")
    assert_clean_error(proc, 2)
    assert "photo.jpg" in proc.stderr
    assert not (tmp_path / "out.json").exists()


# ----------------------------------------------------------------------------- outputs onto inputs

ONTO_INPUT = {
    "keypoints-json-onto-image": lambda w: ["keypoints", w["image"], "--boxes", w["boxes"], "--json", w["image"]],
    "keypoints-json-onto-boxes": lambda w: ["keypoints", w["image"], "--boxes", w["boxes"], "--json", w["boxes"]],
    "keypoints-o-onto-image": lambda w: ["keypoints", w["image"], "--boxes", w["boxes"], "-o", w["image"]],
    "detect-json-onto-image": lambda w: ["detect", w["image"], "-o", w["image"]],
    "visualize-o-onto-image": lambda w: ["visualize", w["image"], "--keypoints", w["boxes"], "-o", w["image"]],
    "visualize-o-onto-results": lambda w: ["visualize", w["image"], "--keypoints", w["boxes"], "-o", w["boxes"]],
}


@pytest.mark.parametrize("make_args", ONTO_INPUT.values(), ids=ONTO_INPUT.keys())
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_no_output_may_replace_an_input(work, make_args, overwrite):
    kept = {path: path.read_bytes() for path in (work["image"], work["boxes"])}
    proc = run_mspn(*make_args(work), *(["--overwrite"] if overwrite else []))
    assert_clean_error(proc, 2)
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} was modified"


# ----------------------------------------------------------------------------- existing outputs


EXISTING = {
    "keypoints-json": (lambda w: ["keypoints", w["image"], "--boxes", w["boxes"], "--json", w["dir"] / "old.json"], "old.json"),
    "keypoints-o": (lambda w: ["keypoints", w["image"], "--boxes", w["boxes"], "-o", w["dir"] / "old.jpg"], "old.jpg"),
    "detect-o": (lambda w: ["detect", w["image"], "-o", w["dir"] / "old.json"], "old.json"),
    "detect-vis": (lambda w: ["detect", w["image"], "--vis", w["dir"] / "vis"], "vis/000000000785_dets.jpg"),
    "visualize-o": (lambda w: ["visualize", w["image"], "--keypoints", w["boxes"], "-o", w["dir"] / "old.jpg"], "old.jpg"),
}


@pytest.mark.parametrize("make_args,existing", EXISTING.values(), ids=EXISTING.keys())
def test_an_existing_output_is_a_usage_error_and_kept(work, make_args, existing):
    target = work["dir"] / existing
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"precious")
    proc = run_mspn(*make_args(work))
    assert_clean_error(proc, 2)
    assert "--overwrite" in proc.stderr
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["out.avi", "vis.gif", "out.mp4.partial"])
def test_image_output_with_a_non_image_extension_is_refused(work, name):
    proc = run_mspn("keypoints", work["image"], "--boxes", work["boxes"], "-o", work["dir"] / name)
    assert_clean_error(proc, 2)
    assert not (work["dir"] / name).exists()


def test_detect_vis_refuses_to_overwrite_drawn_images(work, blind_detector_weights):
    vis = work["dir"] / "vis"
    vis.mkdir()
    drawn = vis / "000000000785_dets.jpg"
    drawn.write_bytes(b"earlier drawing")
    proc = run_mspn("detect", work["image"], "--vis", vis, "-o", work["dir"] / "dets.json",
                    "--detector-weights", blind_detector_weights, *DETECT_FAST, timeout=600)
    assert_clean_error(proc, 2)
    assert drawn.read_bytes() == b"earlier drawing"
    proc = run_mspn("detect", work["image"], "--vis", vis, "-o", work["dir"] / "dets.json", "--overwrite",
                    "--detector-weights", blind_detector_weights, *DETECT_FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(drawn)) is not None  # replaced by a real drawing when asked to


# ----------------------------------------------------------------------------- every input failed


def test_keypoints_with_every_input_failing_writes_and_claims_nothing(work, mspn_weights):
    broken = work["dir"] / "000000000001.jpg"
    broken.write_bytes(GOOD_IMAGE.read_bytes()[:5000])
    out, vis = work["dir"] / "out.json", work["dir"] / "vis"
    boxes = _boxes(work["dir"] / "boxes1.json", [{"image_id": 1, "category_id": 1, "bbox": GOOD_BOX, "score": 1.0}])
    proc = run_mspn("keypoints", broken, "--boxes", boxes, "--json", out, "-o", vis, "--weights", mspn_weights, *FAST, timeout=600)
    assert_clean_error(proc, 3)
    assert not out.exists() and not vis.exists()
    assert "wrote" not in proc.stderr


def test_detect_with_every_input_failing_writes_nothing(work, blind_detector_weights):
    broken = work["dir"] / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out, vis = work["dir"] / "dets.json", work["dir"] / "vis"
    proc = run_mspn("detect", broken, "-o", out, "--vis", vis, "--detector-weights", blind_detector_weights, *DETECT_FAST, timeout=600)
    assert_clean_error(proc, 3)
    assert not out.exists() and not vis.exists()


# ----------------------------------------------------------------------------- messages that are true


def test_failed_detector_download_names_the_detector_option(work):
    # The test session points every proxy at a refusing port: the download fails at once.
    proc = run_mspn("detect", work["image"], "-o", work["dir"] / "dets.json", "--backend", "onnxruntime")
    assert_clean_error(proc, 4)
    assert "--detector-weights PATH" in proc.stderr
    assert "--weights PATH" not in proc.stderr.replace("--detector-weights PATH", "")


def test_visualize_help_shows_its_defaults_plainly():
    proc = run_mspn("visualize", "--help", check=True)
    assert "\\[" not in proc.stdout
    assert "Default: ./<image stem>_vis.jpg" in " ".join(proc.stdout.split())
    assert "heatmap peak / 255, 0 to 1" in " ".join(proc.stdout.split())  # --kpt-thr's documented scale
