"""Bad inputs across the commands: one clear error line, the documented exit code, no
traceback, and no partial output (a new output path stays absent; an existing one keeps
its bytes).

Every case runs the real CLI in a subprocess. Networks run with `--backend onnxruntime
--no-flip --batch-size 1` and one box per image: the graphs are exported once into the
shared test MSPN_HOME and then open in about a second, where the megengine backend
imports MegEngine and unpickles the weights on every run. Test data is generated once
per session.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest

from tests.conftest import COCO_SAMPLE, WEIGHTS_CACHE, assert_clean_error, huge_png_bytes, load_json, run_mspn
from tests.conftest import run_mspn_measuring_peak_rss
from tests.fifo import fed

GOOD_IMAGE = COCO_SAMPLE / "000000000785.jpg"  # 640x425, one person
GOOD_BOX = [280.79, 44.73, 218.7, 346.68]
FAST = ["--backend", "onnxruntime", "--no-flip", "--batch-size", "1"]


# --------------------------------------------------------------------------- test data


class _RunsShellOnUnpickle:
    """Unpickling this calls os.system: a weights file must never be able to do that."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Assets:
    root: Path
    mspn_weights: Path
    detector_weights: Path
    files: Dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _keypoint_record(image_id: int) -> dict:
    keypoints = []
    for index in range(17):
        keypoints += [300.0 + 5 * index, 100.0 + 10 * index, 0.9]
    return {"image_id": image_id, "category_id": 1, "keypoints": keypoints, "score": 0.9}


