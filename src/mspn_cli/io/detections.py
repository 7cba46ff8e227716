"""Reading person detections in the COCO results format, with validation.

Used by `mspn keypoints --boxes` and `mspn eval-coco --dets`: one clear error naming
the first bad entry, instead of a crash deep inside the pipeline.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from mspn_cli.errors import InputError
from mspn_cli.io.jsonio import read_json_file

__all__ = ["DetectionSet", "load_detections", "parse_detections", "is_finite_number"]

# A file this large is almost surely not a detections file meant for a single run;
# json.load would hold it whole in memory.
MAX_DETECTIONS_BYTES = 2 << 30


@dataclass
class DetectionSet:
    """Person boxes grouped by image id and by file name."""

    by_image_id: Dict[int, List[Tuple[List[float], float]]] = field(default_factory=lambda: defaultdict(list))
    by_file_name: Dict[str, List[Tuple[List[float], float]]] = field(default_factory=lambda: defaultdict(list))
    total: int = 0
    non_person: int = 0

    def boxes_for(self, image_id: Optional[int], file_name: Optional[str]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(boxes xyxy N x 4, scores N) for an image, or None when the file names it nowhere."""
        entries = None
        if file_name is not None and file_name in self.by_file_name:
            entries = self.by_file_name[file_name]
        elif image_id is not None and image_id in self.by_image_id:
            entries = self.by_image_id[image_id]
        if entries is None:
            return None
        # As the official dataset code: x + w in float64, then float32.
        boxes = np.array([b for b, _ in entries], dtype=np.float64).reshape(-1, 4)
        scores = np.array([s for _, s in entries], dtype=np.float32)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1).astype(np.float32)
        return xyxy, scores

    @property
    def image_ids(self) -> List[int]:
        return sorted(self.by_image_id)


def is_finite_number(value: Any) -> bool:
    """A JSON number usable as a float: not a bool, not NaN/inf, not an integer beyond float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return abs(value) <= 2**53  # larger JSON integers overflow or lose precision as floats
    return math.isfinite(value)


def parse_detections(data: Any, source: str = "detections", person_only: bool = True) -> DetectionSet:
    """Validate a decoded COCO detection-results list and group it by image."""
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        raise InputError(f"{source} looks like a COCO annotation file, not a detection-results list")
    if not isinstance(data, list):
        raise InputError(f"{source}: expected a JSON list of detections, got a {type(data).__name__}")
    result = DetectionSet()
    for index, entry in enumerate(data):
        where = f"{source}: entry {index}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} is not an object")
        image_id = entry.get("image_id")
        file_name = entry.get("file_name")
        if image_id is None and file_name is None:
            raise InputError(f"{where} has neither image_id nor file_name")
        if image_id is not None and (isinstance(image_id, bool) or not isinstance(image_id, int)):
            raise InputError(f"{where}: image_id must be an integer, got {image_id!r}")
        if file_name is not None and not isinstance(file_name, str):
            raise InputError(f"{where}: file_name must be a string")
        bbox = entry.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_finite_number(v) for v in bbox):
            raise InputError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise InputError(f"{where}: bbox has non-positive width or height {bbox!r}")
        score = entry.get("score", 1.0)
        if not is_finite_number(score):
            raise InputError(f"{where}: score must be a finite number, got {score!r}")
        category = entry.get("category_id", 1)
        if person_only and category != 1:
            result.non_person += 1
            continue
        item = ([float(v) for v in bbox], float(score))
        if file_name is not None:
            result.by_file_name[Path(file_name).name].append(item)
        if image_id is not None:
            result.by_image_id[int(image_id)].append(item)
        result.total += 1
    return result


def load_detections(path: Union[str, Path], person_only: bool = True) -> DetectionSet:
    """Read and validate a COCO detection-results JSON file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # read_json_file reports missing or unreadable files
    if size > MAX_DETECTIONS_BYTES:
        raise InputError(f"detections file {path} is {size / 2**30:.1f} GiB; split it (limit 2 GiB)")
    data = read_json_file(path, "detections file")
    return parse_detections(data, str(path), person_only)
