"""`PoseResult`: the keypoints of the persons of one image or frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

__all__ = ["PoseResult"]


@dataclass
class PoseResult:
    """Keypoints of the persons of one image (N may be 0).

    `scores` is the official instance score (mean keypoint score x box score) that COCO
    evaluation ranks by; keypoint scores follow the official lookup, peak / 255 + 1.
    """

    keypoints: np.ndarray  # N x 17 x 3: x, y (image pixels), score
    boxes: np.ndarray  # N x 4 person boxes, xyxy
    box_scores: np.ndarray  # N
    scores: np.ndarray  # N
    ext_boxes: Optional[np.ndarray] = field(default=None)  # N x 4 extended boxes the crops were cut from
    track_ids: Optional[np.ndarray] = field(default=None)  # N positive ints, video only

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def empty(cls, num_keypoints: int = 17) -> "PoseResult":
        return cls(
            keypoints=np.zeros((0, num_keypoints, 3), np.float32),
            boxes=np.zeros((0, 4), np.float32),
            box_scores=np.zeros((0,), np.float32),
            scores=np.zeros((0,), np.float32),
            ext_boxes=np.zeros((0, 4), np.float32),
        )

    def to_records(self, image_id: int, file_name: Optional[str] = None, extra: Optional[Dict] = None) -> List[Dict]:
        """COCO keypoint result records, one per person."""
        from mspn_cli.io.records import keypoint_records

        return keypoint_records(self, image_id, file_name, extra)

    def plot(self, image_bgr: np.ndarray, **style) -> np.ndarray:
        """A copy of `image_bgr` with the skeletons and boxes drawn (see `visualize.draw_poses`)."""
        from mspn_cli.visualize import draw_poses

        if self.track_ids is not None:
            style.setdefault("track_ids", self.track_ids)
        return draw_poses(image_bgr, self.keypoints, self.boxes, self.scores, **style)
