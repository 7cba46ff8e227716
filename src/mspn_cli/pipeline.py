"""The composed pipeline: person detection, then pose estimation, batched across images.

`PersonDetector` and `PoseEstimator` each run preprocess -> backend -> postprocess;
`PosePipeline` chains them. This module neither parses arguments nor prints.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Deque, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from mspn_cli.config import DetectorConfig, PoseConfig, load_detector_config, load_pose_config
from mspn_cli.errors import UsageError
from mspn_cli.pose.postprocess import average_flip, decode_heatmaps, instance_scores
from mspn_cli.pose.preprocess import crop_persons, extend_box, normalize_image
from mspn_cli.io.sources import prefetch

log = logging.getLogger(__name__)

__all__ = ["PoseResult", "PoseEstimator", "PersonDetector", "PosePipeline", "load_network"]


@dataclass
class PoseResult:
    """Keypoints of the persons of one image (N may be 0)."""

    keypoints: np.ndarray  # N x 17 x 3: x, y (image pixels), score
    boxes: np.ndarray  # N x 4 detector boxes, xyxy
    box_scores: np.ndarray  # N
    scores: np.ndarray  # N: mean keypoint score x box score (official instance score)
    ext_boxes: np.ndarray = field(default=None)  # N x 4 extended boxes the crops were cut from

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def empty(cls, num_keypoints: int = 17) -> "PoseResult":
        return cls(
            keypoints=np.zeros((0, num_keypoints, 3), np.float32),
            boxes=np.zeros((0, 4), np.float32),
            box_scores=np.zeros((0,), np.float32),
            scores=np.zeros((0,), np.float32),
            ext_boxes=np.zeros((0, 4), np.float32),
        )


def _is_backend_instance(backend: Any) -> bool:
    return hasattr(backend, "run") and callable(backend.run)


def load_network(model_name: str, weights_config, weights: Optional[str], progress: bool = True, device: str = "cpu"):
    """Build a network and load weights into it strictly. Returns (model, weights path, sha256)."""
    from mspn_cli.runtime.megengine_backend import use_device
    from mspn_cli.models import build_model
    from mspn_cli.weights import load_checkpoint, load_weights_into, resolve_weights, sha256_file

    started = time.perf_counter()
    path = resolve_weights(weights, weights_config, progress=progress)
    use_device(device)
    model = build_model(model_name)
    load_weights_into(model, load_checkpoint(path), str(path))
    sha256 = sha256_file(path)
    log.info("%s: weights %s (sha256 %s) loaded in %.1f s", model_name, path, sha256[:12], time.perf_counter() - started)
    return model, path, sha256


@dataclass
class _PreparedImage:
    key: Any
    boxes: np.ndarray
    box_scores: np.ndarray
    ext_boxes: np.ndarray
    crops: np.ndarray  # N x 3 x H x W
    heatmaps: Optional[np.ndarray] = None  # filled chunk by chunk
    filled: int = 0


class _NetworkRunner:
    """Loads a configured network's weights and puts it behind a backend."""

    config: Any

    def _attach_backend(self, backend: Union[str, Any], weights: Optional[str], device: str, progress: bool, graph_tag: str) -> None:
        self.weights_path = None
        self.weights_sha256 = ""
        if _is_backend_instance(backend):
            self.backend = backend
        else:
            from mspn_cli.runtime import create_backend

            name = self.config.model.name
            model, self.weights_path, self.weights_sha256 = load_network(name, self.config.weights, weights, progress, device)
            # Exported graphs are cached per network, input layout and weights.
            cache_key = f"{name}-{graph_tag}-{self.weights_sha256[:16]}"
            started = time.perf_counter()
            self.backend = create_backend(backend, model, device=device, cache_key=cache_key)
            log.info("%s: backend ready in %.1f s", self.config.model.name, time.perf_counter() - started)
        self.backend_name = getattr(self.backend, "name", type(self.backend).__name__)
        log.info("%s: running on backend '%s', device %s", self.config.model.name, self.backend_name, device)


