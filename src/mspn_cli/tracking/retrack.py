"""Offline re-tracking of saved results: ids, optional smoothing, optional gap filling.

`retrack(frames, config, ...)` turns parsed frames (see results.py) into output lines:
each input line in frame order, every instance given "track_id" (null for a pose no
track took), smoothed instances keeping their input coordinates as "keypoints_raw", and
interpolated instances marked "interpolated": true after the observed ones. Given its
own output, it starts again from the observations (parse_results drops interpolated
instances and restores keypoints_raw), so running it twice changes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from mspn_cli.errors import UsageError
from mspn_cli.tracking.gaps import interpolate, plan_gap_fills
from mspn_cli.tracking.results import ResultFrame
from mspn_cli.config import TrackingConfig
from mspn_cli.tracking.smoothing import OneEuroSmoother, savgol_smooth
from mspn_cli.tracking.tracker import UNTRACKED, PoseTracker

SMOOTHING_METHODS = ("none", "oneeuro", "savgol")


@dataclass
class RetrackSummary:
    frames: int = 0
    poses: int = 0
    tracks: int = 0
    untracked: int = 0
    interpolated: int = 0


def frame_times(frames: List[ResultFrame], default_fps: float) -> np.ndarray:
    """Seconds per frame: the container's pts_ms when every frame has one and they increase,
    else frame_index / fps (the results' fps, or `default_fps`)."""
    stamps = [frame.pts_ms for frame in frames]
    if all(s is not None for s in stamps) and all(b > a for a, b in zip(stamps, stamps[1:])):
        return np.asarray(stamps, dtype=np.float64) / 1000.0
    fps = next((frame.fps for frame in frames if frame.fps), None) or default_fps
    return np.asarray([frame.frame_index for frame in frames], dtype=np.float64) / fps


def retrack(
    frames: List[ResultFrame],
    config: TrackingConfig,
    smooth: str = "none",
    fill_gaps: int = 0,
    track_buffer: Optional[int] = None,
) -> Tuple[List[Dict[str, Any]], RetrackSummary]:
    """Output lines (new objects; `frames` is left as it was) and what was done."""
    if smooth not in SMOOTHING_METHODS:
        raise UsageError(f"unknown smoothing {smooth!r}; choose one of {', '.join(SMOOTHING_METHODS)}")
    if fill_gaps < 0:
        raise UsageError(f"--fill-gaps must be >= 0, got {fill_gaps}")
    settings = config.tracking
    if track_buffer is not None:
        if track_buffer < 0:
            raise UsageError(f"--track-buffer must be >= 0, got {track_buffer}")
        settings = dataclasses.replace(settings, track_buffer=track_buffer)

    tracker = PoseTracker(settings)
    ids = [tracker.update(f.keypoints, f.boxes, f.scores, f.frame_index) for f in frames]
    times = frame_times(frames, config.smoothing.default_fps)
    keypoints = [f.keypoints.copy() for f in frames]
    if smooth == "oneeuro":
        smoother = OneEuroSmoother(config.smoothing.oneeuro)
        keypoints = [smoother.update(ids[p], frames[p].keypoints, times[p]) for p in range(len(frames))]
    elif smooth == "savgol":
        keypoints = _savgol_all(frames, ids, times, config)

    lines = []
    for position, frame in enumerate(frames):
        # New dicts, shared values: nothing below changes a value in place, so the input stays as it was.
        line = {**frame.line, "instances": [dict(record) for record in frame.instances]}
        for index, record in enumerate(line["instances"]):
            track_id = int(ids[position][index])
            record.pop("track_id", None)  # re-tracked: the new id goes last, as on a first run
            if smooth != "none":
                raw = record["keypoints"]
                record["keypoints"] = _flat(keypoints[position][index], raw)
                record["keypoints_raw"] = raw
            record["track_id"] = track_id if track_id != UNTRACKED else None
        lines.append(line)

    summary = RetrackSummary(frames=len(frames))
    summary.poses = sum(len(i) for i in ids)
    summary.untracked = sum(int((i == UNTRACKED).sum()) for i in ids)
    summary.tracks = len({int(t) for i in ids for t in i if t != UNTRACKED})
    if fill_gaps:
        summary.interpolated = _fill_gaps(frames, ids, keypoints, times, fill_gaps, lines)
    return lines, summary


def _track_samples(ids: List[np.ndarray]) -> Dict[int, List[Tuple[int, int]]]:
    """(frame position, instance index) of every pose of each track, in frame order."""
    samples: Dict[int, List[Tuple[int, int]]] = {}
    for position, frame_ids in enumerate(ids):
        for index, track_id in enumerate(frame_ids.tolist()):
            if track_id != UNTRACKED:
                samples.setdefault(track_id, []).append((position, index))
    return dict(sorted(samples.items()))


def _savgol_all(frames, ids, times, config: TrackingConfig) -> List[np.ndarray]:
    keypoints = [f.keypoints.copy() for f in frames]
    window, order = config.smoothing.savgol.window, config.smoothing.savgol.order
    for samples in _track_samples(ids).values():
        positions = [p for p, _ in samples]
        poses = np.stack([frames[p].keypoints[i] for p, i in samples])
        smoothed = savgol_smooth(positions, times[positions], poses[:, :, :2], poses[:, :, 2], window, order)
        for (position, index), xy in zip(samples, smoothed):
            keypoints[position][index, :, :2] = xy
    return keypoints


def _fill_gaps(frames, ids, keypoints, times, max_gap: int, lines) -> int:
    added: Dict[int, List[Tuple[int, Dict[str, Any]]]] = {}
    for track_id, samples in _track_samples(ids).items():
        positions = [p for p, _ in samples]
        for fill in plan_gap_fills(positions, times, max_gap):
            (p0, i0), (p1, i1) = samples[fill.before], samples[fill.after]
            record = _interpolated_record(
                frames[p0].instances[i0], frames[p1].instances[i1],
                keypoints[p0][i0], keypoints[p1][i1],
                frames[p0].boxes[i0], frames[p1].boxes[i1],
                fill.fraction, frames[p0], frames[fill.position],
            )
            record["track_id"] = track_id
            record["interpolated"] = True
            added.setdefault(fill.position, []).append((track_id, record))
    for position, records in added.items():
        lines[position]["instances"].extend(record for _, record in sorted(records, key=lambda pair: pair[0]))
    return sum(len(records) for records in added.values())


def _interpolated_record(first, last, pose_first, pose_last, box_first, box_last, fraction, frame_first, frame) -> Dict[str, Any]:
    """A record like `first`, its pose, box and scores moved `fraction` of the way to `last`."""
    record = {k: copy.deepcopy(v) for k, v in first.items() if k not in ("track_id", "keypoints_raw", "interpolated")}
    pose = interpolate(pose_first, pose_last, fraction)
    record["keypoints"] = _flat(pose, first["keypoints"], scores=None if "keypoint_scores" in first else pose[:, 2])
    if "keypoint_scores" in first:
        record["keypoint_scores"] = [round(float(v), 5) for v in pose[:, 2]]
    box = interpolate(box_first, box_last, fraction)
    for key in ("det_bbox", "bbox"):
        if key in first:
            record[key] = [round(float(v), 2) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])]
    for key in ("score", "box_score"):
        if _is_number(first.get(key)) and _is_number(last.get(key)):
            record[key] = round(float(interpolate(first[key], last[key], fraction)), 6)
    # Video records use the frame index as image_id; anything else is kept as it was.
    if first.get("image_id") == frame_first.frame_index:
        record["image_id"] = frame.frame_index
    if "frame_index" in first:
        record["frame_index"] = frame.frame_index
    if "pts_ms" in first and frame.pts_ms is not None:
        record["pts_ms"] = frame.pts_ms
    return record


def _flat(pose: np.ndarray, raw_flat: List[Any], scores: Optional[np.ndarray] = None) -> List[float]:
    """A COCO keypoints list: x, y from `pose`, the third value from `scores` or else as in `raw_flat`."""
    flat: List[float] = []
    for joint, (x, y) in enumerate(pose[:, :2].tolist()):
        third = raw_flat[3 * joint + 2] if scores is None else round(float(scores[joint]), 5)
        flat.extend((round(x, 3), round(y, 3), third))
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
