"""Predictions as a COCO keypoint *dataset* (`--labels OUT.json`): what annotation tools import as labels.

COCO *results* (`--json`) are a bare list of predictions; CVAT, Label Studio, FiftyOne
and pycocotools' `COCO(...)` want a dataset instead: `images` (file name, size, id),
`categories` (the 17 keypoint names and COCO's 1-based skeleton) and `annotations`
whose keypoints carry visibility flags. A joint is labelled visible (2) when its
confidence (heatmap peak / 255, the scale of `--kpt-thr`) reaches `--kpt-thr`; otherwise
it is "not labelled" (0) with x = y = 0, as COCO writes unlabelled joints.

Annotations are built from the run's result records (`io.records`), so a resumed run,
whose finished images come back from its checkpoint, labels the same bytes.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from mspn_cli.skeleton import KEYPOINT_NAMES, LIMBS

__all__ = ["VISIBLE", "NOT_LABELLED", "person_category", "joint_confidence", "label_annotation",
           "CocoKeypointLabels", "creation_date"]

VISIBLE = 2  # COCO: labelled and visible
NOT_LABELLED = 0  # COCO: not labelled (x = y = 0)


def person_category() -> Dict[str, Any]:
    """COCO's person category with its keypoint names and its 1-based skeleton."""
    return {
        "id": 1, "name": "person", "supercategory": "person",
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in LIMBS],
    }


def joint_confidence(keypoint_score: float) -> float:
    """A keypoint score (the official lookup, peak / 255 + 1) on the 0-to-1 scale of --kpt-thr.

    The same clipping as `visualize.joint_confidence`, on one Python float (this module
    must not import OpenCV).
    """
    return min(max(float(keypoint_score) - 1.0, 0.0), 1.0)


def creation_date() -> str:
    """Today's date (UTC), or that of $SOURCE_DATE_EPOCH for reproducible files."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch and epoch.isdigit()
              else datetime.datetime.now(datetime.timezone.utc))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def label_annotation(record: Mapping[str, Any], image_id: int, annotation_id: int, kpt_thr: float) -> Dict[str, Any]:
    """One COCO keypoint annotation from one result record (`io.records.keypoint_records`)."""
    flat = record["keypoints"]
    scores = record["keypoint_scores"]
    keypoints: List[float] = []
    visible = 0
    for joint, score in enumerate(scores):
        if joint_confidence(score) >= kpt_thr:
            keypoints.extend([flat[3 * joint], flat[3 * joint + 1], VISIBLE])
            visible += 1
        else:
            keypoints.extend([0, 0, NOT_LABELLED])
    x, y, w, h = record["det_bbox"]
    annotation: Dict[str, Any] = {
        "id": int(annotation_id), "image_id": int(image_id), "category_id": 1,
        "bbox": [x, y, w, h], "area": round(float(w) * float(h), 2), "iscrowd": 0,
        "keypoints": keypoints, "num_keypoints": visible, "score": record["score"],
    }
    if "track_id" in record:
        annotation["track_id"] = record["track_id"]
    return annotation


class CocoKeypointLabels:
    """Collects images and their predictions; `to_dict` gives the dataset, in the order images were added.

    Image ids are the runs' own (the numeric file stem, the input position, or for a
    video frame a new one); an id already taken gets the next free one, so every
    annotation points at exactly one image.
    """

    def __init__(self, kpt_thr: float, info: Optional[Mapping[str, Any]] = None):
        self.kpt_thr = float(kpt_thr)
        self.info = dict(info or {})
        self.images: List[Dict[str, Any]] = []
        self.annotations: List[Dict[str, Any]] = []
        self._ids: set = set()

    def _free_id(self, wanted: int) -> int:
        image_id = int(wanted)
        if image_id in self._ids or image_id < 1:
            image_id = max(self._ids, default=0) + 1
        self._ids.add(image_id)
        return image_id

    def add_image(self, file_name: str, width: int, height: int, image_id: int,
                  records: Sequence[Mapping[str, Any]], extra: Optional[Mapping[str, Any]] = None) -> int:
        """Add one image (or video frame) and its persons; returns the image id it got."""
        image_id = self._free_id(image_id)
        entry: Dict[str, Any] = {"id": image_id, "file_name": str(file_name), "width": int(width), "height": int(height)}
        entry.update(extra or {})
        self.images.append(entry)
        for record in records:
            self.annotations.append(label_annotation(record, image_id, len(self.annotations) + 1, self.kpt_thr))
        return image_id

    def to_dict(self) -> Dict[str, Any]:
        return {
            "info": self.info, "licenses": [],
            "images": self.images, "annotations": self.annotations, "categories": [person_category()],
        }

    def write(self, path: Union[str, Path]) -> int:
        """Write the dataset atomically; returns the number of annotations."""
        from mspn_cli.io.writers import write_json_atomic

        write_json_atomic(path, self.to_dict())
        return len(self.annotations)