class PoseEstimator(_NetworkRunner):
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
    ):
        self.config = config or load_pose_config()
        self.flip = self.config.test.flip if flip is None else bool(flip)
        self.batch_size = int(batch_size or self.config.test.batch_size)
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        height, width = self.config.model.input_size
        self._attach_backend(backend, weights, device, progress, graph_tag=f"{height}x{width}")

    # -- preprocess ---------------------------------------------------------
    def prepare(self, key: Any, image_bgr: np.ndarray, boxes_xyxy, box_scores=None) -> _PreparedImage:
        """Normalise the image and cut the person crops (runs on the prefetch thread)."""
        cfg = self.config
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        scores = (
            np.ones(len(boxes), np.float32) if box_scores is None else np.asarray(box_scores, np.float32).reshape(-1)
        )
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        ext = extend_box(boxes, cfg.preprocess.box_extension, cfg.aspect_ratio)
        if len(boxes):
            normalized = normalize_image(image_bgr, cfg.preprocess.mean, cfg.preprocess.std)
            crops = crop_persons(normalized, ext, cfg.model.input_size)
        else:
            crops = np.zeros((0, 3, *cfg.model.input_size), np.float32)
        return _PreparedImage(key, boxes, scores, ext.reshape(-1, 4), crops)

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
        if len(prepared.boxes) == 0:
            return PoseResult.empty(cfg.model.num_keypoints)
        dec = cfg.decoder
        keypoints = decode_heatmaps(
            prepared.heatmaps,
            prepared.ext_boxes,
            cfg.model.input_size,
            dec.heat_range,
            dec.blur_kernel,
            dec.border,
            dec.shift_steps,
        )
        return PoseResult(
            keypoints=keypoints,
            boxes=prepared.boxes,
            box_scores=prepared.box_scores,
            scores=instance_scores(keypoints, prepared.box_scores),
            ext_boxes=prepared.ext_boxes,
        )

    def estimate(self, image_bgr: np.ndarray, boxes_xyxy, box_scores=None) -> PoseResult:
        """Keypoints of the persons in `boxes_xyxy` (N x 4) of one BGR image."""
        for _, result in self.estimate_many([(None, image_bgr, boxes_xyxy, box_scores)]):
            return result
        raise AssertionError("unreachable")

    def estimate_many(self, items: Iterable[Tuple[Any, np.ndarray, Any, Any]]) -> Iterator[Tuple[Any, PoseResult]]:
        """Batch the persons of many images into shared forward passes.

        `items` yields (key, image_bgr, boxes_xyxy, box_scores); results come back in
        the same order. Crops are prepared on a background thread while the network
        runs, and at most about one batch of crops is held beyond the current images.
        """

        def load(item):
            key, image, boxes, scores = item
            return self.prepare(key, image, boxes, scores)

        pending: Deque[_PreparedImage] = collections.deque()
        queued: List[Tuple[_PreparedImage, int, int]] = []  # (image, first crop, count) not yet sent
        queued_count = 0

        def run_queued() -> None:
            nonlocal queued, queued_count
            if not queued_count:
                queued = []
                return
            chunk = np.concatenate([prep.crops[start : start + take] for prep, start, take in queued], axis=0)
            started = time.perf_counter()
            heatmaps = self._forward(chunk)
            log.debug("MSPN forward: %d persons in %.2f s", len(chunk), time.perf_counter() - started)
            offset = 0
            for prep, start, take in queued:
                if prep.heatmaps is None:
                    prep.heatmaps = np.empty((len(prep.crops), *heatmaps.shape[1:]), np.float32)
                prep.heatmaps[start : start + take] = heatmaps[offset : offset + take]
                prep.filled += take
                offset += take
            queued = []
            queued_count = 0

        def ready() -> Iterator[Tuple[Any, PoseResult]]:
            while pending and pending[0].filled == len(pending[0].crops):
                prep = pending.popleft()
                result = self._finish(prep)
                prep.crops = None  # release the crops as soon as the image is done
                yield prep.key, result

        for item, prep, error in prefetch(items, load, depth=2):
            if error is not None:
                raise error
            pending.append(prep)
            start, count = 0, len(prep.crops)
            while start < count:
                take = min(self.batch_size - queued_count, count - start)
                queued.append((prep, start, take))
                queued_count += take
                start += take
                if queued_count == self.batch_size:
                    run_queued()
                    yield from ready()
            yield from ready()
        run_queued()
        yield from ready()


