"""The one loop that turns images and frames into `PoseResult`s.

detection (detection/) -> pose estimation (pose/), persons batched across images.
`PosePipeline.run` works on decoded images; `PosePipeline.run_tasks` on planned image
tasks (files), decoding ahead on a background thread and turning a bad file into an
outcome with its error, so a batch goes on. Every command that produces keypoints
(`keypoints` on images or video, `eval-coco`, the engines) goes through here. This
module neither parses options nor prints.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Callable, Deque, Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from mspn_cli.detection.detector import PersonDetector
from mspn_cli.detection.result import Detections
from mspn_cli.errors import MspnError
from mspn_cli.io.sources import prefetch, read_image
from mspn_cli.io.tasks import ImageOutcome, ImageTask
from mspn_cli.pose.estimator import PoseEstimator
from mspn_cli.pose.result import PoseResult
from mspn_cli.settings import RunSettings

log = logging.getLogger(__name__)

__all__ = ["PipelineItem", "PosePipeline", "PoseEstimator", "PersonDetector", "PoseResult", "Detections"]


@dataclass
class PipelineItem:
    """One image or frame: `detections` are given person boxes, or None to run the detector."""

    key: Any
    image: np.ndarray
    detections: Optional[Detections] = None


class PosePipeline:
    """Detection (unless boxes are given) followed by pose estimation, over a stream of images.

    Given boxes keep those scoring at least `box_thr` (all when None) and then the
    `max_persons` best, exactly as detected boxes do.
    """

    def __init__(self, estimator: PoseEstimator, detector: Optional[PersonDetector] = None,
                 box_thr: Optional[float] = None, max_persons: Optional[int] = None):
        self.estimator = estimator
        self.detector = detector
        self.box_thr = box_thr
        self.max_persons = max_persons

    @classmethod
    def from_settings(cls, settings: RunSettings, need_detector: bool = True,
                      pose_backend: Union[str, Any, None] = None, detector_backend: Union[str, Any, None] = None) -> "PosePipeline":
        """Build the networks a run needs; the detector first, so its download shows first."""
        detector = PersonDetector.from_settings(settings, detector_backend) if need_detector else None
        estimator = PoseEstimator.from_settings(settings, pose_backend)
        return cls(estimator, detector, box_thr=settings.box_thr, max_persons=settings.max_persons)

    def persons_of(self, image: np.ndarray, given: Optional[Detections]) -> Detections:
        if given is None:
            if self.detector is None:
                raise MspnError("no person boxes given and no detector loaded")
            return self.detector.detect(image)
        return given.above(self.box_thr).best(self.max_persons)

    def run(self, items: Iterable[PipelineItem], streaming: bool = False) -> Iterator[Tuple[Any, PoseResult]]:
        """PipelineItems in, (key, PoseResult) out, in order.

        With `streaming`, every item is finished before the next is read (live video).
        """

        def with_persons():
            for item in items:
                yield item.key, item.image, self.persons_of(item.image, item.detections)

        yield from self.estimator.estimate_many(with_persons(), streaming=streaming)

    def run_tasks(self, tasks: Iterable[ImageTask], keep_image: Callable[[ImageTask], bool] = lambda task: False,
                  records: bool = True) -> Iterator[ImageOutcome]:
        """Planned image tasks in, one `ImageOutcome` per task out (failures included).

        Outcomes of failed tasks may come before those of earlier tasks still in a batch;
        `outcome.task.index` gives the order to write them in.
        """
        failed: Deque[ImageOutcome] = collections.deque()
        notes = {}
        decode_notes = {}  # filled on the prefetch thread before the task's image is handed over
        sizes = {}  # task index -> (width, height) of its decoded image

        def decode(task: ImageTask) -> np.ndarray:
            remarks: list = []
            image = read_image(task.path, allow_truncated=task.allow_truncated, notes=remarks)
            if remarks:
                decode_notes[task.index] = remarks
            return image

        def items() -> Iterator[PipelineItem]:
            runnable = []
            for task in tasks:
                if task.error is not None:
                    failed.append(ImageOutcome(task, error=f"{task.path}: {task.error}"))
                else:
                    runnable.append(task)
            for task, image, error in prefetch(runnable, decode, depth=4):
                if error is not None:
                    failed.append(ImageOutcome(task, error=_reason(task, error)))
                    continue
                given = task.given
                if given is not None and len(given) and not task.eval_sample:
                    outside = given.outside(*image.shape[:2])
                    if outside.any():
                        notes[task.index] = (
                            f"{task.path}: dropped {int(outside.sum())} box(es) lying entirely outside "
                            f"the {image.shape[1]}x{image.shape[0]} image"
                        )
                        given = given.select(~outside)
                sizes[task.index] = (int(image.shape[1]), int(image.shape[0]))
                yield PipelineItem(task, image, given)

        for task_image, result in self._run_keeping_images(items(), keep_image):
            while failed:
                yield failed.popleft()
            task, image = task_image
            outcome = ImageOutcome(task, result=result, image=image, image_size=sizes.pop(task.index, None))
            outcome.notes.extend(decode_notes.pop(task.index, ()))
            if task.index in notes:
                outcome.notes.append(notes.pop(task.index))
            if records:
                if task.eval_sample:
                    outcome.records = result.to_records(task.image_id, task.file_name or None)
                else:
                    outcome.records = result.to_records(task.image_id, task.file_name, extra={"path": task.path})
            yield outcome
        while failed:
            yield failed.popleft()

    def _run_keeping_images(self, items: Iterator[PipelineItem], keep_image) -> Iterator[Tuple[Tuple[ImageTask, Any], PoseResult]]:
        def keyed():
            for item in items:
                task = item.key
                yield PipelineItem((task, item.image if keep_image(task) else None), item.image, item.detections)

        yield from self.run(keyed())


def _reason(task: ImageTask, error: BaseException) -> str:
    text = str(error) if isinstance(error, MspnError) else f"cannot read image: {error}"
    return text if text.startswith(task.path) else f"{task.path}: {text}"

