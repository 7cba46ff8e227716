"""`PoseEstimator`: MSPN keypoints for given person boxes, batched across images.

preprocess (pose/preprocess.py) -> backend -> postprocess (pose/postprocess.py), with
the persons of many images sharing forward passes. Crops are cut lazily, one batch at
a time, and each batch's heatmaps are decoded as soon as they come back, so memory is
bounded by the batch size however many boxes an image has (only keypoints, 17 x 3
floats per person, are kept until the image is finished).
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Deque, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from mspn_cli.config import PoseConfig, load_pose_config
from mspn_cli.detection.result import Detections
from mspn_cli.io.sources import prefetch
from mspn_cli.pose.postprocess import average_flip, decode_heatmaps, instance_scores
from mspn_cli.pose.preprocess import crop_persons, extend_box, normalize_image
from mspn_cli.pose.result import PoseResult
from mspn_cli.runtime.network import NetworkRunner
from mspn_cli.settings import RunSettings

log = logging.getLogger(__name__)

__all__ = ["PoseEstimator"]


@dataclass
class _PreparedImage:
    key: Any
    detections: Detections
    ext_boxes: np.ndarray
    normalized: Optional[np.ndarray]  # H x W x 3 float32 until every crop is cut
    keypoints: Optional[np.ndarray] = None  # N x K x 3, decoded batch by batch
    queued: int = 0  # crops handed to a batch so far
    filled: int = 0  # crops whose heatmaps are back

    @property
    def count(self) -> int:
        return len(self.detections)


class PoseEstimator(NetworkRunner):
    """MSPN keypoints for given person boxes; the Python API behind `mspn keypoints`.

    `backend` is a backend name ("auto", "megengine", "onnxruntime", "mge-lite") or any
    object with `run(batch) -> [heatmaps]`; the latter replaces the network (tests use
    it to feed ground-truth heatmaps).
    """

    def __init__(
        self,
        config: Optional[PoseConfig] = None,
        weights: Optional[str] = None,
        device: str = "cpu",
        backend: Union[str, Any] = "auto",
        flip: Optional[bool] = None,
        batch_size: Optional[int] = None,
        progress: bool = False,
        precision: str = "fp32",
    ):
        from mspn_cli.runtime.devices import is_cuda_device

        self.config = config or load_pose_config()
        self.flip = self.config.test.flip if flip is None else bool(flip)
        default_batch = self.config.test.gpu_batch_size if is_cuda_device(device) else self.config.test.batch_size
        self.batch_size = int(batch_size or default_batch)
        RunSettings(batch_size=self.batch_size)  # the one range check of --batch-size
        height, width = self.config.model.input_size
        self.attach_backend(backend, weights, device, progress, graph_tag=f"{height}x{width}", precision=precision)

    @classmethod
    def from_settings(cls, settings: RunSettings, backend: Union[str, Any, None] = None) -> "PoseEstimator":
        config = load_pose_config(settings.config) if settings.config else None
        return cls(config, settings.weights, device=settings.device, backend=backend or settings.backend,
                   flip=settings.flip, batch_size=settings.batch_size, progress=settings.progress,
                   precision=settings.precision)

    # -- preprocess ---------------------------------------------------------
    def prepare(self, key: Any, image_bgr: np.ndarray, detections: Detections) -> _PreparedImage:
        """Extend the boxes and normalise the image (runs on the prefetch thread)."""
        cfg = self.config
        ext = extend_box(detections.boxes, cfg.preprocess.box_extension, cfg.aspect_ratio).reshape(-1, 4)
        normalized = normalize_image(image_bgr, cfg.preprocess.mean, cfg.preprocess.std) if len(detections) else None
        return _PreparedImage(key, detections, ext, normalized)

    # -- inference ----------------------------------------------------------
    def _forward(self, crops: np.ndarray) -> np.ndarray:
        """Heatmaps for a chunk of person crops, flip-averaged when flip test is on."""
        if self.flip:
            batch = np.concatenate([crops, crops[:, :, :, ::-1]], axis=0)
            heatmaps = np.asarray(self.backend.run(batch)[0], dtype=np.float32)
            count = len(crops)
            return average_flip(heatmaps[:count], heatmaps[count:], self.config.test.flip_order)
        return np.asarray(self.backend.run(np.ascontiguousarray(crops))[0], dtype=np.float32)

    # -- postprocess --------------------------------------------------------
    def _finish(self, prepared: _PreparedImage) -> PoseResult:
        cfg = self.config
        if prepared.count == 0:
            return PoseResult.empty(cfg.model.num_keypoints)
        keypoints = prepared.keypoints
        dets = prepared.detections
        return PoseResult(
            keypoints=keypoints,
            boxes=dets.boxes,
            box_scores=dets.scores,
            scores=instance_scores(keypoints, dets.scores),
            ext_boxes=prepared.ext_boxes,
        )

    def _decode(self, heatmaps: np.ndarray, ext_boxes: np.ndarray) -> np.ndarray:
        """Keypoints of some persons; each person is decoded on its own, so chunks do not change bits."""
        cfg = self.config
        dec = cfg.decoder
        return decode_heatmaps(heatmaps, ext_boxes, cfg.model.input_size, dec.heat_range, dec.blur_kernel,
                               dec.border, dec.shift_steps)

    def estimate(self, image_bgr: np.ndarray, boxes_xyxy, box_scores=None) -> PoseResult:
        """Keypoints of the persons in `boxes_xyxy` (N x 4) of one BGR image."""
        detections = Detections(boxes_xyxy, box_scores)
        for _, result in self.estimate_many([(None, image_bgr, detections)]):
            return result
        raise AssertionError("estimate_many yields one result per item")

    def estimate_many(
        self, items: Iterable[Tuple[Any, np.ndarray, Detections]], streaming: bool = False
    ) -> Iterator[Tuple[Any, PoseResult]]:
        """Batch the persons of many images into shared forward passes.

        `items` yields (key, image_bgr, detections); results come back in the same
        order. With `streaming`, each item's result is yielded before the next item is
        read (a live source never waits for later frames); otherwise persons of later
        images fill the batch.
        """
        pending: Deque[_PreparedImage] = collections.deque()
        queue: List[Tuple[_PreparedImage, int, int]] = []  # (image, first crop, count) in the next batch

        def run_batch() -> None:
            if not queue:
                return
            cfg = self.config
            crops = np.concatenate(
                [crop_persons(prep.normalized, prep.ext_boxes[start : start + take], cfg.model.input_size)
                 for prep, start, take in queue],
                axis=0,
            )
            started = time.perf_counter()
            heatmaps = self._forward(crops)
            log.debug("MSPN forward: %d persons in %.2f s", len(crops), time.perf_counter() - started)
            offset = 0
            for prep, start, take in queue:
                decoded = self._decode(heatmaps[offset : offset + take], prep.ext_boxes[start : start + take])
                if prep.keypoints is None:
                    prep.keypoints = np.empty((prep.count, *decoded.shape[1:]), np.float32)
                prep.keypoints[start : start + take] = decoded
                prep.filled += take
                offset += take
                if prep.queued == prep.count:
                    prep.normalized = None  # every crop is cut: release the image
            queue.clear()

        def finished() -> Iterator[Tuple[Any, PoseResult]]:
            while pending and pending[0].filled == pending[0].count:
                prep = pending.popleft()
                yield prep.key, self._finish(prep)

        def load(item):
            key, image, detections = item
            return self.prepare(key, image, detections)

        if streaming:  # no read-ahead: a live source's frame is finished before the next is read
            prepared: Iterable[Tuple[Any, Any, Optional[BaseException]]] = ((None, load(item), None) for item in items)
        else:
            prepared = prefetch(items, load, depth=2)
        queued_total = 0
        for _, prep, error in prepared:
            if error is not None:
                raise error
            pending.append(prep)
            while prep.queued < prep.count:
                take = min(self.batch_size - queued_total, prep.count - prep.queued)
                queue.append((prep, prep.queued, take))
                prep.queued += take
                queued_total += take
                if queued_total == self.batch_size:
                    run_batch()
                    queued_total = 0
                    yield from finished()
            if streaming:
                run_batch()
                queued_total = 0
            yield from finished()
        run_batch()
        yield from finished()
