"""The local engine: every task in this process, through one `PosePipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Sequence

from mspn_cli.io.tasks import ImageOutcome, ImageTask
from mspn_cli.pipeline import PosePipeline
from mspn_cli.settings import RunSettings

__all__ = ["LocalEngine"]


class LocalEngine:
    def __init__(self, pipeline: PosePipeline):
        self.pipeline = pipeline

    @classmethod
    def from_settings(cls, settings: RunSettings, need_detector: bool, pose_backend: Any = None,
                      detector_backend: Any = None) -> "LocalEngine":
        return cls(PosePipeline.from_settings(settings, need_detector, pose_backend=pose_backend,
                                              detector_backend=detector_backend))

    @property
    def precision(self) -> str:
        return self.pipeline.precision

    def run(self, tasks: Sequence[ImageTask], annotated: Dict[int, Path]) -> Iterator[ImageOutcome]:
        """Outcomes keep the decoded image of tasks to be drawn; the caller's writer draws them."""
        yield from self.pipeline.run_tasks(tasks, keep_image=lambda task: task.index in annotated)

    def close(self) -> None:
        pass
