"""PoseTracker on synthetic pose sequences with known identities, counting ID switches."""

from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from mspn_cli.errors import InputError
from mspn_cli.tracking import (
    UNTRACKED,
    PoseTracker,
    box_iou,
    keypoint_similarity,
    linear_assignment,
    load_tracking_config,
    match_with_threshold,
)

# A standing person: joint (x, y) per unit of height, x from the centre line, y from the top.
TEMPLATE = np.array([
    (0.0, 0.06), (0.02, 0.045), (-0.02, 0.045), (0.04, 0.055), (-0.04, 0.055),
    (0.10, 0.18), (-0.10, 0.18), (0.13, 0.33), (-0.13, 0.33), (0.14, 0.47), (-0.14, 0.47),
    (0.07, 0.52), (-0.07, 0.52), (0.08, 0.73), (-0.08, 0.73), (0.08, 0.95), (-0.08, 0.95),
])

# (identity, centre x, centre y, height, detection score); identity None = a false positive.
Person = Tuple[Optional[int], float, float, float, float]


def pose(cx: float, cy: float, height: float, joint_score: float = 1.5) -> Tuple[np.ndarray, np.ndarray]:
    """Keypoints (17, 3) and xyxy box of a standing person centred at (cx, cy)."""
    keypoints = np.empty((17, 3))
    keypoints[:, 0] = cx + TEMPLATE[:, 0] * height
    keypoints[:, 1] = cy - height / 2 + TEMPLATE[:, 1] * height
    keypoints[:, 2] = joint_score
    return keypoints, np.array([cx - 0.2 * height, cy - height / 2, cx + 0.2 * height, cy + height / 2])


def run(scene: Callable[[int], Sequence[Person]], frames: int, noise: float = 0.0, seed: int = 0,
        tracker: Optional[PoseTracker] = None) -> List[List[Tuple[Optional[int], int]]]:
    """(identity, track id) of every pose of every frame."""
    rng = np.random.default_rng(seed)
    tracker = tracker or PoseTracker(load_tracking_config().tracking)
    history = []
    for frame_index in range(frames):
        people = list(scene(frame_index))
        keypoints = np.zeros((len(people), 17, 3))
        boxes = np.zeros((len(people), 4))
        for k, (_, cx, cy, height, _) in enumerate(people):
            keypoints[k], boxes[k] = pose(cx, cy, height)
        keypoints[:, :, :2] += rng.normal(0, noise, keypoints[:, :, :2].shape)
        boxes += rng.normal(0, noise, boxes.shape)
        scores = np.array([p[4] for p in people])
        ids = tracker.update(keypoints, boxes, scores, frame_index)
        assert ids.shape == (len(people),) and ids.dtype.kind == "i"
        history.append([(p[0], int(i)) for p, i in zip(people, ids)])
    return history


def id_switches(history) -> int:
    """Times a person's track id differs from the one they had when last tracked."""
    last: Dict[int, int] = {}
    switches = 0
    for frame in history:
        for identity, track_id in frame:
            if identity is None or track_id == UNTRACKED:
                continue
            switches += identity in last and last[identity] != track_id
            last[identity] = track_id
    return switches


def ids_of(history, identity) -> set:
    return {t for frame in history for i, t in frame if i == identity}


def assert_one_id_per_person(history, identities) -> None:
    """Every person always tracked, with one id, and no id shared by two people."""
    seen = {}
    for identity in identities:
        ids = ids_of(history, identity)
        assert len(ids) == 1 and UNTRACKED not in ids, (identity, ids)
        seen[identity] = ids.pop()
    assert len(set(seen.values())) == len(seen), seen
    for frame in history:
        in_frame = [t for _, t in frame if t != UNTRACKED]
        assert len(in_frame) == len(set(in_frame)), frame


# --------------------------------------------------------------------------- scenarios


def test_people_walking_side_by_side_keep_their_ids():
    scene = lambda f: [(0, 100 + 5 * f, 300, 200, 0.9), (1, 185 + 5 * f, 300, 200, 0.9), (2, 270 + 5 * f, 305, 210, 0.8)]
    history = run(scene, 90, noise=2.0)
    assert id_switches(history) == 0
    assert_one_id_per_person(history, [0, 1, 2])
    assert sorted(ids_of(history, 0) | ids_of(history, 1) | ids_of(history, 2)) == [1, 2, 3]