@pytest.fixture(scope="session")
def assets(tmp_path_factory, mspn_weights, detector_weights) -> Assets:
    import cv2

    root = tmp_path_factory.mktemp("bad_inputs")
    a = Assets(root, mspn_weights, detector_weights)
    f = a.files
    good = GOOD_IMAGE.read_bytes()
    # The COCO name matters: --boxes match images by numeric stem (image_id) or file name.
    f["good"] = root / GOOD_IMAGE.name
    f["good"].write_bytes(good)
    f["zero"] = root / "zero.jpg"
    f["zero"].write_bytes(b"")
    f["truncated"] = root / "truncated.jpg"
    f["truncated"].write_bytes(good[:1000])
    # Partial downloads: OpenCV decodes these without a word (the missing rows come out grey).
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    for name, data in (("jpeg_third", good[: len(good) // 3]), ("jpeg_two_thirds", good[: 2 * len(good) // 3]),
                       ("png_third", png[: len(png) // 3]), ("png_two_thirds", png[: 2 * len(png) // 3])):
        f[name] = root / "partial" / name / GOOD_IMAGE.name.replace(".jpg", ".png" if name.startswith("png") else ".jpg")
        f[name].parent.mkdir(parents=True)
        f[name].write_bytes(data)
    f["text"] = root / "text.jpg"
    f["text"].write_text("this is not a JPEG\n")
    f["huge"] = root / "huge.png"
    f["huge"].write_bytes(huge_png_bytes())
    f["tiny"] = root / "tiny.png"
    cv2.imwrite(str(f["tiny"]), np.full((1, 1, 3), 128, np.uint8))
    f["png16"] = root / "deep.png"
    gradient = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    cv2.imwrite(str(f["png16"]), np.dstack([gradient] * 3))
    f["empty_dir"] = root / "no_images"
    f["empty_dir"].mkdir()
    (f["empty_dir"] / "notes.txt").write_text("no images here\n")
    f["unreadable"] = root / "unreadable.jpg"
    f["unreadable"].write_bytes(good)
    f["unreadable"].chmod(0)
    f["readonly_dir"] = root / "readonly"
    f["readonly_dir"].mkdir()
    f["readonly_dir"].chmod(0o555)

    # Boxes / detections
    f["boxes"] = _write_json(root / "boxes.json", [{"image_id": 785, "category_id": 1, "bbox": GOOD_BOX, "score": 1.0}])
    f["boxes_tiny"] = _write_json(root / "boxes_tiny.json", [{"file_name": "tiny.png", "bbox": [0, 0, 1, 1], "score": 1.0}])
    f["boxes_png16"] = _write_json(root / "boxes_png16.json", [{"file_name": "deep.png", "bbox": [0, 0, 64, 48], "score": 1.0}])
    f["boxes_malformed"] = root / "boxes_malformed.json"
    f["boxes_malformed"].write_text('[{"image_id": 785, "bbox": [1, 2, 3')
    f["boxes_dict"] = _write_json(root / "boxes_dict.json", {"image_id": 785, "bbox": GOOD_BOX, "score": 1.0})
    f["boxes_nan"] = root / "boxes_nan.json"
    f["boxes_nan"].write_text('[{"image_id": 785, "category_id": 1, "bbox": [280.0, 44.0, NaN, 346.0], "score": 1.0}]')
    f["boxes_bigint"] = root / "boxes_bigint.json"
    f["boxes_bigint"].write_text('[{"image_id": 785, "bbox": [280, 44, 1' + "0" * 400 + ', 346], "score": 1.0}]')
    f["boxes_negative"] = _write_json(root / "boxes_negative.json", [{"image_id": 785, "bbox": [280, 44, -50, -80], "score": 1.0}])
    f["boxes_million"] = root / "boxes_million.json"
    entry = '{"image_id": 987654321, "category_id": 1, "bbox": [10.5, 20.5, 30.5, 40.5], "score": 0.5}'
    with open(f["boxes_million"], "w") as handle:
        handle.write("[" + ",\n".join([entry] * 1_000_000) + "]")

    # Keypoint results (visualize) and COCO annotations (eval-coco)
    f["results"] = _write_json(root / "results.json", [_keypoint_record(785)])
    f["results_other"] = _write_json(root / "results_other.json", [_keypoint_record(999_999)])
    f["ann_no_keypoints"] = _write_json(root / "ann_no_keypoints.json", {
        "images": [{"id": 785, "file_name": "000000000785.jpg", "width": 640, "height": 425}],
        "annotations": [{"id": 1, "image_id": 785, "category_id": 1, "bbox": GOOD_BOX, "area": 75000.0, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    })
    f["ann"] = COCO_SAMPLE / "person_keypoints_sample.json"

    # Weights
    f["weights_truncated"] = root / "truncated_weights.pkl"
    with open(mspn_weights, "rb") as handle:
        f["weights_truncated"].write_bytes(handle.read(1 << 20))
    f["exploit_marker"] = root / "exploit_ran"
    f["weights_exploit"] = root / "exploit.pkl"
    f["weights_exploit"].write_bytes(pickle.dumps({"state_dict": _RunsShellOnUnpickle(f["exploit_marker"])}))

    # Video
    f["video_corrupt"] = root / "clip.mp4"
    f["video_corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    return a


@pytest.fixture(scope="session")
def wrapped_mspn_weights(tmp_path_factory, mspn_weights) -> Path:
    """The MSPN fixture re-saved as a training checkpoint {"epoch", "state_dict"}."""
    from mspn_cli.weights import load_checkpoint

    path = tmp_path_factory.mktemp("wrapped") / "checkpoint_epoch_12.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"epoch": 12, "state_dict": dict(load_checkpoint(mspn_weights))}, handle, protocol=4)
    return path


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """args(assets, work_dir) -> CLI arguments; `output` names the file that must not appear
    (relative to the work dir), or `keep` an existing file that must stay byte-for-byte."""

    id: str
    args: Callable[[Assets, Path], List[str]]
    code: int
    output: Optional[str] = None
    keep: Optional[Callable[[Assets, Path], Path]] = None
    marks: tuple = ()
    says: str = ""  # a phrase the error line must contain: every case names its reason
    enforce_permissions: bool = False  # file modes apply to the child even under root (see run_mspn)


def kp(a: Assets, *extra) -> List[str]:
    return ["keypoints", *map(str, extra), "--weights", str(a.mspn_weights), *FAST]


def vis(a: Assets, image, *extra) -> List[str]:
    return ["visualize", str(image), "--keypoints", str(a["results"]), *map(str, extra)]


def detect(a: Assets, *extra) -> List[str]:
    return ["detect", *map(str, extra), "--detector-weights", str(a.detector_weights), "--backend", "onnxruntime"]


def verify(a: Assets, *extra) -> List[str]:
    return ["weights", "verify", *map(str, extra)]




def _file_in(folder: Path) -> Path:
    """A plain file where an output folder is asked for."""
    path = folder / "afile"
    path.write_text("x")
    return path


CASES = [
    # --- images through `keypoints --boxes` (a network is built, so these cost ~7 s each)
    Case("kp-missing-image-json", lambda a, w: kp(a, w / "000000000785.jpg", "--boxes", a["boxes"], "--json", w / "out.json"), 3,
         output="out.json", says="file not found"),
    Case("kp-truncated-jpeg", lambda a, w: kp(a, a["truncated"], "--boxes", a["boxes"], "-o", w / "out.jpg"), 3, output="out.jpg", says="truncated JPEG: the file ends inside a segment"),
    Case("kp-huge-png-header", lambda a, w: kp(a, a["huge"], "--boxes", a["boxes"], "-o", w / "out.jpg"), 3, output="out.jpg", says="not a readable image"),
    Case("kp-jpeg-cut-to-a-third", lambda a, w: kp(a, a["jpeg_third"], "--boxes", a["boxes"], "--json", w / "out.json"), 3,
         output="out.json", says="truncated JPEG"),
    Case("kp-jpeg-cut-to-two-thirds", lambda a, w: kp(a, a["jpeg_two_thirds"], "--boxes", a["boxes"], "-o", w / "vis"), 3,
         output="vis", says="truncated JPEG"),
    Case("kp-png-cut-to-two-thirds", lambda a, w: kp(a, a["png_two_thirds"], "--boxes", a["boxes"], "--json", w / "out.json"), 3,
         output="out.json", says="truncated PNG"),
    # --- checked before any network is built
    Case("kp-empty-folder", lambda a, w: kp(a, a["empty_dir"], "--boxes", a["boxes"], "--json", w / "out.json"), 3, output="out.json", says="no images found in folder"),
    # A missing output folder is created (tests/cli/test_promises.py); a file where it should be is refused.
    Case("kp-json-under-a-file", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "--json", _file_in(w) / "out.json"), 2,
         output="afile/out.json", says="is a file, not a folder"),
    Case("kp-image-under-a-file", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "-o", _file_in(w) / "out.jpg"), 2,
         output="afile/out.jpg", says="is a file, not a folder"),
    # An unmatched image (zero persons) and a box outside the image (dropped, reported) are no longer
    # bad inputs: tests/cli/test_given_boxes.py. An output onto an input is a usage error (2).
    Case("kp-output-is-input", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "-o", a["good"]), 2, keep=lambda a, w: a["good"], says="is one of the inputs"),
    Case("kp-json-onto-input-overwrite", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "--json", a["good"], "--overwrite"), 2,
         keep=lambda a, w: a["good"], says="is one of the inputs"),
    Case("kp-json-onto-boxes-overwrite", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "--json", a["boxes"], "--overwrite"), 2,
         keep=lambda a, w: a["boxes"], says="is one of the inputs"),
    Case("kp-avi-output-for-an-image", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "-o", w / "out.avi"), 2, output="out.avi", says="an annotated image must be an image file"),
    Case("kp-gif-output-for-an-image", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "-o", w / "vis.gif"), 2, output="vis.gif", says="an annotated image must be an image file"),
    Case("kp-output-is-input-overwrite", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "-o", a["good"], "--overwrite"), 2,
         keep=lambda a, w: a["good"], says="is one of the inputs"),
    Case("kp-existing-json-kept", lambda a, w: kp(a, a["good"], "--boxes", a["boxes_malformed"], "--json", a["results"]), 2,
         keep=lambda a, w: a["results"], says="already exists; pass --overwrite"),
    Case("kp-boxes-malformed-json", lambda a, w: kp(a, a["good"], "--boxes", a["boxes_malformed"], "--json", w / "out.json"), 3, output="out.json", says="is not valid JSON (line 1, column 36"),
    Case("kp-boxes-dict", lambda a, w: kp(a, a["good"], "--boxes", a["boxes_dict"], "--json", w / "out.json"), 3, output="out.json", says="expected a JSON list of detections, got an object"),
    Case("kp-boxes-nan", lambda a, w: kp(a, a["good"], "--boxes", a["boxes_nan"], "--json", w / "out.json"), 3, output="out.json", says="bbox must be 4 finite numbers"),
    Case("kp-boxes-huge-integer", lambda a, w: kp(a, a["good"], "--boxes", a["boxes_bigint"], "--json", w / "out.json"), 3,
         output="out.json", says="bbox must be 4 finite numbers"),
    Case("kp-boxes-negative-size", lambda a, w: kp(a, a["good"], "--boxes", a["boxes_negative"], "--json", w / "out.json"), 3, output="out.json", says="bbox has a negative width or height"),
    Case("kp-boxes-missing-file", lambda a, w: kp(a, a["good"], "--boxes", w / "nope.json", "--json", w / "out.json"), 3, output="out.json", says="nope.json not found"),
    # An output that cannot be written is known before any work: refused as a usage error (issue 25).
    Case("kp-readonly-output-folder", lambda a, w: kp(a, a["good"], "--boxes", a["boxes"], "--json", a["readonly_dir"] / "out.json"), 2,
         enforce_permissions=True, says="is not writable"),
    Case("kp-unreadable-image", lambda a, w: kp(a, a["unreadable"], "--boxes", a["boxes"], "-o", w / "out.jpg"), 3, output="out.jpg",
         enforce_permissions=True, says="permission denied"),
    # --- weights
    Case("kp-weights-truncated", lambda a, w: ["keypoints", a["good"], "--boxes", a["boxes"], "--weights", a["weights_truncated"], *FAST,
                                                "-o", w / "out.jpg"], 4, output="out.jpg", says="is truncated or not a pickle"),
    Case("kp-weights-wrong-architecture", lambda a, w: ["keypoints", a["good"], "--boxes", a["boxes"], "--weights", a.detector_weights,
                                                         *FAST, "-o", w / "out.jpg"], 4, output="out.jpg", says="do not fit MSPN: 1456 missing keys"),
    Case("kp-weights-missing", lambda a, w: ["keypoints", a["good"], "--boxes", a["boxes"], "--weights", w / "nope.pkl", *FAST,
                                              "-o", w / "out.jpg"], 4, output="out.jpg", says="weights file not found"),
    Case("verify-truncated", lambda a, w: verify(a, a["weights_truncated"]), 4, says="is truncated or not a pickle"),
    Case("verify-text-file", lambda a, w: verify(a, a["text"]), 4, says="is truncated or not a pickle"),
    Case("verify-missing-file", lambda a, w: verify(a, w / "nope.pkl"), 4, says="weights file not found"),
    Case("verify-wrong-model", lambda a, w: verify(a, a.detector_weights, "--model", "mspn_4stage"), 4, says="do not fit mspn_4stage"),
    # --- video
    Case("kp-corrupt-video", lambda a, w: ["keypoints", a["video_corrupt"], "-o", w / "out.mp4", "--weights", a.mspn_weights,
                                            "--detector-weights", a.detector_weights, *FAST], 3, output="out.mp4", says="not a readable video"),
    # --- visualize (no network: cheap, so the decoder cases live here)
    Case("vis-missing-image", lambda a, w: vis(a, w / "nope.jpg", "-o", w / "out.jpg"), 3, output="out.jpg", says="file not found"),
    Case("vis-zero-byte-image", lambda a, w: vis(a, a["zero"], "-o", w / "out.jpg"), 3, output="out.jpg", says="empty file"),
    Case("vis-text-as-jpg", lambda a, w: vis(a, a["text"], "-o", w / "out.jpg"), 3, output="out.jpg", says="not a readable image"),
    Case("vis-truncated-jpeg", lambda a, w: vis(a, a["truncated"], "-o", w / "out.jpg"), 3, output="out.jpg", says="truncated JPEG: the file ends inside a segment"),
    Case("vis-huge-png-header", lambda a, w: vis(a, a["huge"], "-o", w / "out.jpg"), 3, output="out.jpg", says="not a readable image"),
    Case("vis-folder-as-image", lambda a, w: vis(a, a["empty_dir"], "-o", w / "out.jpg"), 3, output="out.jpg", says="is a folder, not an image"),
    Case("vis-under-a-file", lambda a, w: vis(a, a["good"], "-o", _file_in(w) / "out.jpg"), 2, output="afile/out.jpg",
         says="is a file, not a folder"),
    Case("vis-output-is-input", lambda a, w: vis(a, a["good"], "-o", a["good"]), 2, keep=lambda a, w: a["good"], says="is one of the inputs"),
    Case("vis-output-is-input-overwrite", lambda a, w: vis(a, a["good"], "-o", a["good"], "--overwrite"), 2,
         keep=lambda a, w: a["good"], says="is one of the inputs"),
    Case("vis-jpeg-cut-to-a-third", lambda a, w: vis(a, a["jpeg_third"], "-o", w / "out.jpg"), 3, output="out.jpg", says="truncated JPEG"),
    Case("vis-png-cut-to-a-third", lambda a, w: vis(a, a["png_third"], "-o", w / "out.jpg"), 3, output="out.jpg", says="truncated PNG"),
    Case("vis-malformed-results", lambda a, w: ["visualize", a["good"], "--keypoints", a["boxes_malformed"], "-o", w / "out.jpg"], 3,
         output="out.jpg", says="is not valid JSON"),
    # --- detect
    Case("detect-empty-folder", lambda a, w: detect(a, a["empty_dir"], "-o", w / "dets.json"), 3, output="dets.json", says="no images found in folder"),
    Case("detect-under-a-file", lambda a, w: detect(a, a["good"], "-o", _file_in(w) / "dets.json"), 2, output="afile/dets.json",
         says="is a file, not a folder"),
    Case("detect-zero-byte-image", lambda a, w: detect(a, a["zero"], "-o", w / "dets.json"), 3, output="dets.json", says="empty file"),
    Case("detect-jpeg-cut-to-two-thirds", lambda a, w: detect(a, a["jpeg_two_thirds"], "-o", w / "dets.json", "--vis", w / "vis"), 3,
         output="dets.json", says="truncated JPEG"),
    Case("detect-json-onto-input-overwrite", lambda a, w: detect(a, a["good"], "-o", a["good"], "--overwrite"), 2,
         keep=lambda a, w: a["good"], says="is one of the inputs"),
    Case("detect-existing-json-kept", lambda a, w: detect(a, a["good"], "-o", a["results"]), 2, keep=lambda a, w: a["results"], says="already exists; pass --overwrite"),
    # --- eval-coco on an existing results file (no network)
    Case("eval-ann-without-keypoints", lambda a, w: ["eval-coco", "--results", a["results"], "--ann", a["ann_no_keypoints"],
                                                      "--summary", w / "summary.json"], 3, output="summary.json", says="has no person keypoints"),
    Case("eval-results-for-other-images", lambda a, w: ["eval-coco", "--results", a["results_other"], "--ann", a["ann"],
                                                         "--summary", w / "summary.json"], 3, output="summary.json", says="which is not in the annotations"),
    Case("eval-malformed-results", lambda a, w: ["eval-coco", "--results", a["boxes_malformed"], "--ann", a["ann"],
                                                  "--summary", w / "summary.json"], 3, output="summary.json", says="is not valid JSON"),
    Case("eval-missing-ann", lambda a, w: ["eval-coco", "--results", a["results"], "--ann", w / "nope.json",
                                            "--summary", w / "summary.json"], 3, output="summary.json", says="nope.json not found"),
]


