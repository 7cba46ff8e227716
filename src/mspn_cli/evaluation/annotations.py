"""COCO person-keypoint annotations: the ground truth and the list of images of an evaluation."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from mspn_cli.errors import InputError, UsageError
from mspn_cli.io.detections import PERSON_CATEGORY_ID
from mspn_cli.io.jsonio import is_json_int, read_json_file

PathLike = Union[str, Path]

__all__ = ["CocoKeypointAnnotations", "load_annotations", "as_coco"]


@dataclass
class CocoKeypointAnnotations:
    """A person-keypoints annotation file plus the folder of its images."""

    path: Path
    coco: Any  # pycocotools.coco.COCO
    image_dir: Optional[Path]
    image_ids: List[int]  # sorted
    file_names: Dict[int, str]
    num_keypoints: int

    def image_path(self, image_id: int) -> Path:
        if self.image_dir is None:
            raise UsageError("no image folder given for the annotations")
        return self.image_dir / self.file_names[image_id]

    @property
    def num_instances(self) -> int:
        """Annotations that COCOeval scores: non-crowd persons with >= 1 labelled keypoint."""
        return sum(
            1
            for ann in self.coco.dataset.get("annotations", [])
            if not ann.get("iscrowd", 0) and ann.get("num_keypoints", 0) > 0
        )


def _quiet_coco(dataset: Dict[str, Any]):
    """A pycocotools COCO from an already parsed dict, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_annotations(path: PathLike, image_dir: Optional[PathLike] = None) -> CocoKeypointAnnotations:
    """Load a COCO person-keypoints file; InputError if it is missing or has no keypoints."""
    path = Path(path)
    data = read_json_file(path, "annotations file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"annotations file {path} is not a COCO annotations file (no 'images' list)")
    categories = data.get("categories") or []
    person = next((c for c in categories if isinstance(c, dict) and c.get("id") == PERSON_CATEGORY_ID), None)
    if person is None or not person.get("keypoints"):
        raise InputError(f"annotations file {path} has no person keypoints (category 1 with 'keypoints'); use person_keypoints_*.json")
    data.setdefault("annotations", [])
    file_names: Dict[int, str] = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not is_json_int(image.get("id")):
            raise InputError(f"annotations file {path}: images[{index}] has no integer 'id'")
        file_names[image["id"]] = str(image.get("file_name") or f"{image['id']:012d}.jpg")
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in file_names:
            raise InputError(f"annotations file {path}: annotations[{index}] refers to no listed image")
    coco = _quiet_coco(data)
    return CocoKeypointAnnotations(
        path=path,
        coco=coco,
        image_dir=Path(image_dir) if image_dir is not None else None,
        image_ids=sorted(file_names),
        file_names=file_names,
        num_keypoints=len(person["keypoints"]),
    )


def as_coco(annotations: Union[PathLike, CocoKeypointAnnotations, Any]) -> Any:
    """A pycocotools COCO from a path, a CocoKeypointAnnotations or a COCO."""
    if isinstance(annotations, CocoKeypointAnnotations):
        return annotations.coco
    if isinstance(annotations, (str, Path)):
        return load_annotations(annotations).coco
    return annotations
