"""Skeleton drawing (visualize.py) and the `mspn visualize` command."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mspn_cli.errors import InputError
from mspn_cli.skeleton import LIMBS, NUM_KEYPOINTS
from mspn_cli.visualize import draw_poses, draw_records, records_to_arrays, to_bgr8
from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, run_mspn

SKIER = COCO_SAMPLE / "000000000785.jpg"
SKIER_ID = 785
BASEBALL = COCO_SAMPLE / "000000196141.jpg"


# --------------------------------------------------------------------------- drawing


def standing_person(cx: float = 100.0, top: float = 40.0, scale: float = 1.0) -> np.ndarray:
    """A 17×3 upright figure (x, y, score=2: full confidence, as MSPN scores peak / 255 + 1), about 120*scale px tall."""
    offsets = {
        0: (0, 0), 1: (-4, -4), 2: (4, -4), 3: (-9, -2), 4: (9, -2),
        5: (-18, 22), 6: (18, 22), 7: (-24, 48), 8: (24, 48), 9: (-26, 72), 10: (26, 72),
        11: (-12, 70), 12: (12, 70), 13: (-13, 98), 14: (13, 98), 15: (-14, 124), 16: (14, 124),
    }
    person = np.full((NUM_KEYPOINTS, 3), 2.0, dtype=np.float32)
    for joint, (dx, dy) in offsets.items():
        person[joint, :2] = (cx + dx * scale, top + dy * scale)
    return person


def gray_canvas(height: int = 200, width: int = 300) -> np.ndarray:
    return np.full((height, width, 3), 90, dtype=np.uint8)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def test_draws_near_joints_and_limbs_and_nowhere_far():
    image = gray_canvas()
    person = standing_person()
    result = draw_poses(image, person[None], kpt_thr=0.3)

    assert result.shape == image.shape and result.dtype == np.uint8
    diff = changed(image, result)
    for x, y in person[:, :2].round().astype(int):
        assert diff[y, x], f"joint at ({x}, {y}) not drawn"
    # The middle of the left thigh (hip 11 → knee 13) is covered by a limb.
    mid = ((person[11, :2] + person[13, :2]) / 2).round().astype(int)
    assert diff[mid[1], mid[0]]
    # Nothing outside the figure's extent (plus a stroke width).
    xs, ys = person[:, 0], person[:, 1]
    far = np.ones_like(diff)
    far[int(ys.min()) - 8 : int(ys.max()) + 9, int(xs.min()) - 8 : int(xs.max()) + 9] = False
    assert not diff[far].any()


def test_joint_under_threshold_and_its_limbs_are_not_drawn():
    image = gray_canvas()
    person = standing_person()
    person[9, 2] = 1.1  # left wrist: low confidence (0.1 on the 0-to-1 scale)
    left_wrist = person[9, :2]
    left_elbow = person[7, :2]

    result = draw_poses(image, person[None], kpt_thr=0.3)
    diff = changed(image, result)
    x, y = left_wrist.round().astype(int)
    # The wrist is 24 px below the elbow; no dot, no forearm within a few pixels of it.
    assert not diff[y - 3 : y + 4, x - 3 : x + 4].any()
    # The elbow itself is still drawn.
    ex, ey = left_elbow.round().astype(int)
    assert diff[ey, ex]

    # Lowering the threshold brings it back.
    assert changed(image, draw_poses(image, person[None], kpt_thr=0.05))[y, x]


def test_input_is_not_modified_and_result_is_new():
    image = gray_canvas()
    snapshot = image.copy()
    result = draw_poses(image, standing_person()[None], boxes=np.array([[70, 30, 130, 170]]), scores=np.array([0.9]))
    assert np.array_equal(image, snapshot)
    assert result is not image and not np.shares_memory(result, image)


def test_no_people_returns_a_copy():
    image = gray_canvas()
    for empty in (np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros((0,))):
        result = draw_poses(image, empty)
        assert np.array_equal(result, image)
        assert not np.shares_memory(result, image)


def test_grayscale_and_bgra_inputs_become_bgr():
    person = standing_person()[None]
    gray = np.full((200, 300), 90, dtype=np.uint8)
    bgra = np.dstack([gray_canvas(), np.full((200, 300), 255, np.uint8)])
    for image in (gray, gray[:, :, None], bgra):
        result = draw_poses(image, person)
        assert result.shape == (200, 300, 3) and result.dtype == np.uint8
        assert changed(gray_canvas(), result).any()


def test_sixteen_bit_and_float_images_are_scaled_to_8_bit():
    assert to_bgr8(np.full((4, 4), 65535, np.uint16)).max() == 255
    assert to_bgr8(np.full((4, 4, 3), 0.5, np.float32)).max() == 128


def test_box_and_score_label_are_drawn():
    image = gray_canvas()
    box = np.array([[60.0, 60.0, 240.0, 190.0]])
    with_box = draw_poses(image, standing_person(top=70)[None], box, np.array([0.87]))
    without_box = draw_poses(image, standing_person(top=70)[None], box, np.array([0.87]), draw_boxes=False)
    # Right edge of the box, far from the figure.
    assert changed(image, with_box)[120, 240] and not changed(image, without_box)[120, 240]
    # The score label sits just above the top-left corner.
    assert changed(image, with_box)[52:59, 62:80].any()


def test_strokes_scale_with_image_size():
    def limb_pixels(scale: int) -> int:
        image = np.full((200 * scale, 300 * scale, 3), 90, np.uint8)
        return int(changed(image, draw_poses(image, standing_person(100 * scale, 40 * scale, scale)[None])).sum())

    small, large = limb_pixels(1), limb_pixels(8)
    # Everything scales by 8 in each direction: ink should grow by roughly 64, not stay put.
    assert 30 * small < large < 100 * small


def test_records_to_arrays_reads_scores_and_boxes():
    flat = [float(v) for j in range(NUM_KEYPOINTS) for v in (10 + j, 20 + j, 1)]
    records = [
        {"image_id": 1, "category_id": 1, "keypoints": flat, "score": 0.8, "bbox": [5, 6, 10, 20],
         "keypoint_scores": [0.5] * NUM_KEYPOINTS},
        {"image_id": 1, "category_id": 1, "keypoints": flat, "score": 0.4},
    ]
    keypoints, boxes, scores = records_to_arrays(records)
    assert keypoints.shape == (2, NUM_KEYPOINTS, 3)
    assert keypoints[0, 3].tolist() == [13, 23, 0.5]
    assert keypoints[1, :, 2].tolist() == [2.0] * NUM_KEYPOINTS  # no keypoint_scores: all seen, full confidence
    assert boxes[0].tolist() == [5, 6, 15, 26] and np.isnan(boxes[1]).all()
    assert scores.tolist() == pytest.approx([0.8, 0.4])

    _, no_boxes, _ = records_to_arrays(records[1:])
    assert no_boxes is None
    assert records_to_arrays([])[0].shape == (0, NUM_KEYPOINTS, 3)
    assert np.array_equal(draw_records(gray_canvas(), []), gray_canvas())


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"keypoints": [1.0] * 34}, "34 values, expected 51"),
        ({"score": 1.0}, '"keypoints" is missing'),
        ({"keypoints": [1.0] * 51, "keypoint_scores": [1.0] * 3}, "keypoint_scores"),
        ("not a record", "expected an object"),
    ],
)
def test_records_to_arrays_rejects_bad_records(bad, message):
    with pytest.raises(InputError, match=message):
        records_to_arrays([bad])


def test_limb_table_matches_drawing_assumptions():
    # The drawing indexes joints by LIMBS; guard against a skeleton edit breaking it.
    assert all(0 <= a < NUM_KEYPOINTS and 0 <= b < NUM_KEYPOINTS for a, b in LIMBS)
