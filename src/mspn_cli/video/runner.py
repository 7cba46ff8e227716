"""The frame loop around `PosePipeline`: key-frame detection, online tracking and smoothing.

`VideoPoseRunner.run(frames)` takes decoded frames in order and gives back one
`FramePoses` per frame, as soon as that frame is done. Every frame goes through the
one pipeline; on frames between key frames the pipeline is handed the carried boxes
(`keyframes.carried_detections`) instead of running the detector. No option parsing,
no printing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional

import numpy as np

from mspn_cli.io.records import keypoint_records
from mspn_cli.io.video_source import VideoFrame
from mspn_cli.pipeline import PipelineItem, PosePipeline
from mspn_cli.pose.result import PoseResult
from mspn_cli.tracking import UNTRACKED, OneEuroSmoother, PoseTracker, TrackingConfig, load_tracking_config
from mspn_cli.config import VideoConfig, load_video_config
from mspn_cli.video.settings import VideoSettings
from mspn_cli.video.keyframes import carried_detections, confident_joint_boxes

__all__ = ["FramePoses", "VideoPoseRunner", "frame_records", "frame_line"]


@dataclass
class FramePoses:
    """One processed frame: its poses (with track ids when tracking), and how they were found."""

    frame: VideoFrame
    result: PoseResult  # keypoints smoothed when smoothing is on
    keypoints_raw: Optional[np.ndarray] = None  # the unsmoothed keypoints, when smoothing is on
    key_frame: bool = True  # the detector ran on this frame

    @property
    def index(self) -> int:
        return self.frame.index


class VideoPoseRunner:
    """Poses for the frames of one video after another; networks are loaded once, by the pipeline.

    Call `run` once per video: tracks, ids and filters start afresh for each.
    """

    def __init__(self, pipeline: PosePipeline, settings: Optional[VideoSettings] = None,
                 tracking_config: Optional[TrackingConfig] = None, video_config: Optional[VideoConfig] = None):
        self.pipeline = pipeline
        self.settings = settings or VideoSettings()
        self.video_config = video_config or load_video_config()
        self.tracking_config = tracking_config or load_tracking_config(self.settings.tracking_config)
        tracking = self.tracking_config.tracking
        if self.settings.track_buffer is not None:
            tracking = dataclasses.replace(tracking, track_buffer=self.settings.track_buffer)
        self._tracking = tracking
        self.det_every = self.settings.det_every or self.video_config.keyframes.det_every

    def run(self, frames: Iterable[VideoFrame], fps: Optional[float] = None, streaming: bool = False) -> Iterator[FramePoses]:
        """FramePoses per frame, in order. `streaming`: each frame is finished before the next is
        read (live sources, --jsonl); key-frame detection always needs this, since a frame's
        boxes come from the previous frame's poses."""
        tracker = PoseTracker(self._tracking) if self.settings.track else None
        smoother = OneEuroSmoother(self.tracking_config.smoothing.oneeuro) if self.settings.smooth == "oneeuro" else None
        clock = _FrameClock(fps or self.tracking_config.smoothing.default_fps)
        carried: List[Optional[FramePoses]] = [None]  # the last finished frame, read by the item generator

        def items() -> Iterator[PipelineItem]:
            for position, frame in enumerate(frames):
                key_frame = position % self.det_every == 0 or carried[0] is None
                given = None if key_frame else self._carry(carried[0], frame.image.shape[:2])
                yield PipelineItem((frame, key_frame), frame.image, given)

        needs_previous = self.det_every > 1
        for (frame, key_frame), result in self.pipeline.run(items(), streaming=streaming or needs_previous):
            poses = FramePoses(frame, result, key_frame=key_frame)
            if tracker is not None:
                boxes = self._tracking_boxes(result)
                result.track_ids = tracker.update(result.keypoints, boxes, result.box_scores, frame.index)
            if smoother is not None:
                poses.keypoints_raw = result.keypoints.copy()
                smoothed = smoother.update(result.track_ids, result.keypoints, clock.seconds(frame))
                result.keypoints = smoothed.astype(np.float32)
            carried[0] = poses
            yield poses

    def _tracking_boxes(self, result: PoseResult) -> np.ndarray:
        """The box of each person's confident joints (its given box when too few are confident).

        Key frames have detector boxes and other frames carried ones, which are larger;
        matching every frame on joint boxes keeps the two kinds from pulling tracks apart.
        """
        keys = self.video_config.keyframes
        tight, enough = confident_joint_boxes(result.keypoints, keys.keypoint_confidence, keys.min_keypoints)
        return np.where(enough[:, None], tight, np.asarray(result.boxes, np.float64))

    def _carry(self, previous: FramePoses, image_size) -> Any:
        result = previous.result
        keys, pose_config = self.video_config.keyframes, self.pipeline.estimator.config
        keypoints = result.keypoints if previous.keypoints_raw is None else previous.keypoints_raw
        keep = None if result.track_ids is None else result.track_ids != UNTRACKED
        detections, _ = carried_detections(
            keypoints, result.box_scores, keep, keys.keypoint_confidence, keys.min_keypoints, keys.duplicate_iou,
            pose_config.preprocess.box_extension, pose_config.aspect_ratio, image_size,
        )
        return detections


class _FrameClock:
    """Seconds of each frame for the smoother: the container's pts when it has one, else index / fps,
    kept strictly increasing (One-Euro needs a positive time step)."""

    def __init__(self, fps: float):
        self.fps = float(fps)
        self.last: Optional[float] = None

    def seconds(self, frame: VideoFrame) -> float:
        value = frame.pts_ms / 1000.0 if frame.pts_ms is not None else frame.index / self.fps
        if self.last is not None and value <= self.last:
            value = self.last + 1.0 / self.fps
        self.last = value
        return value


def frame_records(poses: FramePoses, file_name: str, path: str) -> List[Dict[str, Any]]:
    """COCO keypoint records of one frame (image_id = frame index), each with frame_index, pts_ms,
    path, and track_id (null for a pose no track took) / keypoints_raw when present."""
    frame = poses.frame
    extra = {"frame_index": frame.index, "pts_ms": frame.pts_ms, "path": path}
    records = keypoint_records(poses.result, frame.index, file_name, extra=extra)
    track_ids = poses.result.track_ids
    for index, record in enumerate(records):
        if track_ids is not None:
            track_id = int(track_ids[index])
            record["track_id"] = track_id if track_id != UNTRACKED else None
        if poses.keypoints_raw is not None:
            raw = np.asarray(poses.keypoints_raw[index], dtype=np.float64)
            record["keypoints_raw"] = [round(float(v), 3) for v in np.column_stack([raw[:, :2], np.ones(len(raw))]).reshape(-1)]
    return records


def frame_line(poses: FramePoses, file_name: str, path: str, fps: Optional[float],
               records: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The JSONL line of one frame: frame_index, pts_ms, fps (when known), file_name, path, instances."""
    line: Dict[str, Any] = {"frame_index": poses.frame.index, "pts_ms": poses.frame.pts_ms}
    if fps:
        line["fps"] = round(float(fps), 6)
    line.update({"file_name": file_name, "path": path,
                 "instances": frame_records(poses, file_name, path) if records is None else records})
    return line
