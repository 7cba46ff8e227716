"""The evaluation run: annotated images and their kept boxes through `PosePipeline`, resumably.

Images go in sorted-id order; each finished image is appended to the checkpoint before
the next is reported, and the final file is always assembled from the per-image records
in sorted-id order, so an interrupted and resumed run, or shards merged later, write a
results file byte-identical to one uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from mspn_cli.errors import InputError
from mspn_cli.evaluation.annotations import CocoKeypointAnnotations
from mspn_cli.evaluation.checkpoint import Checkpoint, checkpoint_path_for, jsonable_roundtrip
from mspn_cli.evaluation.selection import DetectionSelection
from mspn_cli.evaluation.shards import select_shard, write_shard
from mspn_cli.evaluation.summary import image_set_digest

PathLike = Union[str, Path]

__all__ = ["EvalRun", "run_keypoint_eval", "run_person_detection", "write_results", "resume_settings", "DECODER_NAME"]

# Names the heat-map decoder in the settings a checkpoint or shard must agree on.
DECODER_NAME = "official (quirk-faithful)"

ProgressCallback = Callable[[int, int], None]  # (images finished, images to do)


@dataclass
class EvalRun:
    """What `run_keypoint_eval` did."""

    results_path: Path
    records: List[Dict[str, Any]]
    image_ids: List[int]  # images this run was responsible for (sorted)
    images_with_detections: int
    detections_used: int
    missing_images: List[Tuple[int, str]]  # (image_id, reason), skipped
    resumed_images: int  # finished images taken over from a checkpoint
    processed_images: int  # images run through the network by this call
    shard: Optional[Tuple[int, int]] = None
    checkpoint_kept: bool = False


def resume_settings(estimator: Any, boxes_fingerprint: str, annotations: CocoKeypointAnnotations) -> Dict[str, Any]:
    """What must be equal for a checkpoint to be resumed or for shards to be merged."""
    cfg = estimator.config
    return {
        "boxes": boxes_fingerprint,
        "annotation_images": image_set_digest(annotations.image_ids),
        "model": cfg.model.name,
        "input_size": list(cfg.model.input_size),
        "flip": bool(estimator.flip),
        "decoder": DECODER_NAME,
        "weights_sha256": estimator.weights_sha256,
        # fp32 is left out so checkpoints from before --precision existed stay resumable
        **({} if _precision(estimator) == "fp32" else {"precision": _precision(estimator)}),
    }


def _precision(estimator: Any) -> str:
    return getattr(estimator, "precision", None) or "fp32"


def run_keypoint_eval(
    pipeline: Any,
    annotations: CocoKeypointAnnotations,
    selection: DetectionSelection,
    results_path: PathLike,
    *,
    image_ids: Optional[Sequence[int]] = None,
    shard: Optional[Tuple[int, int]] = None,
    settings: Optional[Dict[str, Any]] = None,
    info: Optional[Dict[str, Any]] = None,
    resume: bool = True,
    on_progress: Optional[ProgressCallback] = None,
    engine: Any = None,
) -> EvalRun:
    """Run `pipeline` (a `PosePipeline`) over the images' kept boxes and write RESULTS.json.

    With `engine` (an `engines.Engine`, e.g. Ray actors), the images go out as task rows
    (path, image id, kept boxes) and their records come back in any order; `pipeline`
    then only supplies the settings. The file is the same bytes either way.

    Images go in sorted-id order (`image_ids`, default all annotated images, or those
    of `shard`). With `resume`, images already in a checkpoint with the same `settings`
    are not run again. The final file is written atomically: a plain COCO results list,
    or for a shard an object carrying the shard metadata that `merge_results` checks
    (`settings` must match across shards, `info` is descriptive only, e.g. file paths).
    Missing or unreadable images are skipped and listed; the checkpoint is then kept so
    that a later run only retries those.
    """
    from mspn_cli.io.sources import read_image
    from mspn_cli.pipeline import PipelineItem

    results_path = Path(results_path)
    settings = dict(settings or {})
    if shard is not None:
        assigned = select_shard(annotations.image_ids, *shard)
    else:
        assigned = sorted(annotations.image_ids if image_ids is None else set(int(i) for i in image_ids))
    with_detections = [i for i in assigned if selection.has(i)]

    checkpoint = Checkpoint(checkpoint_path_for(results_path), settings)
    if resume:
        # Only images this run is responsible for count (`load` refuses a checkpoint of
        # a run with other settings).
        responsible = set(with_detections)
        done = {i: records for i, records in checkpoint.load().items() if i in responsible}
    else:
        checkpoint.discard()
        done = {}
    resumed = len(done)
    todo = [i for i in with_detections if i not in done]
    missing: List[Tuple[int, str]] = []

    def items() -> Iterator[Any]:
        # The pipeline pulls these on its prefetch thread, so decoding overlaps inference.
        for image_id in todo:
            try:
                image = read_image(annotations.image_path(image_id))
            except InputError as exc:
                missing.append((image_id, str(exc)))
                continue
            yield PipelineItem(image_id, image, selection.detections[image_id])

    def finished() -> Iterator[Tuple[int, List[Dict[str, Any]]]]:
        if engine is None:
            for image_id, result in pipeline.run(items()):
                yield image_id, result.to_records(image_id, annotations.file_names.get(image_id))
            return
        tasks = [_eval_task(index, image_id, annotations, selection) for index, image_id in enumerate(todo)]
        for outcome in engine.run(tasks, {}):
            if outcome.error is not None:
                missing.append((outcome.task.image_id, outcome.error))
                continue
            yield outcome.task.image_id, outcome.records

    processed = 0
    checkpoint.open()
    try:
        if on_progress:
            on_progress(resumed, len(with_detections))
        for image_id, image_records in finished():
            records = jsonable_roundtrip(image_records)
            checkpoint.append(image_id, records)
            done[image_id] = records
            processed += 1
            if on_progress:
                on_progress(resumed + processed, len(with_detections))
    finally:
        checkpoint.close()

    ordered = [record for image_id in sorted(done) for record in done[image_id]]
    if shard is None:
        write_results(results_path, ordered)
    else:
        write_shard(results_path, shard, assigned, ordered, missing, settings, info or {}, selection)
    keep_checkpoint = bool(missing)
    if not keep_checkpoint:
        checkpoint.discard()
    return EvalRun(
        results_path=results_path,
        records=ordered,
        image_ids=assigned,
        images_with_detections=len(with_detections),
        detections_used=selection.count_for(assigned),
        missing_images=sorted(missing),
        resumed_images=resumed,
        processed_images=processed,
        shard=shard,
        checkpoint_kept=keep_checkpoint,
    )


def _eval_task(index: int, image_id: int, annotations: CocoKeypointAnnotations, selection: DetectionSelection):
    """The task row of one evaluation image: its path, id and kept boxes (exact float32 values)."""
    from mspn_cli.io.tasks import ImageTask

    kept = selection.detections[image_id].as_array()
    return ImageTask(index, str(annotations.image_path(image_id)), int(image_id), annotations.file_names.get(image_id) or "",
                     boxes=tuple(tuple(float(v) for v in row) for row in kept), eval_sample=True)


def write_results(path: PathLike, records: List[Dict[str, Any]]) -> None:
    """The final COCO keypoint results list, atomically, in one deterministic format."""
    from mspn_cli.io.writers import write_json_atomic

    write_json_atomic(path, records)


def run_person_detection(
    detector: Any,
    annotations: CocoKeypointAnnotations,
    image_ids: Sequence[int],
    dets_path: PathLike,
    on_progress: Optional[ProgressCallback] = None,
) -> Tuple[List[Dict[str, Any]], List[Tuple[int, str]]]:
    """Run `detector.detect` on the images and write a COCO detection-results file.

    Returns (records, missing images). Records go in sorted image-id order, each
    image's boxes in the detector's order, so the file is reusable as --dets.
    """
    from mspn_cli.io.records import detection_records
    from mspn_cli.io.sources import prefetch, read_image
    from mspn_cli.io.writers import write_json_atomic

    ids = sorted(int(i) for i in image_ids)
    missing: List[Tuple[int, str]] = []
    by_image: Dict[int, List[Dict[str, Any]]] = {}
    finished = 0
    for image_id, image, error in prefetch(ids, lambda i: read_image(annotations.image_path(i)), depth=4):
        if error is not None:
            if not isinstance(error, InputError):
                raise error
            missing.append((image_id, str(error)))
            continue
        by_image[image_id] = detection_records(detector.detect(image).as_array(), image_id)
        finished += 1
        if on_progress:
            on_progress(finished, len(ids))
    records = [record for image_id in sorted(by_image) for record in by_image[image_id]]
    write_json_atomic(dets_path, records)
    return records, sorted(missing)
