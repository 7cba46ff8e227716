"""An oracle stand-in for the MSPN network: it "predicts" the ground truth.

`OracleBackend` plugs into `PoseEstimator(backend=...)`. For each crop of a batch it
looks up which (image, detection box, flipped or not) the crop was cut from and
returns heatmaps with Gaussian peaks (peak 255, sigma 2 heatmap pixels: the shape of
the training targets) at that person's ground-truth keypoints. Everything after the
network (flip averaging, the decoder, mapping back to the image, scoring, COCO
records, evaluation) is then the real code, so a correct pipeline must score close
to AP 1 and any geometric slip shows up as lost AP.

Everything the table is built from comes from the specification (tests/spec.py), never
from the package under test: the normalisation, the box extension and the affine crop
(the official transcription, so the crops are bit-identical to what a correct pipeline
feeds), the geometry crop_x = (x - ext_x1) * 192 / ext_w, heatmap_x = (crop_x + 0.5) / 4
- 0.5 (same for y with 256 / ext_h), and the flip order of the mirrored crop's channels.
A pipeline that extends, crops or un-flips differently therefore gets other heatmaps
than it expects and loses AP, instead of cancelling its own mistake out.
Crops are recognised by a hash of their float32
bytes; a crop that differs only in the last bits (e.g. a box converted from xywh with
other rounding) is recognised by a close match of a coarse thumbnail instead. Unknown
crops get all-zero heatmaps.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

from tests import spec

PathLike = Union[str, Path]

SIGMA = 2.0
PEAK = 255.0
# Thumbnail for the tolerant match: every 8th pixel of each channel.
_THUMB_STEP = 8
# Mean absolute difference (normalised units) under which two thumbnails are the same crop.
_THUMB_TOLERANCE = 0.02


def crop_digest(crop: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(crop, dtype=np.float32).tobytes()).hexdigest()


def _thumbnail(crop: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(crop[:, ::_THUMB_STEP, ::_THUMB_STEP], dtype=np.float32)


def box_iou_xywh(a, b) -> float:
    ax2, ay2 = a[0] + a[2], a[1] + a[3]
    bx2, by2 = b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def render_heatmaps(points_xy: np.ndarray, valid: np.ndarray, heatmap_size: Tuple[int, int]) -> np.ndarray:
    """K x H x W float32 Gaussians (peak 255, sigma 2) at heatmap coordinates; zeros where not valid."""
    height, width = heatmap_size
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64)
    maps = np.zeros((len(points_xy), height, width), dtype=np.float32)
    for k, ((x, y), ok) in enumerate(zip(points_xy, valid)):
        if ok:
            maps[k] = PEAK * np.exp(-((grid_x - x) ** 2 + (grid_y - y) ** 2) / (2 * SIGMA**2))
    return maps


def keypoints_to_heatmap(keypoints_xy: np.ndarray, ext_box, input_size, heatmap_size) -> np.ndarray:
    """Image pixels -> heatmap pixels through the crop of `ext_box` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in ext_box)
    in_h, in_w = input_size
    out_h, out_w = heatmap_size
    stride_x, stride_y = in_w / out_w, in_h / out_h
    crop_x = (keypoints_xy[:, 0] - x1) * (in_w / (x2 - x1))
    crop_y = (keypoints_xy[:, 1] - y1) * (in_h / (y2 - y1))
    return np.stack([(crop_x + 0.5) / stride_x - 0.5, (crop_y + 0.5) / stride_y - 0.5], axis=1)


