"""Pairwise similarities between tracks and poses: box IoU and keypoint OKS."""

from __future__ import annotations

import numpy as np

from mspn_cli.skeleton import KEYPOINT_SIGMAS

_OKS_K2 = (2.0 * np.asarray(KEYPOINT_SIGMAS, dtype=np.float64)) ** 2


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in `boxes_a` (A, 4) with every one in `boxes_b` (B, 4): (A, B)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def keypoint_similarity(track_keypoints: np.ndarray, track_boxes: np.ndarray, pose_keypoints: np.ndarray) -> np.ndarray:
    """OKS of every track pose (T, 17, 3) with every new pose (P, 17, 3): (T, P), NaN where undefined.

    The object scale is the track's (predicted) box area; COCO uses the segment area,
    which is smaller, so this is a little more tolerant of motion-prediction error. Each
    joint counts with the smaller of its two scores, so joints a pose is unsure of weigh
    little and joints marked 0 (not visible) not at all. With no joint weighing anything
    the OKS is NaN: the caller then relies on IoU alone.
    """
    track_keypoints = np.asarray(track_keypoints, dtype=np.float64).reshape(-1, len(_OKS_K2), 3)
    pose_keypoints = np.asarray(pose_keypoints, dtype=np.float64).reshape(-1, len(_OKS_K2), 3)
    area = np.maximum(box_area(track_boxes), 1.0)
    delta = track_keypoints[:, None, :, :2] - pose_keypoints[None, :, :, :2]
    squared = (delta**2).sum(axis=-1)  # (T, P, 17)
    falloff = np.exp(-squared / (2.0 * area[:, None, None] * _OKS_K2[None, None, :]))
    weight = np.minimum(
        np.clip(track_keypoints[:, None, :, 2], 0, None), np.clip(pose_keypoints[None, :, :, 2], 0, None)
    )
    total = weight.sum(axis=-1)
    weighted = (falloff * weight).sum(axis=-1)
    return np.divide(weighted, total, out=np.full_like(total, np.nan), where=total > 0)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]],
        axis=1,
    )


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    return np.stack([boxes[:, 0] - half_w, boxes[:, 1] - half_h, boxes[:, 0] + half_w, boxes[:, 1] + half_h], axis=1)


def boxes_from_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """The tight xyxy box of each pose's joints with a positive score (all joints if none): (N, 4)."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, len(_OKS_K2), 3)
    boxes = np.zeros((len(keypoints), 4))
    for index, pose in enumerate(keypoints):
        confident = pose[pose[:, 2] > 0, :2]
        points = confident if len(confident) else pose[:, :2]
        boxes[index] = [points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()]
    return boxes