@pytest.mark.parametrize("noise", [0.0, 4.0])
def test_two_people_crossing_keep_their_ids(noise):
    # Walking towards each other along nearly the same line; their boxes overlap fully mid-way.
    scene = lambda f: [(0, 100 + 8 * f, 300, 200, 0.9), (1, 740 - 8 * f, 290, 185, 0.9)]
    history = run(scene, 80, noise=noise)
    assert id_switches(history) == 0
    assert_one_id_per_person(history, [0, 1])


def test_person_hidden_behind_another_keeps_id_where_motion_predicts():
    # Person 1 walks left behind person 0 (standing) and is not detected for 14 frames.
    def scene(f):
        people = [(0, 400, 300, 220, 0.9)]
        if not 25 <= f < 39:
            people.append((1, 640 - 6 * f, 310, 200, 0.85))
        return people

    history = run(scene, 70, noise=1.5)
    assert id_switches(history) == 0
    assert_one_id_per_person(history, [0, 1])


def test_hidden_longer_than_track_buffer_gets_a_new_id():
    settings = load_tracking_config().tracking
    tracker = PoseTracker(settings)
    gap = settings.track_buffer + 5
    scene = lambda f: [(1, 100 + 4 * f, 300, 200, 0.9)] if not 10 <= f < 10 + gap else []
    history = run(scene, 10 + gap + 10, tracker=tracker)
    ids = [t for frame in history for _, t in frame]
    assert ids[:10] == [1] * 10 and set(ids[10:]) == {2}


def test_person_entering_late_gets_a_new_id_never_reused():
    # Person 0 leaves after frame 30; person 1 enters at frame 60, where person 0 walked.
    def scene(f):
        people = []
        if f < 30:
            people.append((0, 100 + 5 * f, 300, 200, 0.9))
        if f >= 20:
            people.append((1, 900 - 4 * (f - 20), 300, 200, 0.9))
        if f >= 75:
            people.append((2, 120, 320, 190, 0.9))
        return people

    history = run(scene, 120)
    assert id_switches(history) == 0
    assert_one_id_per_person(history, [0, 1, 2])
    assert ids_of(history, 0) == {1} and ids_of(history, 1) == {2} and ids_of(history, 2) == {3}


def test_noisy_keypoints_and_boxes_cause_no_switches():
    scene = lambda f: [(0, 150 + 3 * f, 300 + 10 * np.sin(f / 5), 180, 0.8), (1, 500 - 2 * f, 320, 200, 0.7)]
    for seed in range(3):
        history = run(scene, 100, noise=6.0, seed=seed)
        assert id_switches(history) == 0
        assert_one_id_per_person(history, [0, 1])


def test_low_score_false_positives_create_no_tracks():
    settings = load_tracking_config().tracking
    rng = np.random.default_rng(5)
    spots = rng.uniform(100, 900, size=(60, 2))
    weak = (settings.low_score + settings.new_track_score) / 2  # a second-pass pose, too weak to start a track

    def scene(f):
        people = [(0, 300 + 2 * f, 300, 200, 0.9)]
        people += [(None, spots[f, 0], spots[f, 1], 150, weak), (None, spots[-f, 1], 200, 120, settings.low_score / 2)]
        return people

    history = run(scene, 60)
    assert_one_id_per_person(history, [0])
    assert all(t == UNTRACKED for frame in history for i, t in frame if i is None)


def test_low_score_pose_continues_an_existing_track():
    # ByteTrack's second pass: a person whose score drops (occlusion, blur) keeps their track.
    settings = load_tracking_config().tracking
    weak = (settings.low_score + settings.high_score) / 2
    scene = lambda f: [(0, 200 + 5 * f, 300, 200, 0.9 if f < 10 or f > 20 else weak)]
    history = run(scene, 30)
    assert [t for frame in history for _, t in frame] == [1] * 30


def test_weak_pose_starts_no_track_but_strong_one_does():
    settings = load_tracking_config().tracking
    tracker = PoseTracker(settings)
    keypoints, box = pose(300, 300, 200)
    below = (settings.high_score + settings.new_track_score) / 2 if settings.new_track_score > settings.high_score else 0.0
    assert tracker.update(keypoints[None], box[None], [below], 0).tolist() == [UNTRACKED]
    assert tracker.update(keypoints[None], box[None], [0.95], 1).tolist() == [1]


