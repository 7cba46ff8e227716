"""The one reader of person-detection files (COCO detection-results format).

`mspn keypoints --boxes` and `mspn eval-coco --dets` both read boxes through here; the
one difference between them is explicit (`require_coco_fields`). A bad entry gives
one clear error naming it, instead of a crash deep inside the pipeline.

What the official test does with such a file (reference §2) holds for both: entries
of another category are dropped (and counted) without looking at their box, and every
person box is kept, with no score or size threshold: a box of width or height 0 is
widened to the crop's aspect ratio by the box extension, so it is kept (and counted)
too. A negative width or height is not a box at all and is refused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from mspn_cli.detection.result import Detections
from mspn_cli.errors import InputError
from mspn_cli.io.jsonio import is_finite_number, is_json_int, json_type_name, read_json_file

__all__ = ["DetectionSet", "load_detections", "parse_detections", "PERSON_CATEGORY_ID"]

# COCO's category id of "person" (a fact of the file format, not a setting).
PERSON_CATEGORY_ID = 1

# A file this large is almost surely not a detections file meant for a single run;
# json.load would hold it whole in memory.
MAX_DETECTIONS_BYTES = 2 << 30

# x, y, w, h as written in the file, then the score.
BoxRow = Tuple[float, float, float, float, float]


@dataclass
class DetectionSet:
    """The person boxes of a detection file, grouped by image id and by file name, in file order."""

    by_image_id: Dict[int, List[BoxRow]] = field(default_factory=lambda: defaultdict(list))
    by_file_name: Dict[str, List[BoxRow]] = field(default_factory=lambda: defaultdict(list))
    entries: int = 0  # every entry of the file
    persons: int = 0  # person entries, all kept
    non_person: int = 0  # entries of another category, dropped
    zero_size: int = 0  # kept person boxes of width or height 0

    def boxes_for(self, image_id: Optional[int], file_name: Optional[str]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(boxes xyxy N x 4 float32, scores N float32) of an image, or None when the file names it nowhere.

        Entries with that `file_name` win over entries with that `image_id`.
        """
        rows = None
        if file_name is not None and file_name in self.by_file_name:
            rows = self.by_file_name[file_name]
        elif image_id is not None and image_id in self.by_image_id:
            rows = self.by_image_id[image_id]
        if rows is None:
            return None
        return _xyxy_and_scores(rows)

    def detections_for(self, image_id: Optional[int], file_name: Optional[str] = None) -> Optional[Detections]:
        """The same boxes as `boxes_for`, as the pipeline's `Detections`."""
        found = self.boxes_for(image_id, file_name)
        return None if found is None else Detections(*found)

    @property
    def image_ids(self) -> List[int]:
        return sorted(self.by_image_id)


def _xyxy_and_scores(rows: List[BoxRow]) -> Tuple[np.ndarray, np.ndarray]:
    # As the official dataset code: x + w in float64, then float32.
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    xyxy = np.concatenate([table[:, :2], table[:, :2] + table[:, 2:4]], axis=1).astype(np.float32)
    return xyxy, table[:, 4].astype(np.float32)


def _entry_problem(entry: Any, require_coco_fields: bool) -> Optional[str]:
    """Why `entry` is not a detection, or None."""
    if not isinstance(entry, dict):
        return f"expected an object, got {json_type_name(entry)}"
    required = ("image_id", "category_id", "bbox", "score") if require_coco_fields else ("bbox",)
    for key in required:
        if key not in entry:
            return f"missing '{key}'"
    if entry.get("image_id") is None and entry.get("file_name") is None:
        return "it has neither image_id nor file_name"
    # Without require_coco_fields, an entry named by file_name may have a null image_id.
    id_keys = ("image_id", "category_id") if require_coco_fields or entry.get("image_id") is not None else ("category_id",)
    for key in id_keys:
        if key in entry and not is_json_int(entry[key]):
            return f"{key} must be an integer, got {entry[key]!r}"
    if entry.get("file_name") is not None and not isinstance(entry["file_name"], str):
        return f"file_name must be a string, got {entry['file_name']!r}"
    bbox = entry["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_finite_number(v) for v in bbox):
        return f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}"
    if "score" in entry and not is_finite_number(entry["score"]):
        return f"score must be a finite number, got {entry['score']!r}"
    if entry.get("category_id", PERSON_CATEGORY_ID) == PERSON_CATEGORY_ID and (bbox[2] < 0 or bbox[3] < 0):
        return f"bbox has a negative width or height, got {bbox!r}"
    return None


def parse_detections(data: Any, source: str, *, require_coco_fields: bool) -> DetectionSet:
    """Validate a decoded detection-results list and group its person boxes by image.

    `require_coco_fields`: every entry carries image_id, category_id, bbox and score,
    as the official COCO test reads them (`eval-coco --dets`). Otherwise an entry needs
    a bbox and an image_id or a file_name; category_id defaults to person and score to 1
    (`keypoints --boxes`, e.g. boxes written by hand).
    """
    if isinstance(data, dict) and "images" in data:
        raise InputError(
            f"{source} looks like a COCO annotation file, not a detection-results list "
            "([{image_id, category_id, bbox [x, y, w, h], score}, ...])"
        )
    if not isinstance(data, list):
        raise InputError(f"{source}: expected a JSON list of detections, got {json_type_name(data)}")
    result = DetectionSet(entries=len(data))
    for index, entry in enumerate(data):
        problem = _entry_problem(entry, require_coco_fields)
        if problem:
            raise InputError(f"{source}: entry {index} is not a valid detection: {problem}")
        if entry.get("category_id", PERSON_CATEGORY_ID) != PERSON_CATEGORY_ID:
            result.non_person += 1
            continue
        x, y, w, h = (float(v) for v in entry["bbox"])
        row = (x, y, w, h, float(entry.get("score", 1.0)))
        if w == 0 or h == 0:
            result.zero_size += 1
        file_name, image_id = entry.get("file_name"), entry.get("image_id")
        if file_name is not None:
            result.by_file_name[Path(file_name).name].append(row)
        if image_id is not None:
            result.by_image_id[int(image_id)].append(row)
        result.persons += 1
    return result


def load_detections(path: Union[str, Path], *, require_coco_fields: bool) -> DetectionSet:
    """Read and validate a detection-results JSON file (see `parse_detections`). An empty list is valid."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # read_json_file reports missing or unreadable files
    if size > MAX_DETECTIONS_BYTES:
        raise InputError(f"detections file {path} is {size / 2**30:.1f} GiB; split it (limit 2 GiB)")
    return parse_detections(read_json_file(path, "detections file"), str(path), require_coco_fields=require_coco_fields)
