"""Image tasks: what one run has to do per input image, planned before any network loads.

A task is a plain row (index, path, image id, file name, given boxes or None, listing
error); the local engine and the Ray engine receive the same rows and give back the
same outcomes, so the driver writes the same bytes whichever ran them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mspn_cli.detection.result import Detections
from mspn_cli.errors import UsageError
from mspn_cli.io.sources import InputItem, image_id_for

__all__ = ["ImageTask", "ImageOutcome", "plan_image_tasks"]


@dataclass(frozen=True)
class ImageTask:
    index: int  # position in the run: outputs are written in this order
    path: str
    image_id: int
    file_name: str
    boxes: Optional[Tuple[Tuple[float, float, float, float, float], ...]] = None  # given xyxy + score rows
    error: Optional[str] = None  # could not even be listed (missing file, ...)
    unmatched: bool = False  # --boxes given, but the file names this image nowhere (processed as 0 persons)
    allow_truncated: bool = False  # decode a truncated file as is instead of failing it (--allow-truncated)
    # A sample of the official COCO test (eval-coco): every given box is estimated, even one lying
    # outside the image, and records carry no path, as the evaluation's own loop writes them.
    eval_sample: bool = False

    @property
    def given(self) -> Optional[Detections]:
        if self.boxes is None:
            return None
        return Detections.from_array(np.asarray(self.boxes, dtype=np.float32).reshape(-1, 5))

    def to_row(self) -> Dict[str, Any]:
        return {
            "index": self.index, "path": self.path, "image_id": self.image_id, "file_name": self.file_name,
            "boxes": None if self.boxes is None else [list(b) for b in self.boxes],
            "error": self.error, "unmatched": self.unmatched, "allow_truncated": self.allow_truncated,
            # Only when set, so the rows (and the run digests) of `mspn keypoints` stay as they were.
            **({"eval_sample": True} if self.eval_sample else {}),
        }

    @classmethod
    def from_row(cls, row: Dict[str, Any]) -> "ImageTask":
        boxes = row.get("boxes")
        return cls(
            index=int(row["index"]), path=str(row["path"]), image_id=int(row["image_id"]), file_name=str(row["file_name"]),
            boxes=None if boxes is None else tuple(tuple(float(v) for v in b) for b in boxes),
            error=row.get("error"), unmatched=bool(row.get("unmatched", False)),
            allow_truncated=bool(row.get("allow_truncated", False)), eval_sample=bool(row.get("eval_sample", False)),
        )


@dataclass
class ImageOutcome:
    """What became of one task: records (COCO keypoint results) or an error."""

    task: ImageTask
    records: List[dict] = field(default_factory=list)
    error: Optional[str] = None
    notes: List[str] = field(default_factory=list)  # not errors: e.g. boxes dropped outside the image
    result: Any = None  # the PoseResult (local engine only)
    image: Optional[np.ndarray] = None  # the decoded image, when the caller draws it
    image_size: Optional[Tuple[int, int]] = None  # (width, height) of the decoded image: --labels needs it


def _given_rows(detection_set, item_path: Path, image_id: int) -> Optional[Tuple[Tuple[float, ...], ...]]:
    stem_is_id = item_path.stem.isdigit()
    found = detection_set.boxes_for(image_id if stem_is_id else None, item_path.name)
    if found is None:
        return None
    boxes, scores = found
    return tuple(tuple(float(v) for v in (*box, score)) for box, score in zip(boxes, scores))


def plan_image_tasks(items: Sequence[InputItem], detection_set=None, boxes_source: str = "--boxes",
                     allow_truncated: bool = False) -> List[ImageTask]:
    """One task per listed input; given boxes matched now, so a worker needs no boxes file.

    Boxes are matched by `file_name` when the boxes file has entries with that name,
    else by `image_id` for inputs whose stem is a number (000000000785.jpg -> 785). A
    file name shared by several inputs cannot be matched and is refused.
    """
    if detection_set is not None:
        paths_by_name: Dict[str, set] = defaultdict(set)
        for item in items:
            if item.error is None:
                paths_by_name[item.path.name].add(str(item.path.resolve()))
        clashes = sorted(n for n, paths in paths_by_name.items() if len(paths) > 1 and n in detection_set.by_file_name)
        if clashes:
            raise UsageError(
                f"{boxes_source} matches boxes by file_name, but {clashes[0]} names {len(paths_by_name[clashes[0]])} "
                "different inputs; give image_id entries or one folder at a time"
            )
    tasks: List[ImageTask] = []
    for index, item in enumerate(items):
        image_id = image_id_for(item.path, index + 1)
        if item.error is not None:
            tasks.append(ImageTask(index, str(item.path), image_id, item.path.name, error=item.error))
            continue
        boxes, unmatched = None, False
        if detection_set is not None:
            boxes = _given_rows(detection_set, item.path, image_id)
            if boxes is None:
                boxes, unmatched = (), True
        tasks.append(ImageTask(index, str(item.path), image_id, item.path.name, boxes=boxes, unmatched=unmatched,
                               allow_truncated=allow_truncated))
    return tasks
