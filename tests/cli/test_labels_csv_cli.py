"""`mspn keypoints --labels OUT.json --csv OUT.csv` through the real CLI (seeded MSPN weights, given boxes).

The interrupted runs hold on a named pipe exactly as in test_resume.py: the signal is
sent once the checkpoint holds a finished image and the child waits on the pipe.
"""

from __future__ import annotations

import csv
import json
import signal

import pytest
from pycocotools.coco import COCO

from mspn_cli.skeleton import KEYPOINT_NAMES
from tests.cli.test_resume import DETS, _start, _wait_for_finished_image, fed, inputs  # noqa: F401 - fixture
from tests.cli.test_video_cli import FAST, make_clip
from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, run_mspn

IMAGE = COCO_SAMPLE / "000000000785.jpg"
BOXES = [[280.75, 44.75, 218.5, 346.75, 0.875], [38.0, 110.0, 174.5, 174.5, 0.75]]
FIXED_DATE = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module")
def boxes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("boxes") / "boxes.json"
    path.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": b[:4], "score": b[4]} for b in BOXES]))
    return path


def _confidences(record):
    return [min(max(score - 1.0, 0.0), 1.0) for score in record["keypoint_scores"]]


def test_labels_load_in_pycocotools_and_visibility_follows_kpt_thr(tmp_path, mspn_weights, boxes_file):
    base = ["keypoints", IMAGE, "--boxes", boxes_file, "--weights", mspn_weights, "--no-flip", "-q"]
    run_mspn(*base, "--json", tmp_path / "results.json", check=True)
    records = load_json(tmp_path / "results.json")
    # A threshold halfway between two observed confidences: some joints reach it, some do not, on any CPU.
    observed = sorted({c for record in records for c in _confidences(record)})
    assert len(observed) >= 2
    middle = len(observed) // 2
    threshold = (observed[middle - 1] + observed[middle]) / 2

    labels, table = tmp_path / "labels.json", tmp_path / "poses.csv"
    run_mspn(*base, "--labels", labels, "--csv", table, "--kpt-thr", repr(threshold), check=True)
    coco = COCO(str(labels))
    assert coco.loadImgs(785)[0] == {"id": 785, "file_name": IMAGE.name, "width": 640, "height": 425, "path": str(IMAGE)}
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[785]))
    assert len(annotations) == len(records) == 2
    for annotation, record in zip(annotations, records):
        reached = [c >= threshold for c in _confidences(record)]
        flags = annotation["keypoints"][2::3]
        assert flags == [2 if r else 0 for r in reached]
        for joint, r in enumerate(reached):
            expected = record["keypoints"][3 * joint:3 * joint + 2] if r else [0, 0]
            assert annotation["keypoints"][3 * joint:3 * joint + 2] == expected
        assert annotation["num_keypoints"] == sum(reached)
        assert annotation["bbox"] == record["det_bbox"] and annotation["score"] == record["score"]
    assert sum(a["num_keypoints"] for a in annotations) not in (0, 34)
    info = coco.dataset["info"]
    assert info["settings"]["kpt_thr"] == threshold and len(info["weights_sha256"]["mspn"]) == 64

    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 2
    assert list(rows[0])[:9] == ["file_name", "path", "image_id", "box_x", "box_y", "box_w", "box_h", "box_score", "score"]
    for row, record in zip(rows, records):
        assert float(row["box_w"]) == record["det_bbox"][2] and float(row["score"]) == record["score"]
        for joint, name in enumerate(KEYPOINT_NAMES):
            assert float(row[f"{name}_x"]) == record["keypoints"][3 * joint]
            assert float(row[f"{name}_conf"]) == pytest.approx(_confidences(record)[joint], abs=1e-5)


def test_existing_labels_or_csv_are_refused_before_anything_is_written(tmp_path, mspn_weights, boxes_file):
    table = tmp_path / "poses.csv"
    table.write_text("mine\n")
    labels = tmp_path / "labels.json"
    proc = run_mspn("keypoints", IMAGE, "--boxes", boxes_file, "--weights", mspn_weights, "--labels", labels, "--csv", table)
    assert_clean_error(proc, 2)
    assert "--overwrite" in proc.stderr
    assert table.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["poses.csv"]
    same = run_mspn("keypoints", IMAGE, "--boxes", boxes_file, "--labels", labels, "--csv", labels)
    assert_clean_error(same, 2)


def _args(inputs, labels, table, weights):  # noqa: F811 - `inputs` is the fixture's value
    early, pipe = inputs
    return ["keypoints", early, pipe, "--boxes", DETS, "--weights", weights, "--batch-size", "1", "--no-flip",
            "--labels", labels, "--csv", table, "-q"]


def test_sigterm_then_rerun_gives_the_labels_and_csv_of_an_uninterrupted_run(inputs, mspn_weights, tmp_path):  # noqa: F811
    ref_labels, ref_table = tmp_path / "ref.json", tmp_path / "ref.csv"
    with fed(inputs[1]):
        reference = run_mspn(*_args(inputs, ref_labels, ref_table, mspn_weights), env=FIXED_DATE)
    assert reference.returncode == 0, reference.stderr
    assert len(load_json(ref_labels)["images"]) == 4

    labels, table = tmp_path / "labels.json", tmp_path / "poses.csv"
    checkpoint = labels.with_name(labels.name + ".partial.jsonl")  # no --json: the checkpoint lies beside --labels
    proc = _start(_args(inputs, labels, table, mspn_weights))
    _wait_for_finished_image(proc, checkpoint)
    proc.send_signal(signal.SIGTERM)
    with fed(inputs[1]):
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    stopped = load_json(labels)  # what finished, as a valid dataset and table
    assert 1 <= len(stopped["images"]) < 4
    assert len(list(csv.DictReader(table.open()))) == len(stopped["annotations"])
    assert checkpoint.exists() and not table.with_name(table.name + ".partial").exists()

    with fed(inputs[1]):  # no --overwrite: the checkpoint marks both files as this run's unfinished outputs
        rerun = run_mspn(*[a for a in _args(inputs, labels, table, mspn_weights) if a != "-q"], env=FIXED_DATE)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed:" in rerun.stderr
    assert labels.read_bytes() == ref_labels.read_bytes()
    assert table.read_bytes() == ref_table.read_bytes()
    assert not checkpoint.exists()


def test_video_frames_become_images_with_track_ids(tmp_path, mspn_weights, eager_detector_weights):
    clip = make_clip(tmp_path / "clip.avi", frames=3)
    labels, table = tmp_path / "labels.json", tmp_path / "poses.csv"
    proc = run_mspn("keypoints", clip, "--weights", mspn_weights, "--detector-weights", eager_detector_weights, *FAST,
                    "--max-persons", "2", "--labels", labels, "--csv", table, "-q")
    assert proc.returncode == 0, proc.stderr
    coco = COCO(str(labels))
    images = coco.dataset["images"]
    assert [(i["file_name"], i["frame_index"], i["width"], i["height"]) for i in images] == [
        (f"clip_{k:06d}.jpg", k, 160, 120) for k in range(3)]
    assert len(set(coco.getImgIds())) == 3
    annotations = coco.dataset["annotations"]
    assert len(annotations) == 6 and all(a["track_id"] for a in annotations)
    rows = list(csv.DictReader(table.open()))
    assert [int(r["frame_index"]) for r in rows] == [0, 0, 1, 1, 2, 2]
    assert [int(r["track_id"]) for r in rows] == [a["track_id"] for a in annotations]
    assert rows[2]["time"] == "0.1"  # frame 1 of a 10 fps clip
