"""The --labels dataset and --csv table writers, against COCO's own files and hand-made records."""

from __future__ import annotations

import csv
import json

import pytest
from pycocotools.coco import COCO

from mspn_cli.io.csv_rows import CsvRowsWriter, csv_columns, partial_path_for
from mspn_cli.io.dataset_outputs import DatasetOutputs, frame_file_name
from mspn_cli.io.labels import CocoKeypointLabels, creation_date, label_annotation
from tests.conftest import COCO_SAMPLE, load_json


def _record(confidences, image_id=785, **extra):
    """A result record as io.records writes it: keypoint_scores are peak / 255 + 1."""
    return {
        "image_id": image_id, "category_id": 1, "file_name": f"{image_id}.jpg", "path": f"in/{image_id}.jpg",
        "keypoints": [v for j in range(17) for v in (10.5 + j, 20.25 + j, 1.0)],
        "score": 1.25, "det_bbox": [5.0, 6.0, 40.0, 80.0], "box_score": 0.875,
        "keypoint_scores": [1.0 + c for c in confidences], **extra,
    }


def test_categories_are_cocos_person_category_with_its_1_based_skeleton():
    reference = load_json(COCO_SAMPLE / "person_keypoints_sample.json")["categories"][0]
    category = CocoKeypointLabels(0.3).to_dict()["categories"][0]
    assert category["keypoints"] == reference["keypoints"]
    assert category["skeleton"] == reference["skeleton"]
    assert (category["id"], category["name"]) == (1, "person")


def test_visibility_is_2_where_the_confidence_reaches_the_threshold_else_0_at_the_origin():
    confidences = [0.75] * 17
    confidences[3] = 0.49  # below
    confidences[4] = 0.0
    confidences[5] = 0.5  # reaches it exactly (1.5 - 1.0 is exact in binary)
    annotation = label_annotation(_record(confidences), 7, 1, kpt_thr=0.5)
    triples = [annotation["keypoints"][3 * j:3 * j + 3] for j in range(17)]
    assert triples[3] == [0, 0, 0] and triples[4] == [0, 0, 0]
    assert triples[5] == [15.5, 25.25, 2] and triples[0] == [10.5, 20.25, 2]
    assert annotation["num_keypoints"] == 15
    assert annotation["bbox"] == [5.0, 6.0, 40.0, 80.0] and annotation["area"] == 3200.0
    assert annotation["iscrowd"] == 0 and annotation["score"] == 1.25 and "track_id" not in annotation
    assert label_annotation(_record(confidences, track_id=4), 7, 1, 0.3)["track_id"] == 4


def test_pycocotools_loads_the_dataset_as_ground_truth(tmp_path):
    labels = CocoKeypointLabels(0.3, info={"version": "test"})
    labels.add_image("785.jpg", 640, 425, 785, [_record([0.9] * 17), _record([0.1] * 17)])
    labels.add_image("dup.jpg", 100, 50, 785, [_record([0.5] * 17)])  # a taken id gets the next free one
    labels.add_image("empty.jpg", 100, 50, 3, [])
    path = tmp_path / "labels.json"
    assert labels.write(path) == 3
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [3, 785, 786]
    assert coco.loadImgs(785)[0] == {"id": 785, "file_name": "785.jpg", "width": 640, "height": 425}
    assert [a["num_keypoints"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[785]))] == [17, 0]
    assert len(coco.getAnnIds(imgIds=[786])) == 1
    assert coco.loadCats(1)[0]["name"] == "person"
    assert len({a["id"] for a in coco.dataset["annotations"]}) == 3


def test_creation_date_follows_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert creation_date() == "2023-11-14T22:13:20Z"


def test_csv_streams_to_a_partial_file_and_renames_it_at_the_end(tmp_path):
    path = tmp_path / "poses.csv"
    writer = CsvRowsWriter(path)
    writer.add([_record([0.5] * 17), _record([0.25] * 17)])
    assert not path.exists()
    rows = list(csv.reader(partial_path_for(path).open()))  # flushed: a reader sees the finished image
    assert rows[0] == csv_columns(False) and len(rows) == 3
    writer.add([])
    writer.finish()
    assert not partial_path_for(path).exists()
    table = list(csv.DictReader(path.open()))
    assert len(table) == 2
    first = table[0]
    assert first["file_name"] == "785.jpg" and first["path"] == "in/785.jpg" and first["image_id"] == "785"
    assert [first[k] for k in ("box_x", "box_y", "box_w", "box_h", "box_score", "score")] == ["5.0", "6.0", "40.0", "80.0", "0.875", "1.25"]
    assert (first["left_ankle_x"], first["left_ankle_y"], first["left_ankle_conf"]) == ("25.5", "35.25", "0.5")
    assert table[1]["nose_conf"] == "0.25"
    assert "frame_index" not in first


def test_csv_video_columns_and_a_reopened_writer_starts_the_partial_file_over(tmp_path):
    path = tmp_path / "video.csv"
    partial_path_for(path).write_text("left over by a stopped run\n")
    writer = CsvRowsWriter(path, video=True)
    writer.add([_record([0.5] * 17, image_id=3, frame_index=3, pts_ms=120.0, track_id=None),
                _record([0.5] * 17, image_id=3, frame_index=3, pts_ms=120.0, track_id=2)])
    writer.finish()
    table = list(csv.DictReader(path.open()))
    assert [(r["frame_index"], r["time"], r["track_id"]) for r in table] == [("3", "0.12", ""), ("3", "0.12", "2")]
    assert "left over" not in path.read_text()


def test_csv_abort_leaves_nothing(tmp_path):
    writer = CsvRowsWriter(tmp_path / "x.csv")
    writer.add([_record([0.5] * 17)])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_video_frames_get_the_names_ffmpeg_extracts_and_fresh_ids(tmp_path):
    outputs = DatasetOutputs(tmp_path / "l.json", None, 0.3)
    outputs.add_image("7.jpg", "in/7.jpg", 7, (30, 20), [])
    outputs.add_frame("clip.mp4", "in/clip.mp4", 12, 480.0, (160, 120), [_record([0.5] * 17, image_id=12, track_id=1)])
    outputs.add_frame("clip.mp4", "in/clip.mp4", 13, None, (160, 120), [])
    outputs.finish()
    data = json.loads((tmp_path / "l.json").read_text())
    assert [(i["id"], i["file_name"]) for i in data["images"]] == [(7, "7.jpg"), (8, "clip_000012.jpg"), (9, "clip_000013.jpg")]
    assert data["images"][1]["frame_index"] == 12 and data["images"][1]["time"] == 0.48
    assert data["annotations"][0]["image_id"] == 8 and data["annotations"][0]["track_id"] == 1
    assert frame_file_name("a/b/clip.webm", 0) == "clip_000000.jpg"


@pytest.mark.parametrize("missing", [True, False])
def test_an_image_size_missing_from_an_old_checkpoint_is_read_from_the_file(tmp_path, missing):
    outputs = DatasetOutputs(tmp_path / "l.json", None, 0.3)
    image = COCO_SAMPLE / "000000000785.jpg"
    outputs.add_image(image.name, str(image), 785, None if missing else (1, 2), [])
    outputs.finish()
    entry = json.loads((tmp_path / "l.json").read_text())["images"][0]
    assert (entry["width"], entry["height"]) == ((640, 425) if missing else (1, 2))  # COCO's own size of 785
