"""Key-frame detection: between detector runs, each person's box comes from their last pose.

As rtmlib's `PoseTracker` does with `det_frequency`: the box of a person's confident
joints in the previous frame, enlarged by the official box extension (so it covers
the body around the joints as a detector box does), is that person's box in the next
frame. A person the detector has not seen yet is picked up at the next key frame.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from mspn_cli.detection.result import Detections
from mspn_cli.pose.preprocess import extend_box
from mspn_cli.tracking.geometry import box_iou

__all__ = ["joint_confidences", "confident_joint_boxes", "carried_detections"]


def joint_confidences(keypoints: np.ndarray) -> np.ndarray:
    """N x 17 joint confidences on the 0-to-1 scale (heatmap peak / 255).

    Keypoint scores in results follow the official lookup, peak / 255 + 1.
    """
    return np.clip(np.asarray(keypoints, dtype=np.float64)[..., 2] - 1.0, 0.0, None)


def confident_joint_boxes(keypoints: np.ndarray, confidence: float, min_keypoints: int) -> Tuple[np.ndarray, np.ndarray]:
    """(N x 4 xyxy tight boxes of each pose's confident joints, N mask of poses with enough of them).

    Rows of poses with fewer than `min_keypoints` confident joints are NaN.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 17, 3)
    confident = joint_confidences(keypoints) >= confidence
    enough = confident.sum(axis=1) >= min_keypoints
    boxes = np.full((len(keypoints), 4), np.nan)
    for index in np.flatnonzero(enough):
        xy = keypoints[index, confident[index], :2]
        boxes[index] = [xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]
    return boxes, enough


def carried_detections(
    keypoints: np.ndarray,
    box_scores: np.ndarray,
    keep: Optional[np.ndarray],
    confidence: float,
    min_keypoints: int,
    duplicate_iou: float,
    extension: Tuple[float, float],
    aspect_ratio: float,
    image_size: Tuple[int, int],
) -> Tuple[Detections, np.ndarray]:
    """The boxes of the next frame from this frame's poses, and which pose each came from.

    `keep` selects the poses to carry (e.g. those with a track); each keeps its detection
    score. Poses with too few confident joints are dropped, and of two carried boxes
    overlapping by more than `duplicate_iou` (two poses that slid onto one person) the
    lower-scoring one. `image_size` is (height, width): boxes wholly outside are dropped.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 17, 3)
    scores = np.asarray(box_scores, dtype=np.float32).reshape(-1)
    tight, enough = confident_joint_boxes(keypoints, confidence, min_keypoints)
    if keep is not None:
        enough &= np.asarray(keep, dtype=bool)
    sources = np.flatnonzero(enough)
    if not len(sources):
        return Detections.empty(), sources
    boxes = extend_box(tight[sources].astype(np.float32), extension, aspect_ratio).reshape(-1, 4)
    order = np.argsort(-scores[sources], kind="stable")
    overlap = box_iou(boxes, boxes)
    chosen = []
    for candidate in order.tolist():
        if all(overlap[candidate, other] <= duplicate_iou for other in chosen):
            chosen.append(candidate)
    chosen = np.asarray(sorted(chosen), dtype=np.int64)
    detections = Detections(boxes[chosen], scores[sources][chosen])
    inside = ~detections.outside(*image_size)
    return detections.select(inside), sources[chosen][inside]