def _snapshot(path: Path) -> Optional[bytes]:
    return path.read_bytes() if path.is_file() else None


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_fails_cleanly(case: Case, assets: Assets, tmp_path: Path):
    assert case.says, "each case names the phrase its error line must contain"
    kept = case.keep(assets, tmp_path) if case.keep else None
    kept_bytes = _snapshot(kept) if kept else None
    proc = run_mspn(*case.args(assets, tmp_path), timeout=300,
                    enforce_permissions=case.enforce_permissions)
    assert_clean_error(proc, case.code)
    assert case.says in proc.stderr, proc.stderr
    if case.output:
        assert not (tmp_path / case.output).exists(), f"{case.output} was written: {proc.stderr}"
    if kept is not None:
        assert _snapshot(kept) == kept_bytes, f"{kept} was modified"
    # No temporary files left next to the outputs either.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], list(tmp_path.iterdir())


# --------------------------------------------------------------------------- cases that should work


def test_weights_exploit_pickle_is_refused(assets: Assets, tmp_path: Path):
    marker = assets["exploit_marker"]
    for args, output in (
        (["weights", "verify", assets["weights_exploit"], "--model", "mspn_4stage"], None),
        (["keypoints", assets["good"], "--boxes", assets["boxes"], "--weights", assets["weights_exploit"], *FAST,
          "-o", tmp_path / "out.jpg"], tmp_path / "out.jpg"),
    ):
        proc = run_mspn(*args, timeout=300)
        assert_clean_error(proc, 4)
        assert not marker.exists(), "unpickling the weights file ran a shell command"
        assert output is None or not output.exists()