def test_same_input_gives_same_ids():
    scene = lambda f: [(0, 100 + 8 * f, 300, 200, 0.9), (1, 740 - 8 * f, 290, 185, 0.9)]
    assert run(scene, 60, noise=5.0, seed=3) == run(scene, 60, noise=5.0, seed=3)


def test_skipped_frames_are_motion_predicted():
    # Ten frames in a row give the track its speed (14 px a frame); then only every 5th
    # frame is processed: the person moves 70 px between updates, most of a box width.
    tracker = PoseTracker(load_tracking_config().tracking)
    ids = []
    for frame_index in list(range(10)) + list(range(10, 200, 5)):
        keypoints, box = pose(100 + 14 * frame_index, 300, 200)
        ids += tracker.update(keypoints[None], box[None], [0.9], frame_index).tolist()
    assert set(ids) == {1}


def test_update_rejects_bad_shapes_and_frame_order():
    tracker = PoseTracker(load_tracking_config().tracking)
    assert tracker.update(np.zeros((0, 17, 3)), np.zeros((0, 4)), np.zeros(0), 3).tolist() == []
    with pytest.raises(InputError, match="increasing"):
        tracker.update(np.zeros((0, 17, 3)), np.zeros((0, 4)), np.zeros(0), 3)
    with pytest.raises(InputError, match="shape"):
        tracker.update(np.zeros((1, 16, 3)), np.zeros((1, 4)), np.ones(1), 4)
    keypoints, box = pose(0, 0, 100)
    with pytest.raises(InputError, match="boxes"):
        tracker.update(keypoints[None], np.zeros((2, 4)), np.ones(1), 5)
    assert tracker.update(keypoints[None], None, [0.9], 6).tolist() == [1]  # box taken from the joints


# --------------------------------------------------------------------------- building blocks


def test_linear_assignment_is_optimal_on_small_matrices():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows, cols = (int(v) for v in rng.integers(1, 6, 2))
        cost = rng.random((rows, cols)).round(2)
        pairs = linear_assignment(cost)
        assert len(pairs) == min(rows, cols)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        if rows <= cols:
            best = min(sum(cost[r, c] for r, c in enumerate(p)) for p in itertools.permutations(range(cols), rows))
        else:
            best = min(sum(cost[r, c] for c, r in enumerate(p)) for p in itertools.permutations(range(rows), cols))
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(best)


def test_optimal_matching_beats_greedy():
    # Greedy takes (0, 0) = 0.1 first and leaves (1, 1) = 0.9; the optimum pairs 0-1 and 1-0.
    cost = np.array([[0.1, 0.2], [0.3, 0.9]])
    assert linear_assignment(cost) == [(0, 1), (1, 0)]
    pairs, rows, cols = match_with_threshold(np.array([[0.1, 0.95], [0.97, 0.99]]), 0.8)
    assert pairs == [(0, 0)] and rows == [1] and cols == [1]


def test_iou_and_oks_basics():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    iou = box_iou(boxes, boxes)
    assert np.allclose(np.diag(iou), 1) and iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0
    keypoints, box = pose(100, 100, 200)
    moved = keypoints.copy()
    moved[:, 0] += 10
    oks = keypoint_similarity(np.stack([keypoints]), box[None], np.stack([keypoints, moved]))
    assert oks[0, 0] == pytest.approx(1.0) and 0 < oks[0, 1] < 1
    invisible = keypoints.copy()
    invisible[:, 2] = 0
    assert np.isnan(keypoint_similarity(keypoints[None], box[None], invisible[None])[0, 0])


