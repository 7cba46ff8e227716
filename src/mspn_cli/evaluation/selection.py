"""Which detections an evaluation runs on: those the official COCO test keeps (reference §2).

Every person box of the detections file whose image is in the annotations is one
sample, in file order, with no score or size threshold. Entries of another category
and boxes on images the annotations do not list are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable

from mspn_cli.detection.result import Detections
from mspn_cli.io.detections import DetectionSet

__all__ = ["DetectionSelection", "select_person_detections"]


@dataclass
class DetectionSelection:
    """The kept detections per image id, and what the file held besides."""

    detections: Dict[int, Detections]  # boxes xyxy float32 as the official test builds them
    total: int  # entries in the file
    dropped_not_person: int
    dropped_unknown_image: int
    zero_size: int  # kept person boxes of width or height 0 (widened by the box extension)

    @property
    def used(self) -> int:
        return sum(len(d) for d in self.detections.values())

    def count_for(self, image_ids: Iterable[int]) -> int:
        return sum(len(self.detections[i]) for i in image_ids if i in self.detections)

    def has(self, image_id: int) -> bool:
        return image_id in self.detections


def select_person_detections(detection_set: DetectionSet, image_ids: Iterable[int]) -> DetectionSelection:
    """Keep the person boxes on annotated images, as test.py does; count what is dropped and why."""
    known = set(int(i) for i in image_ids)
    kept: Dict[int, Detections] = {}
    dropped_unknown = 0
    zero_size = 0
    for image_id, rows in detection_set.by_image_id.items():
        if image_id not in known:
            dropped_unknown += len(rows)
            continue
        kept[image_id] = detection_set.detections_for(image_id)
        zero_size += sum(1 for row in rows if row[2] == 0 or row[3] == 0)
    return DetectionSelection(kept, detection_set.entries, detection_set.non_person, dropped_unknown, zero_size)
