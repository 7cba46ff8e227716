"""Saved keypoint results (`mspn keypoints VIDEO --jsonl` or `--json`) read into frames.

Every problem is an InputError naming the line (JSONL) or record (JSON) it is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from mspn_cli.errors import InputError
from mspn_cli.io.jsonio import json_type_name, parse_json_text
from mspn_cli.skeleton import NUM_KEYPOINTS
from mspn_cli.tracking.geometry import boxes_from_keypoints


@dataclass
class ResultFrame:
    """One frame's line and the arrays of its instances (in the line's order)."""

    frame_index: int
    line: Dict[str, Any]  # the input line (JSONL) or one built from the records (JSON)
    keypoints: np.ndarray  # (N, 17, 3) x, y, joint score
    boxes: np.ndarray  # (N, 4) xyxy
    scores: np.ndarray  # (N,) detection confidence: "box_score", else "score"
    where: str  # "line 12" or "frame_index 40", for messages
    pts_ms: Optional[float] = None
    fps: Optional[float] = None

    @property
    def instances(self) -> List[Dict[str, Any]]:
        return self.line["instances"]


def parse_results(text: str, name: str) -> Tuple[List[ResultFrame], str]:
    """Frames in frame order, and the input's kind ("jsonl" or "json")."""
    if text.lstrip().startswith("["):
        return _parse_json(text, name), "json"
    return _parse_jsonl(text, name), "jsonl"


def _parse_jsonl(text: str, name: str) -> List[ResultFrame]:
    frames: List[ResultFrame] = []
    seen: Dict[int, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{name}, line {number}"
        line = parse_json_text(raw, where, dict, "expected a JSON object with frame_index and instances")
        frame_index = _frame_index(line.get("frame_index"), where)
        if frame_index in seen:
            raise InputError(f"{where}: frame_index {frame_index} already appeared on line {seen[frame_index]}")
        seen[frame_index] = number
        instances = line.get("instances")
        if not isinstance(instances, list):
            raise InputError(f"{where}: \"instances\" must be a list of keypoint records")
        frames.append(_frame(frame_index, line, where, f"line {number}"))
    if not frames:
        raise InputError(f"{name} holds no frames")
    return sorted(frames, key=lambda frame: frame.frame_index)


def _parse_json(text: str, name: str) -> List[ResultFrame]:
    records = parse_json_text(text, name, list, "expected a JSON list of keypoint records")
    grouped: Dict[int, List[Dict[str, Any]]] = {}
    for number, record in enumerate(records, start=1):
        where = f"{name}, record {number}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a keypoint record (a JSON object), found {json_type_name(record)}")
        grouped.setdefault(_frame_index(record.get("frame_index"), where), []).append(record)
    if not grouped:
        raise InputError(f"{name} holds no records")
    frames = []
    for frame_index in sorted(grouped):
        records_here = grouped[frame_index]
        line: Dict[str, Any] = {"frame_index": frame_index}
        for key in ("file_name", "pts_ms", "fps"):
            if key in records_here[0]:
                line[key] = records_here[0][key]
        line["instances"] = records_here
        frames.append(_frame(frame_index, line, f"{name}, frame_index {frame_index}", f"frame_index {frame_index}"))
    return frames


def _frame(frame_index: int, line: Dict[str, Any], where: str, short: str) -> ResultFrame:
    line = {**line, "instances": _observations(line["instances"])}
    arrays = [_instance_arrays(record, f"{where}, instance {k + 1}") for k, record in enumerate(line["instances"])]
    keypoints = np.array([a[0] for a in arrays]).reshape(-1, NUM_KEYPOINTS, 3)
    boxes = np.array([a[1] for a in arrays]).reshape(-1, 4)
    scores = np.array([a[2] for a in arrays], dtype=np.float64).reshape(-1)
    first = line["instances"][0] if line["instances"] else {}
    pts_ms = _optional_number(line.get("pts_ms", first.get("pts_ms")), "pts_ms", where)
    fps = _optional_number(line.get("fps"), "fps", where)
    return ResultFrame(frame_index, line, keypoints, boxes, scores, short, pts_ms, fps if fps and fps > 0 else None)


def _observations(instances: List[Any]) -> List[Any]:
    """The instances as observed: a previous `mspn track` run's interpolated poses are
    dropped and its smoothed ones get their raw coordinates back, so re-tracking its
    output starts from what the pose estimator saw."""
    observed = []
    for record in instances:
        if isinstance(record, dict) and record.get("interpolated") is True:
            continue
        if isinstance(record, dict) and "keypoints_raw" in record:
            record = {**record, "keypoints": record["keypoints_raw"]}
            del record["keypoints_raw"]
        observed.append(record)
    return observed


def _instance_arrays(record: Any, where: str) -> Tuple[np.ndarray, np.ndarray, float]:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a keypoint record (a JSON object), found {json_type_name(record)}")
    flat = _numbers(record.get("keypoints"), 3 * NUM_KEYPOINTS, "keypoints", where)
    keypoints = np.asarray(flat, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
    if "keypoint_scores" in record:
        keypoints[:, 2] = _numbers(record["keypoint_scores"], NUM_KEYPOINTS, "keypoint_scores", where)
    box_key = "det_bbox" if "det_bbox" in record else "bbox" if "bbox" in record else None
    if box_key is None:
        box = boxes_from_keypoints(keypoints[None])[0]
    else:
        x, y, width, height = _numbers(record[box_key], 4, box_key, where)
        if width < 0 or height < 0:
            raise InputError(f"{where}: {box_key} [x, y, w, h] has a negative size")
        box = np.array([x, y, x + width, y + height])
    score_key = "box_score" if "box_score" in record else "score"
    if score_key not in record:
        raise InputError(f"{where}: no \"score\"")
    score = _numbers([record[score_key]], 1, score_key, where)[0]
    return keypoints, box, score


def _numbers(value: Any, count: int, key: str, where: str) -> List[float]:
    good = isinstance(value, list) and len(value) == count
    good = good and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not good:
        shown = "a number" if count == 1 else f"a list of {count} numbers"
        raise InputError(f"{where}: \"{key}\" must be {shown}")
    return [float(v) for v in value]


def _frame_index(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        hint = " (results of a video run carry one; photos cannot be tracked)" if value is None else ""
        raise InputError(f"{where}: \"frame_index\" must be a non-negative integer{hint}")
    return value


def _optional_number(value: Any, key: str, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: \"{key}\" must be a number")
    return float(value)
