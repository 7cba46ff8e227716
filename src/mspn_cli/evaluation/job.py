"""One evaluation run, or one shard of it, as plain data: what a worker process receives as JSON.

`EvalJob` names the inputs, the outputs and the `RunSettings`; `prepare_eval` reads the
annotations and the detections, selects the boxes and builds the `PosePipeline`;
`PreparedEval.run` runs it. `eval-coco` in one process and each `--workers` process go
through the same two steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mspn_cli.errors import UsageError
from mspn_cli.evaluation.annotations import CocoKeypointAnnotations, load_annotations
from mspn_cli.evaluation.run import EvalRun, ProgressCallback, resume_settings, run_keypoint_eval
from mspn_cli.evaluation.selection import DetectionSelection, select_person_detections
from mspn_cli.evaluation.summary import file_sha256
from mspn_cli.settings import RunSettings

__all__ = ["EvalJob", "PreparedEval", "prepare_eval", "load_selection"]


@dataclass(frozen=True)
class EvalJob:
    settings: RunSettings
    annotations: str  # person-keypoints annotation file
    images: str  # folder of the annotated images
    dets: str  # detections file (COCO results format)
    results: str  # results file, or the shard file when `shard` is set
    shard: Optional[Tuple[int, int]] = None
    resume: bool = True
    # What ties checkpoints and shards to their boxes; None = the sha256 of `dets`.
    boxes_fingerprint: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "annotations": self.annotations,
            "images": self.images,
            "dets": self.dets,
            "results": self.results,
            "shard": None if self.shard is None else list(self.shard),
            "resume": self.resume,
            "boxes_fingerprint": self.boxes_fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "EvalJob":
        known = {"settings", "annotations", "images", "dets", "results", "shard", "resume", "boxes_fingerprint"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown evaluation job fields: {', '.join(unknown)}")
        shard = data.get("shard")
        return cls(
            settings=RunSettings.from_dict(data["settings"]),
            annotations=str(data["annotations"]),
            images=str(data["images"]),
            dets=str(data["dets"]),
            results=str(data["results"]),
            shard=None if shard is None else (int(shard[0]), int(shard[1])),
            resume=bool(data.get("resume", True)),
            boxes_fingerprint=data.get("boxes_fingerprint"),
        )


def load_selection(dets: str, annotations: CocoKeypointAnnotations) -> DetectionSelection:
    """The boxes of a detections file that the official test keeps for these annotations."""
    from mspn_cli.io.detections import load_detections

    return select_person_detections(load_detections(dets, require_coco_fields=True), annotations.image_ids)


@dataclass
class PreparedEval:
    """A job with its inputs read and its networks built, ready to run."""

    job: EvalJob
    annotations: CocoKeypointAnnotations
    selection: DetectionSelection
    pipeline: Any  # PosePipeline
    settings: Dict[str, Any]  # what a checkpoint or the other shards must agree on
    info: Dict[str, Any]  # descriptive only (paths, batch size, backend)

    def run(self, on_progress: Optional[ProgressCallback] = None, engine: Any = None) -> EvalRun:
        """`engine`: where the images run (`engines.open_engine`); None: `pipeline`, in this process."""
        return run_keypoint_eval(
            self.pipeline, self.annotations, self.selection, self.job.results, shard=self.job.shard,
            settings=self.settings, info=self.info, resume=self.job.resume, on_progress=on_progress, engine=engine,
        )


def prepare_eval(job: EvalJob, annotations: Optional[CocoKeypointAnnotations] = None,
                 selection: Optional[DetectionSelection] = None, pipeline: Any = None) -> PreparedEval:
    """Read what `job` names (unless given) and build its pipeline (given boxes: no detector)."""
    from mspn_cli.pipeline import PosePipeline

    if annotations is None:
        annotations = load_annotations(job.annotations, job.images)
    if selection is None:
        selection = load_selection(job.dets, annotations)
    if pipeline is None:
        # Every kept box is a sample: no score threshold, no cap per image (reference §2).
        pipeline = PosePipeline.from_settings(job.settings.replace(box_thr=None, max_persons=None), need_detector=False)
    estimator = pipeline.estimator
    fingerprint = job.boxes_fingerprint or f"file sha256:{file_sha256(job.dets)}"
    settings = resume_settings(estimator, fingerprint, annotations)
    info = {
        "box_source": job.dets,
        "annotations": job.annotations,
        "images": job.images,
        "batch_size": estimator.batch_size,
        "device": job.settings.device,
        "backend": estimator.backend_name,
        "precision": getattr(estimator, "precision", None) or "fp32",
    }
    return PreparedEval(job, annotations, selection, pipeline, settings, info)