class PersonDetector(_NetworkRunner):
    """RetinaNet person boxes; the Python API behind `mspn detect`."""

    def __init__(
        self,
        config: Optional[DetectorConfig] = None,
        weights: Optional[str] = None,
        device: str = "cpu",
        backend: Union[str, Any] = "auto",
        det_size: Optional[Tuple[int, int]] = None,
        box_thr: float = 0.05,
        progress: bool = False,
        max_persons: Optional[int] = None,
    ):
        import dataclasses

        self.max_persons = max_persons
        self.config = config or load_detector_config()
        if det_size is not None:
            short, longest = det_size
            if not (32 <= short <= longest <= 4096):
                raise UsageError(f"--det-size must satisfy 32 <= SHORT <= MAX <= 4096, got {short},{longest}")
            self.config = dataclasses.replace(
                self.config,
                preprocess=dataclasses.replace(self.config.preprocess, short_side=int(short), max_side=int(longest)),
            )
        self.box_thr = float(box_thr)
        self._attach_backend(backend, weights, device, progress, graph_tag="dynamic")

    def detect(self, image_bgr: np.ndarray) -> np.ndarray:
        """Person boxes of one BGR image: D x 5 [x1, y1, x2, y2, score], score > box_thr."""
        from mspn_cli.detection.postprocess import detections_for_image
        from mspn_cli.detection.preprocess import prepare_detector_batch

        pre = self.config.preprocess
        batch, im_infos = prepare_detector_batch([image_bgr], pre.short_side, pre.max_side, pre.size_divisor)
        outputs = self.backend.run(batch)
        levels = len(self.config.anchors.strides)
        logits, offsets = outputs[:levels], outputs[levels:]
        cfg = self.config
        dets = detections_for_image(
            logits, offsets, im_infos[0], cfg.anchors, cfg.postprocess, num_classes=cfg.model.num_classes
        )
        persons = dets[dets[:, 5] == self.config.model.person_class]
        # Boxes clipped to zero width or height (entirely off-image) cannot be cropped.
        valid = (persons[:, 2] > persons[:, 0]) & (persons[:, 3] > persons[:, 1])
        persons = persons[valid & (persons[:, 4] > self.box_thr)]
        if self.max_persons is not None:
            persons = persons[np.argsort(-persons[:, 4], kind="stable")[: self.max_persons]]
        return np.ascontiguousarray(persons[:, :5], dtype=np.float32)

    def detect_many(self, items: Iterable[Tuple[Any, np.ndarray]]) -> Iterator[Tuple[Any, np.ndarray]]:
        for key, image in items:
            yield key, self.detect(image)


class PosePipeline:
    """Detection followed by pose estimation over a stream of images."""

    def __init__(self, detector: PersonDetector, estimator: PoseEstimator):
        self.detector = detector
        self.estimator = estimator

    def run(self, items: Iterable[Tuple[Any, np.ndarray]]) -> Iterator[Tuple[Any, PoseResult]]:
        """(key, image) pairs in, (key, PoseResult) out, in order."""

        def detected():
            for key, image in items:
                dets = self.detector.detect(image)
                yield key, image, dets[:, :4], dets[:, 4]

        yield from self.estimator.estimate_many(detected())