class OracleBackend:
    """A Backend (`run(batch) -> [heatmaps]`) answering with ground-truth heatmaps."""

    name = "oracle"

    def __init__(self):
        self.heatmap_size = spec.OUTPUT_SHAPE
        self.num_keypoints = spec.NUM_KEYPOINTS
        self._by_digest: Dict[str, np.ndarray] = {}
        self._thumbs: List[np.ndarray] = []
        self._thumb_maps: List[np.ndarray] = []
        self.batches = 0
        self.crops_seen = 0
        self.exact_hits = 0
        self.near_hits = 0
        self.misses = 0

    # -- building the table ---------------------------------------------------
    def register(self, crop: np.ndarray, heatmaps: np.ndarray) -> None:
        self._by_digest[crop_digest(crop)] = heatmaps
        self._thumbs.append(_thumbnail(crop))
        self._thumb_maps.append(heatmaps)

    def register_person(self, normalized_image: np.ndarray, box_xyxy, keypoints: np.ndarray) -> None:
        """Register the crop of `box_xyxy` and its mirror with the heatmaps of `keypoints` (K x 3, COCO v)."""
        with spec.numpy1_scalar_promotion():
            ext = spec.official_extend_boxes(np.asarray(box_xyxy, np.float32))[0]
            crop = spec.official_crop(normalized_image, ext)
        points = keypoints_to_heatmap(keypoints[:, :2].astype(np.float64), ext, spec.INPUT_SHAPE, self.heatmap_size)
        valid = keypoints[:, 2] > 0
        self.register(crop, render_heatmaps(points, valid, self.heatmap_size))
        # Mirrored crop: channel k shows joint flip_order[k], x mirrored (47 - x).
        order = list(spec.FLIP_ORDER)
        mirrored = points.copy()
        mirrored[:, 0] = (self.heatmap_size[1] - 1) - mirrored[:, 0]
        flipped_crop = np.ascontiguousarray(crop[:, :, ::-1])
        self.register(flipped_crop, render_heatmaps(mirrored[order], valid[order], self.heatmap_size))

    @classmethod
    def from_coco(cls, ann_path: PathLike, dets_path: PathLike, image_dir: PathLike) -> "OracleBackend":
        """Table for every person detection of `dets_path` (COCO results, boxes from GT).

        Each detection is given the keypoints of the same-image annotation with the
        highest box IoU; detections of images that are not annotated are ignored.
        """
        oracle = cls()
        with open(ann_path) as handle:
            dataset = json.load(handle)
        with open(dets_path) as handle:
            dets = json.load(handle)
        images = {img["id"]: img for img in dataset["images"]}
        anns_by_image: Dict[int, list] = {}
        for ann in dataset["annotations"]:
            anns_by_image.setdefault(ann["image_id"], []).append(ann)
        dets_by_image: Dict[int, list] = {}
        for det in dets:
            if det.get("category_id", 1) == 1 and det["image_id"] in images:
                dets_by_image.setdefault(det["image_id"], []).append(det)
        for image_id, image_dets in sorted(dets_by_image.items()):
            image = cv2.imread(str(Path(image_dir) / images[image_id]["file_name"]), cv2.IMREAD_COLOR)
            if image is None:
                continue  # a test may hide an image on purpose
            normalized = spec.official_normalize(image)
            candidates = anns_by_image.get(image_id, [])
            for det in image_dets:
                x, y, w, h = det["bbox"]
                box = np.array([x, y, x + w, y + h], dtype=np.float32)
                if candidates:
                    best = max(candidates, key=lambda ann: box_iou_xywh(det["bbox"], ann["bbox"]))
                    keypoints = np.asarray(best["keypoints"], dtype=np.float64).reshape(-1, 3)
                else:
                    keypoints = np.zeros((oracle.num_keypoints, 3))
                oracle.register_person(normalized, box, keypoints)
        return oracle

    # -- the Backend interface --------------------------------------------------
    def _lookup(self, crop: np.ndarray) -> np.ndarray:
        found = self._by_digest.get(crop_digest(crop))
        if found is not None:
            self.exact_hits += 1
            return found
        if self._thumbs:
            thumb = _thumbnail(crop)
            errors = [float(np.mean(np.abs(t - thumb))) for t in self._thumbs]
            best = int(np.argmin(errors))
            if errors[best] < _THUMB_TOLERANCE:
                self.near_hits += 1
                return self._thumb_maps[best]
        self.misses += 1
        return np.zeros((self.num_keypoints, *self.heatmap_size), dtype=np.float32)

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        batch = np.asarray(batch, dtype=np.float32)
        self.batches += 1
        self.crops_seen += len(batch)
        out = np.stack([self._lookup(crop) for crop in batch]) if len(batch) else np.zeros(
            (0, self.num_keypoints, *self.heatmap_size), np.float32
        )
        return [out.astype(np.float32)]

    def close(self) -> None:
        pass


class FlatHeatmapsBackend:
    """A stand-in network that "predicts" flat heatmaps for every crop and counts the crops.

    For tests of the plumbing (which boxes are run, what is written), not of accuracy.
    """

    name = "flat"

    def __init__(self, num_keypoints: int = 17, heatmap_size: Tuple[int, int] = (64, 48)):
        self.shape = (num_keypoints, *heatmap_size)
        self.crops = 0

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        self.crops += len(batch)
        return [np.zeros((len(batch), *self.shape), np.float32)]
