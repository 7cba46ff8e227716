"""COCO-format result records for detections and keypoints."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

__all__ = ["keypoint_records", "detection_records", "xyxy_to_xywh"]


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def keypoint_records(result, image_id: int, file_name: Optional[str] = None, extra: Optional[Dict] = None) -> List[Dict]:
    """COCO keypoint results, one per person, with the official scoring.

    `keypoints` carries visibility 1 for every joint, as the official test writes;
    the per-joint confidences go to `keypoint_scores` and the person box to `det_bbox`.
    """
    records = []
    boxes_xywh = xyxy_to_xywh(result.boxes)
    for index in range(len(result.keypoints)):
        kp = result.keypoints[index].astype(np.float64)
        flat = np.concatenate([kp[:, :2], np.ones((kp.shape[0], 1))], axis=1).reshape(-1)
        record = {
            "image_id": int(image_id),
            "category_id": 1,
            "keypoints": [round(float(v), 3) for v in flat],
            "score": float(result.scores[index]),
            # Not "bbox": with that key pycocotools' loadRes takes result areas from the
            # box instead of the keypoints, unlike the official test.
            "det_bbox": [round(float(v), 2) for v in boxes_xywh[index]],
            "box_score": float(result.box_scores[index]),
            "keypoint_scores": [round(float(v), 5) for v in kp[:, 2]],
        }
        records.append(_named(record, file_name, extra))
    return records


def detection_records(detections: np.ndarray, image_id: int, file_name: Optional[str] = None, extra: Optional[Dict] = None) -> List[Dict]:
    """COCO detection results for person boxes D x 5 [x1, y1, x2, y2, score]."""
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
    boxes = xyxy_to_xywh(detections[:, :4])
    records = []
    for box, score in zip(boxes, detections[:, 4]):
        record = {
            "image_id": int(image_id),
            "category_id": 1,
            "bbox": [round(float(v), 2) for v in box],
            "score": round(float(score), 5),
        }
        records.append(_named(record, file_name, extra))
    return records


def _named(record: Dict, file_name: Optional[str], extra: Optional[Dict]) -> Dict:
    """The record with the image's file name and any extra keys (path, frame_index, ...)."""
    if file_name is not None:
        record["file_name"] = file_name
    if extra:
        record.update(extra)
    return record
