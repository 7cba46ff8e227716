"""mspn_cli.io.detections, the one detection-file parser (keypoints --boxes and eval-coco --dets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mspn_cli.errors import InputError
from mspn_cli.io.detections import load_detections, parse_detections

GOOD = {"image_id": 785, "category_id": 1, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("not a dict", "expected an object, got a string"),
        ({**GOOD, "image_id": "785"}, "image_id must be an integer"),
        ({**GOOD, "image_id": True}, "image_id must be an integer"),
        ({**GOOD, "image_id": 785.0}, "image_id must be an integer"),
        ({**GOOD, "category_id": None}, "category_id must be an integer"),
        ({k: v for k, v in GOOD.items() if k != "score"}, "missing 'score'"),
        ({k: v for k, v in GOOD.items() if k != "category_id"}, "missing 'category_id'"),
        ({**GOOD, "bbox": "10 20 30 40"}, "bbox must be 4 finite numbers"),
        ({**GOOD, "bbox": [10, 20, 30]}, "bbox must be 4 finite numbers"),
        ({**GOOD, "bbox": [10, 20, "30", 40]}, "bbox must be 4 finite numbers"),
        ({**GOOD, "bbox": [10, 20, -30, 40]}, "negative width or height"),
        ({**GOOD, "bbox": [10, 20, 30, -0.5]}, "negative width or height"),
        ({**GOOD, "bbox": [10, float("nan"), 30, 40]}, "bbox must be 4 finite numbers"),
        ({**GOOD, "bbox": [10, 20, float("inf"), 40]}, "bbox must be 4 finite numbers"),
        ({**GOOD, "bbox": [10, 20, 10**400, 40]}, "bbox must be 4 finite numbers"),
        ({**GOOD, "score": float("nan")}, "score must be a finite number"),
        ({**GOOD, "score": "0.9"}, "score must be a finite number"),
    ],
)
def test_invalid_coco_detection_names_the_entry_and_the_reason(tmp_path, bad, reason):
    # json.dumps writes NaN/Infinity, which Python's json.load accepts: the check must catch them.
    path = write_json(tmp_path / "dets.json", [GOOD, GOOD, bad])
    with pytest.raises(InputError) as info:
        load_detections(path, require_coco_fields=True)
    message = str(info.value)
    assert "entry 2" in message and reason in message and str(path) in message


def test_without_coco_fields_file_name_entries_and_defaults_are_accepted():
    entries = [{"file_name": "a/b/photo.jpg", "bbox": [1, 2, 3, 4]}, {"image_id": 7, "bbox": [5, 6, 7, 8], "score": 0.5}]
    found = parse_detections(entries, "boxes.json", require_coco_fields=False)
    boxes, scores = found.boxes_for(None, "photo.jpg")
    np.testing.assert_array_equal(boxes, [[1, 2, 4, 6]])
    np.testing.assert_array_equal(scores, [1.0])
    assert found.boxes_for(7, None)[1].tolist() == [0.5] and found.boxes_for(8, None) is None
    # The same entries are not COCO detection results.
    with pytest.raises(InputError, match="entry 0 .*missing 'image_id'"):
        parse_detections(entries, "boxes.json", require_coco_fields=True)
    with pytest.raises(InputError, match="neither image_id nor file_name"):
        parse_detections([{"bbox": [1, 2, 3, 4]}], "boxes.json", require_coco_fields=False)


def test_detections_file_must_be_a_list(tmp_path):
    for fields in (True, False):
        with pytest.raises(InputError, match="looks like a COCO annotation file"):
            load_detections(write_json(tmp_path / "ann.json", {"images": [], "annotations": []}), require_coco_fields=fields)
        with pytest.raises(InputError, match="expected a JSON list of detections, got an object"):
            load_detections(write_json(tmp_path / "d.json", {"a": 1}), require_coco_fields=fields)


def test_malformed_and_missing_detection_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 785, "bbox": [1, 2, 3')
    with pytest.raises(InputError, match=r"not valid JSON \(line 1"):
        load_detections(broken, require_coco_fields=True)
    with pytest.raises(InputError, match="not found"):
        load_detections(tmp_path / "absent.json", require_coco_fields=True)


def test_empty_detection_list_is_valid():
    found = parse_detections([], "d.json", require_coco_fields=True)
    assert (found.entries, found.persons, found.non_person, found.zero_size) == (0, 0, 0, 0) and found.image_ids == []


def test_degenerate_boxes_as_the_official_test_handles_them():
    """Issue 15 item 14: one odd line must not refuse a whole file.

    Person boxes of width or height 0 are kept (the extension widens them; a box of
    zero size is still cropped) and counted; entries of another category are dropped
    without their box being looked at, whatever it holds.
    """
    entries = [
        GOOD,
        {**GOOD, "bbox": [50.0, 60.0, 0.0, 80.0]},  # zero width
        {**GOOD, "bbox": [50.0, 60.0, 40.0, 0]},  # zero height
        {**GOOD, "bbox": [5, 6, 0, 0], "score": 0.1},  # zero size
        {**GOOD, "category_id": 18, "bbox": [1, 2, 0, 0]},
        {**GOOD, "category_id": 3, "bbox": [1, 2, -5, 3]},
    ]
    found = parse_detections(entries, "dets.json", require_coco_fields=True)
    assert (found.entries, found.persons, found.non_person, found.zero_size) == (6, 4, 2, 3)
    boxes, scores = found.boxes_for(785, None)
    np.testing.assert_array_equal(boxes, np.array([[10, 20, 40, 60], [50, 60, 50, 140], [50, 60, 90, 60], [5, 6, 5, 6]], np.float32))
    np.testing.assert_array_equal(scores, np.array([0.9, 0.9, 0.9, 0.1], np.float32))


def test_boxes_are_converted_as_the_official_dataset_code_does():
    # x + w in float64, then float32 (not float32 + float32).
    x, w = 0.75, 16777216.5
    found = parse_detections([{**GOOD, "bbox": [x, 0.0, w, 1.0]}], "d.json", require_coco_fields=True)
    boxes = found.detections_for(785).boxes
    assert boxes.dtype == np.float32 and boxes[0, 2] == np.float32(x + w) != np.float32(x) + np.float32(w)