def test_one_by_one_image_is_processed(assets: Assets, tmp_path: Path):
    # A 1x1 picture with a 1x1 box is degenerate but valid: the crop is upscaled like any other.
    out = tmp_path / "out.json"
    proc = run_mspn(*kp(assets, assets["tiny"], "--boxes", assets["boxes_tiny"], "--json", out), timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    records = load_json(out)
    assert len(records) == 1 and len(records[0]["keypoints"]) == 51


def test_16_bit_png_is_processed(assets: Assets, tmp_path: Path):
    out = tmp_path / "out.json"
    proc = run_mspn(*kp(assets, assets["png16"], "--boxes", assets["boxes_png16"], "--json", out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [r["file_name"] for r in load_json(out)] == ["deep.png"]


def test_training_checkpoint_wrapper_loads(assets: Assets, wrapped_mspn_weights: Path, tmp_path: Path):
    out = tmp_path / "out.json"
    # A file of its own: its graph is filled from the template (a few seconds, no MegEngine).
    proc = run_mspn("keypoints", assets["good"], "--boxes", assets["boxes"], "--weights", wrapped_mspn_weights,
                    "--no-flip", "--batch-size", "1", "--json", out, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [r["image_id"] for r in load_json(out)] == [785]


def test_million_boxes_for_an_absent_image_stay_bounded(assets: Assets, tmp_path: Path):
    """1,000,000 boxes (~90 MB of JSON) for an image that is not among the inputs: the input
    has zero persons (said once), and reading the file stays within bounds."""
    out = tmp_path / "out.jpg"
    # The baseline: the same run with a one-box file, measured the same way in this session.
    baseline, baseline_mb = run_mspn_measuring_peak_rss(*kp(assets, assets["good"], "--boxes", assets["boxes"],
                                                             "-o", tmp_path / "baseline.jpg"), timeout=240)
    assert baseline.returncode == 0, baseline.stderr
    proc, peak_mb = run_mspn_measuring_peak_rss(*kp(assets, assets["good"], "--boxes", assets["boxes_million"],
                                                    "-o", out), timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr
    assert "1 image(s) have no entry" in proc.stderr and "no persons" in proc.stderr
    assert out.is_file()  # drawn without skeletons
    # Parsing the ~90 MB file costs its Python objects once, not a copy per image or per box.
    file_mb = assets["boxes_million"].stat().st_size / 2**20
    assert peak_mb - baseline_mb < 12 * file_mb, f"peak RSS {peak_mb:.0f} MB, {baseline_mb:.0f} MB with one box"


def _coco_images_smallest_first(count: int) -> List[Path]:
    return sorted(COCO_SAMPLE.glob("*.jpg"), key=lambda p: p.stat().st_size)[:count]


def test_folder_with_one_corrupt_file_is_partial(assets: Assets, tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    good = _coco_images_smallest_first(3)
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "000000000001.jpg").write_bytes(GOOD_IMAGE.read_bytes()[:1000])
    boxes = _write_json(tmp_path / "boxes.json",
                        [{"image_id": int(p.stem), "category_id": 1, "bbox": [40, 40, 120, 200], "score": 1.0} for p in good]
                        + [{"image_id": 1, "category_id": 1, "bbox": [40, 40, 120, 200], "score": 1.0}])
    out = tmp_path / "out.json"
    proc = run_mspn(*kp(assets, folder, "--boxes", boxes, "--json", out), timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "000000000001.jpg" in errors[0], proc.stderr
    assert sorted({r["image_id"] for r in load_json(out)}) == sorted(int(p.stem) for p in good)


def test_sigint_mid_run_flushes_finished_results(assets: Assets, tmp_path: Path):
    """Ctrl-C once an image is done: the finished results are written, the run stops with 130.

    The last input is a named pipe, so the run cannot end before the signal however fast
    the machine; the first --jsonl line is the child's word that an image is finished. Four
    images come before the pipe: the pipeline decodes up to four images ahead of the one it
    runs (io.sources.prefetch, depth 4), so an image can finish while the reader waits on it.
    """
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"{index + 1:012d}.jpg" for index in range(5)]  # distinct numeric names, one box each
    for name in names[:-1]:
        (folder / name).write_bytes(GOOD_IMAGE.read_bytes())
    pipe = folder / names[-1]
    os.mkfifo(pipe)
    boxes = _write_json(tmp_path / "boxes.json",
                        [{"image_id": index + 1, "category_id": 1, "bbox": GOOD_BOX, "score": 1.0} for index in range(5)])
    out = tmp_path / "out.json"
    # Explicit paths: a folder listing keeps regular files only.
    args = kp(assets, *(folder / name for name in names), "--boxes", boxes, "--json", out, "--jsonl")
    env = dict(os.environ, MSPN_HOME=str(WEIGHTS_CACHE / "home"), COLUMNS="200")
    # SIGINT as at a terminal: a shell without job control starts background commands with SIGINT
    # ignored, the child would inherit that, and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-m", "mspn_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first_line = proc.stdout.readline()  # blocks until the first image is finished
        assert first_line, proc.stderr.read() if proc.poll() is not None else "no output"
        assert json.loads(first_line)["file_name"] == names[0]
        proc.send_signal(signal.SIGINT)
        # Its reader is a thread the interrupt does not stop: it gets an end of file once it
        # has opened the pipe (tests/fifo.py), whenever that is.
        with fed(pipe):
            stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    written = {r["image_id"] for r in load_json(out)}
    assert 1 in written and written <= {1, 2, 3, 4}
