"""`--kpt-thr` works on a documented 0-to-1 scale, and box labels are 0-to-1 figures (issue 15, item 8).

MSPN's keypoint scores are the official lookup peak / 255 + 1, so they run from about 1
to 2: a threshold of 0.3 on them drew every joint, including joints whose heatmap is
flat. The threshold now applies to the confidence peak / 255 (the score minus 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from mspn_cli.pose.result import PoseResult
from mspn_cli.visualize import draw_poses, draw_records, joint_confidence, person_confidence


def _person(confidences) -> np.ndarray:
    """One standing person (1 x 17 x 3) on a 400 x 300 canvas with these joint confidences."""
    xy = np.array([[150, 60], [140, 50], [160, 50], [130, 55], [170, 55], [110, 110], [190, 110], [95, 170],
                   [205, 170], [90, 225], [210, 225], [125, 230], [175, 230], [120, 300], [180, 300], [118, 370],
                   [182, 370]], np.float64)
    scores = np.asarray(confidences, np.float64) + 1.0  # as MSPN writes them: peak / 255 + 1
    return np.concatenate([xy, scores[:, None]], axis=1)[None]


CANVAS = np.full((400, 300, 3), 90, np.uint8)
SPREAD = np.linspace(0.02, 0.98, 17)  # one joint per confidence level, 0 to 1


def _joints_drawn(image: np.ndarray, person: np.ndarray) -> int:
    return int(sum((image[int(y), int(x)] != CANVAS[int(y), int(x)]).any() for x, y in person[0, :, :2]))


def test_joint_confidence_is_the_score_minus_one_clipped():
    np.testing.assert_allclose(joint_confidence([1.0, 1.25, 2.0, 0.7, 2.4]), [0.0, 0.25, 1.0, 0.0, 1.0])


def test_drawings_change_across_the_whole_threshold_range():
    person = _person(SPREAD)
    drawn = {thr: draw_poses(CANVAS, person, kpt_thr=thr) for thr in (0.0, 0.25, 0.5, 0.75, 1.0)}
    counts = [_joints_drawn(image, person) for image in drawn.values()]
    assert counts == sorted(counts, reverse=True) and counts[0] == 17 and counts[-1] == 0, counts
    images = list(drawn.values())
    for a, b in zip(images, images[1:]):
        assert not np.array_equal(a, b)
    # Each joint is drawn exactly when its confidence is above the threshold.
    assert counts[1:4] == [int((SPREAD > thr).sum()) for thr in (0.25, 0.5, 0.75)]


def test_flat_heatmap_joints_are_not_drawn_at_the_default_threshold():
    """Score exactly 1.0 = heatmap peak 0: the old threshold on the raw score drew it (1.0 > 0.3)."""
    person = _person(np.zeros(17))
    assert np.array_equal(draw_poses(CANVAS, person), CANVAS)
    confident = _person(np.full(17, 0.8))
    assert _joints_drawn(draw_poses(CANVAS, confident), confident) == 17


def test_box_label_is_mean_joint_confidence_times_box_score():
    person = _person(np.full(17, 0.9))
    box_score = 0.95
    instance = person[0, :, 2].mean() * box_score  # the official score: 1.9 * 0.95 = 1.805
    assert instance > 1
    assert person_confidence(person, [instance])[0] == pytest.approx(0.9 * 0.95)
    # Boxes without poses (mspn detect --vis) show their own score.
    assert person_confidence(np.zeros((1, 17, 3)), [0.42])[0] == pytest.approx(0.42)
    assert 0.0 <= person_confidence(_person(SPREAD), [1.7])[0] <= 1.0


def test_label_text_changes_with_the_figure_not_the_raw_score():
    """Two persons with the same official score but different confidences get different labels."""
    box = np.array([[60, 20, 240, 390]], np.float64)
    low, high = _person(np.full(17, 0.1)), _person(np.full(17, 0.9))
    # Same instance score 1.5: box scores 1.5/1.1 (clipped label 1.0 x 0.1) vs 1.5/1.9 (0.9 x 0.79).
    a = draw_poses(CANVAS, low, box, np.array([1.5]), kpt_thr=1.0)
    b = draw_poses(CANVAS, high, box, np.array([1.5]), kpt_thr=1.0)
    assert not np.array_equal(a, b)


def test_records_without_keypoint_scores_draw_every_joint():
    xy = _person(np.ones(17))[0, :, :2]
    record = {"image_id": 1, "category_id": 1, "score": 1.0,
              "keypoints": [v for x, y in xy for v in (float(x), float(y), 1.0)]}
    image = draw_records(CANVAS, [record])
    assert _joints_drawn(image, _person(np.ones(17))) == 17


def test_pose_result_plot_uses_the_same_scale():
    person = _person(SPREAD).astype(np.float32)
    result = PoseResult(keypoints=person, boxes=np.array([[60, 20, 240, 390]], np.float32),
                        box_scores=np.array([1.0], np.float32), scores=np.array([person[0, :, 2].mean()], np.float32))
    assert _joints_drawn(result.plot(CANVAS, kpt_thr=0.5), person) == int((SPREAD > 0.5).sum())
