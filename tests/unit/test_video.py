"""The video frame loop: key-frame detection, tracking, smoothing and frame records.

The networks are stand-ins: a detector that returns fixed boxes (and counts its calls)
and a pose backend that answers every crop with the same heatmaps, so every verdict
follows from the plumbing, never from a random network's scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from mspn_cli.detection.result import Detections
from mspn_cli.errors import UsageError
from mspn_cli.io.video_source import VideoFrame
from mspn_cli.pipeline import PosePipeline
from mspn_cli.pose.estimator import PoseEstimator
from mspn_cli.pose.preprocess import extend_box
from mspn_cli.video import (
    VideoPoseRunner,
    VideoSettings,
    carried_detections,
    confident_joint_boxes,
    frame_line,
    frame_records,
    joint_confidences,
)

HEATMAP_H, HEATMAP_W = 64, 48
# Where each joint peaks in the heatmap of any crop: a standing figure filling the crop's middle.
JOINT_XY = np.array([
    (24, 8), (26, 6), (22, 6), (28, 7), (20, 7), (31, 16), (17, 16), (33, 26), (15, 26), (34, 35), (14, 35),
    (28, 36), (20, 36), (29, 46), (19, 46), (29, 56), (19, 56),
], dtype=np.float64)


class FigureBackend:
    """Every crop gets Gaussian peaks (255) at JOINT_XY: joint confidence 1 everywhere."""

    name = "figure"

    def __init__(self):
        grid_y, grid_x = np.mgrid[0:HEATMAP_H, 0:HEATMAP_W]
        self.maps = np.stack([255.0 * np.exp(-((grid_x - x) ** 2 + (grid_y - y) ** 2) / 8.0) for x, y in JOINT_XY])
        self.crops = 0

    def run(self, batch):
        self.crops += len(batch)
        return [np.repeat(self.maps[None].astype(np.float32), len(batch), axis=0)]


class ScriptedDetector:
    """Returns the boxes scripted for the frame whose index is written in pixel (0, 0)."""

    def __init__(self, script):
        self.script = script  # frame index -> list of xyxy boxes
        self.calls = []

    def detect(self, image):
        index = int(image[0, 0, 0])
        self.calls.append(index)
        boxes = self.script(index)
        return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32))


def walking_pair(index):
    """Two people 120 px apart walking right at 3 px per frame."""
    return [[20 + 3 * index, 30, 80 + 3 * index, 190], [140 + 3 * index, 30, 200 + 3 * index, 190]]


def frames(count, step=1):
    for position in range(count):
        index = position * step
        image = np.full((220, 320, 3), 90, np.uint8)
        image[0, 0, 0] = index
        yield VideoFrame(index, 1000.0 * index / 25.0, image)


def pipeline_with(detector, backend=None):
    estimator = PoseEstimator(backend=backend or FigureBackend(), flip=False, batch_size=4)
    return PosePipeline(estimator, detector=detector)


def run(detector, count=7, **settings):
    runner = VideoPoseRunner(pipeline_with(detector), VideoSettings(**settings))
    return list(runner.run(frames(count), fps=25.0))


def test_detector_runs_on_key_frames_only_and_ids_stay():
    detector = ScriptedDetector(walking_pair)
    results = run(detector, count=7, det_every=3)
    assert detector.calls == [0, 3, 6]
    assert [p.key_frame for p in results] == [True, False, False, True, False, False, True]
    for poses in results:
        assert len(poses.result) == 2
        # Left person first at key frames; carried frames keep the order of the tracks.
        order = np.argsort(poses.result.keypoints[:, 0, 0])
        assert poses.result.track_ids[order].tolist() == [1, 2]


def test_every_frame_detected_by_default_and_no_track_gives_no_ids():
    detector = ScriptedDetector(walking_pair)
    results = run(detector, count=4, track=False)
    assert detector.calls == [0, 1, 2, 3]
    assert all(p.result.track_ids is None for p in results)
    records = frame_records(results[0], "clip.mp4", "videos/clip.mp4")
    assert records and all("track_id" not in r and "keypoints_raw" not in r for r in records)


def test_new_person_is_picked_up_at_the_next_key_frame():
    def late_second(index):
        boxes = walking_pair(index)
        return boxes if index >= 1 else boxes[:1]

    detector = ScriptedDetector(late_second)
    results = run(detector, count=5, det_every=3)
    assert [len(p.result) for p in results] == [1, 1, 1, 2, 2]
    assert sorted(results[3].result.track_ids.tolist()) == [1, 2]


def test_carried_boxes_follow_the_last_pose():
    detector = ScriptedDetector(walking_pair)
    results = run(detector, count=2, det_every=5)
    previous, carried = results[0].result, results[1].result
    tight, enough = confident_joint_boxes(previous.keypoints, 0.2, 4)
    assert enough.all()
    expected = extend_box(tight.astype(np.float32), (0.1, 0.1), 0.75)
    np.testing.assert_allclose(carried.boxes, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(carried.box_scores, previous.box_scores)


def test_oneeuro_keeps_raw_keypoints_and_smooths():
    detector = ScriptedDetector(walking_pair)
    results = run(detector, count=5, smooth="oneeuro")
    first = results[0]
    np.testing.assert_array_equal(first.keypoints_raw, first.result.keypoints)  # the filter starts at the sample
    moved = [p for p in results[1:] if not np.allclose(p.keypoints_raw[:, :, :2], p.result.keypoints[:, :, :2])]
    assert moved  # later frames are filtered
    record = frame_records(results[2], "clip.mp4", "clip.mp4")[0]
    assert len(record["keypoints_raw"]) == 51 and record["keypoints_raw"] != record["keypoints"]
    assert record["track_id"] in (1, 2)


def test_frame_lines_carry_index_time_and_fps():
    detector = ScriptedDetector(walking_pair)
    runner = VideoPoseRunner(pipeline_with(detector), VideoSettings(every=2))
    results = list(runner.run(frames(3, step=2), fps=25.0, streaming=True))
    line = frame_line(results[1], "clip.mp4", "in/clip.mp4", 25.0)
    assert list(line) == ["frame_index", "pts_ms", "fps", "file_name", "path", "instances"]
    assert (line["frame_index"], line["pts_ms"], line["fps"]) == (2, 80.0, 25.0)
    assert all(r["frame_index"] == 2 and r["pts_ms"] == 80.0 and r["image_id"] == 2 and r["path"] == "in/clip.mp4"
               for r in line["instances"])
    assert "fps" not in frame_line(results[1], "cam0", "cam:0", None)


def test_streaming_finishes_each_frame_before_reading_the_next():
    detector = ScriptedDetector(walking_pair)
    runner = VideoPoseRunner(pipeline_with(detector), VideoSettings())
    read = []

    def source():
        for frame in frames(4):
            read.append(frame.index)
            yield frame

    for poses in runner.run(source(), fps=25.0, streaming=True):
        assert read[-1] == poses.index  # nothing read ahead


def test_runner_starts_afresh_for_each_video():
    detector = ScriptedDetector(walking_pair)
    runner = VideoPoseRunner(pipeline_with(detector), VideoSettings())
    first = list(runner.run(frames(2), fps=25.0))
    second = list(runner.run(frames(2), fps=25.0))
    assert sorted(first[0].result.track_ids.tolist()) == sorted(second[0].result.track_ids.tolist()) == [1, 2]


def test_carried_detections_drop_weak_and_duplicate_poses():
    base = np.zeros((17, 3))
    base[:, 0] = np.linspace(10, 50, 17)
    base[:, 1] = np.linspace(20, 120, 17)
    base[:, 2] = 2.0  # official score peak/255 + 1: confidence 1
    weak = base.copy()
    weak[:, 2] = 1.1  # confidence 0.1 everywhere
    duplicate = base.copy()
    duplicate[:, :2] += 1.0
    far = base.copy()
    far[:, 0] += 200
    keypoints = np.stack([base, weak, duplicate, far])
    scores = np.array([0.8, 0.9, 0.95, 0.7], np.float32)
    detections, sources = carried_detections(keypoints, scores, None, 0.2, 4, 0.7, (0.1, 0.1), 0.75, (240, 320))
    assert sources.tolist() == [2, 3]  # the weak pose is dropped, of the two overlapping the higher score stays
    np.testing.assert_allclose(detections.scores, [0.95, 0.7])
    kept, _ = carried_detections(keypoints, scores, np.array([True, True, False, False]), 0.2, 4, 0.7, (0.1, 0.1), 0.75, (240, 320))
    assert len(kept) == 1
    np.testing.assert_allclose(joint_confidences(keypoints)[1], 0.1, atol=1e-9)


def test_video_settings_refuse_contradictions():
    with pytest.raises(UsageError, match="savgol"):
        VideoSettings(smooth="savgol")
    with pytest.raises(UsageError, match="tracking"):
        VideoSettings(smooth="oneeuro", track=False)
    with pytest.raises(UsageError):
        VideoSettings(det_every=0)
