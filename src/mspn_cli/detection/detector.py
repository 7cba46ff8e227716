"""`PersonDetector`: RetinaNet person boxes, preprocess -> backend -> postprocess."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from mspn_cli.config import DetectorConfig, load_detector_config
from mspn_cli.detection.postprocess import detections_for_image
from mspn_cli.detection.preprocess import prepare_detector_batch
from mspn_cli.detection.result import Detections
from mspn_cli.errors import WeightsError
from mspn_cli.runtime.network import NetworkRunner
from mspn_cli.settings import RunSettings

__all__ = ["PersonDetector"]


class PersonDetector(NetworkRunner):
    """RetinaNet person boxes; the Python API behind `mspn detect`.

    `box_thr` is the minimum person score (strictly above); None takes the config's
    `postprocess.person_thr`.
    """

    def __init__(
        self,
        config: Optional[DetectorConfig] = None,
        weights: Optional[str] = None,
        device: str = "cpu",
        backend: Union[str, Any] = "auto",
        det_size: Optional[Tuple[int, int]] = None,
        box_thr: Optional[float] = None,
        progress: bool = False,
        max_persons: Optional[int] = None,
        precision: str = "fp32",
    ):
        RunSettings(det_size=det_size, box_thr=box_thr, max_persons=max_persons)  # the one range check
        self.max_persons = max_persons
        self.config = config or load_detector_config()
        if det_size is not None:
            short, longest = det_size
            self.config = dataclasses.replace(
                self.config,
                preprocess=dataclasses.replace(self.config.preprocess, short_side=int(short), max_side=int(longest)),
            )
        self.box_thr = float(self.config.postprocess.person_thr if box_thr is None else box_thr)
        try:
            self.attach_backend(backend, weights, device, progress, graph_tag="dynamic", precision=precision)
        except WeightsError as exc:  # the weights layer's hints name --weights, MSPN's option
            raise WeightsError(str(exc).replace("--weights PATH", "--detector-weights PATH")) from None

    @classmethod
    def from_settings(cls, settings: RunSettings, backend: Union[str, Any, None] = None) -> "PersonDetector":
        config = load_detector_config(settings.detector_config) if settings.detector_config else None
        return cls(config, settings.detector_weights, device=settings.device, backend=backend or settings.backend,
                   det_size=settings.det_size, box_thr=settings.box_thr, progress=settings.progress,
                   max_persons=settings.max_persons, precision=settings.precision)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Person boxes of one BGR image scoring above `box_thr`, best first."""
        cfg = self.config
        pre = cfg.preprocess
        batch, im_infos = prepare_detector_batch([image_bgr], pre.short_side, pre.max_side, pre.size_divisor)
        outputs = self.backend.run(batch)
        levels = len(cfg.anchors.strides)
        logits, offsets = outputs[:levels], outputs[levels:]
        dets = detections_for_image(logits, offsets, im_infos[0], cfg.anchors, cfg.postprocess, num_classes=cfg.model.num_classes)
        persons = dets[dets[:, 5] == cfg.model.person_class]
        # Boxes clipped to zero width or height (entirely off-image) cannot be cropped.
        valid = (persons[:, 2] > persons[:, 0]) & (persons[:, 3] > persons[:, 1])
        persons = persons[valid & (persons[:, 4] > self.box_thr)]
        return Detections.from_array(persons[:, :5]).best(self.max_persons)

    def detect_many(self, items: Iterable[Tuple[Any, np.ndarray]]) -> Iterator[Tuple[Any, Detections]]:
        for key, image in items:
            yield key, self.detect(image)
