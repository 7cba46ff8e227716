"""`Detections`: the person boxes of one image, as the detector or a boxes file gives them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Detections"]


@dataclass
class Detections:
    """D person boxes of one image (D may be 0): xyxy image pixels and a score each."""

    boxes: np.ndarray  # D x 4 float32, x1 y1 x2 y2
    scores: np.ndarray  # D float32

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = (
            np.ones(len(self.boxes), np.float32) if self.scores is None else np.asarray(self.scores, np.float32).reshape(-1)
        )
        if len(self.scores) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    @classmethod
    def from_array(cls, array: np.ndarray) -> "Detections":
        """From D x 5 [x1, y1, x2, y2, score]."""
        array = np.asarray(array, dtype=np.float32).reshape(-1, 5)
        return cls(array[:, :4], array[:, 4])

    def as_array(self) -> np.ndarray:
        """D x 5 [x1, y1, x2, y2, score] float32."""
        return np.concatenate([self.boxes, self.scores[:, None]], axis=1).astype(np.float32)

    def select(self, keep: np.ndarray) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep])

    def above(self, threshold: Optional[float]) -> "Detections":
        """Boxes scoring at least `threshold` (all of them when it is None)."""
        if threshold is None:
            return self
        return self.select(self.scores >= threshold)

    def best(self, count: Optional[int]) -> "Detections":
        """The `count` highest-scoring boxes, in that order (ties keep their order); all when None."""
        if count is None or len(self) <= count:
            return self
        return self.select(np.argsort(-self.scores, kind="stable")[:count])

    def outside(self, height: int, width: int) -> np.ndarray:
        """Mask of boxes lying entirely outside a height x width image."""
        b = self.boxes
        return (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= width) | (b[:, 1] >= height)