def test_kalman_prediction_over_a_gap_is_the_constant_velocity_model():
    """predict(f) is P' = F P F^T + Q with F = [[1, f], [0, 1]] per coordinate (noise scaled by
    the box height, integrated over f frames), computed here by hand from the 2x2 blocks."""
    from mspn_cli.config import KalmanSettings
    from mspn_cli.tracking.kalman import BoxKalmanFilter

    settings = KalmanSettings(position_noise=0.05, velocity_noise=0.01, measurement_noise=0.1)
    kf = BoxKalmanFilter(np.array([100.0, 200.0, 40.0, 120.0]), settings)
    kf.velocity = np.array([2.0, -1.0, 0.0, 0.0])
    kf.covariance = np.array([0.5, 0.25, 0.0, 0.0])
    p, c, v = kf.var_position.copy(), kf.covariance.copy(), kf.var_velocity.copy()
    frames, height = 3.0, 120.0
    kf.predict(frames)
    np.testing.assert_allclose(kf.position, [106.0, 197.0, 40.0, 120.0])
    np.testing.assert_allclose(kf.var_position, p + 2 * frames * c + frames ** 2 * v + (0.05 * height) ** 2 * frames)
    np.testing.assert_allclose(kf.covariance, c + frames * v)
    np.testing.assert_allclose(kf.var_velocity, v + (0.01 * height) ** 2 * frames)


def test_a_new_track_starts_with_a_spread_of_its_height():
    """As ByteTrack's filter starts a track: position spread 2 noise units of the box height,
    velocity spread 10 (velocity unknown), no covariance yet; a box under 1 px counts as 1 px."""
    from mspn_cli.config import KalmanSettings
    from mspn_cli.tracking.kalman import BoxKalmanFilter

    settings = KalmanSettings(position_noise=0.05, velocity_noise=0.01, measurement_noise=0.1)
    for height, scale in ((120.0, 120.0), (0.25, 1.0)):
        kf = BoxKalmanFilter(np.array([100.0, 200.0, 40.0, height]), settings)
        np.testing.assert_allclose(kf.var_position, [(2 * 0.05 * scale) ** 2] * 4)
        np.testing.assert_allclose(kf.var_velocity, [(10 * 0.01 * scale) ** 2] * 4)
        np.testing.assert_array_equal(kf.covariance, [0.0] * 4)
        np.testing.assert_array_equal(kf.velocity, [0.0] * 4)


def test_box_geometry_of_degenerate_boxes_and_unsure_joints():
    from mspn_cli.tracking.geometry import box_area, boxes_from_keypoints

    # A zero-width box has no area and overlaps nothing, however tall it is; so for height.
    np.testing.assert_array_equal(box_area(np.array([[5.0, 5.0, 5.0, 50.0], [0.0, 0.0, 0.5, 10.0]])), [0.0, 5.0])
    np.testing.assert_array_equal(box_area(np.array([[0.0, 5.0, 10.0, 5.0], [0.0, 0.0, 10.0, 0.5]])), [0.0, 5.0])
    assert box_iou(np.array([[5.0, 5.0, 5.0, 50.0]]), np.array([[0.0, 0.0, 10.0, 60.0]]))[0, 0] == 0.0
    # The box of a pose is that of its joints with a positive score, whatever the score's scale.
    joints = np.zeros((1, 17, 3))
    joints[0, :, :2] = [[100.0 + k, 200.0 + 2 * k] for k in range(17)]
    joints[0, :, 2] = -1.0
    joints[0, 3, 2] = joints[0, 9, 2] = 0.5  # confidence below 1: still a positive score
    np.testing.assert_array_equal(boxes_from_keypoints(joints), [[103.0, 206.0, 109.0, 218.0]])
    # Joints weigh by their scores whatever their scale: two of 0.25 make a defined OKS.
    keypoints, box = pose(100, 100, 200)
    keypoints[:, 2] = 0.0
    keypoints[[0, 5], 2] = 0.25
    assert keypoint_similarity(keypoints[None], box[None], keypoints[None])[0, 0] == pytest.approx(1.0)


def test_a_pose_scored_exactly_high_score_is_matched_once_as_a_high_pose():
    """The two passes split poses at high_score: one exactly at it belongs to the first pass only.
    Two people side by side, then one pose between them at exactly high_score: it keeps the id of
    the person it overlaps most, and the other track does not take it in the low-score pass."""
    settings = load_tracking_config().tracking
    people = lambda frame: ([(1, 300.0, 300.0, 200.0, 0.9), (2, 306.0, 300.0, 200.0, 0.9)] if frame == 0
                            else [(1, 301.0, 300.0, 200.0, settings.high_score)])
    history = run(people, frames=2)
    first_ids = dict(history[0])
    assert history[1] == [(1, first_ids[1])], history
