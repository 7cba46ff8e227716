"""`mspn detect`: person boxes with RetinaNet, as COCO detection results."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import BatchReport, FailFast, guarded, make_progress, report_interrupted
from mspn_cli.errors import UsageError, interrupt_exit_code
from mspn_cli.settings import RunSettings


@app.command("detect")
@guarded
@opt.with_settings("detector", "persons")
def detect_command(
    inputs: List[str] = typer.Argument(..., help="Images, folders, globs or .txt files listing paths."),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", help="COCO detection results JSON ('-' for stdout, the default). Feeds `keypoints --boxes` and `eval-coco --dets`."
    ),
    jsonl: bool = opt.JSONL,
    vis: Optional[Path] = typer.Option(None, "--vis", help="Folder for images with the person boxes drawn (created if missing)."),
    recursive: bool = opt.RECURSIVE,
    overwrite: bool = opt.OVERWRITE,
    fail_fast: bool = opt.FAIL_FAST,
    allow_truncated: bool = opt.ALLOW_TRUNCATED,
    quiet: bool = opt.QUIET,
    settings: RunSettings = None,
) -> None:
    """Find every person (RetinaNet R50-FPN, COCO) and write COCO detection results."""
    from mspn_cli.detection.detector import PersonDetector
    from mspn_cli.io.outputs import ImageResultsWriter, plan_annotated_images
    from mspn_cli.io.records import detection_records
    from mspn_cli.io.sources import expand_inputs, is_video, prefetch, read_image
    from mspn_cli.io.writers import check_output_path, refuse_output_onto_inputs
    from mspn_cli.io.tasks import ImageOutcome, plan_image_tasks

    skipped: List[Path] = []
    items = expand_inputs(inputs, recursive=recursive, skipped=skipped)
    if any(is_video(item.path) for item in items):
        raise UsageError("detect works on images; for video use `mspn keypoints clip.mp4`")
    if output is None and not jsonl:
        output = "-"
    if output == "-" and jsonl:
        raise UsageError("-o - and --jsonl both write to stdout; choose one")
    if output not in (None, "-"):
        check_output_path(output, overwrite, "detections output")
    refuse_output_onto_inputs([output, vis], [item.path for item in items])
    tasks = plan_image_tasks(items, allow_truncated=allow_truncated)
    annotated = plan_annotated_images(tasks, vis, overwrite, suffix="_dets", what="--vis")
    detector = PersonDetector.from_settings(settings)

    def draw(outcome):
        from mspn_cli.visualize import draw_boxes

        return draw_boxes(outcome.image, outcome.result.boxes, outcome.result.scores)

    writer = ImageResultsWriter(output, jsonl, annotated, draw=draw, line_key="detections")
    report = BatchReport(precision=detector.precision)
    report.note_skipped(skipped)
    progress, task_bar = make_progress(len(tasks), quiet, "detect")
    interrupted: Optional[BaseException] = None
    try:
        with progress:
            for task in tasks:
                if task.error is not None:
                    report.input_failed(task.path, task.error, fail_fast)
                    progress.advance(task_bar)
            good = [task for task in tasks if task.error is None]
            remarks: dict = {}

            def decode(task):
                remarks[task.index] = []
                return read_image(task.path, allow_truncated=task.allow_truncated, notes=remarks[task.index])

            for task, image, error in prefetch(good, decode):
                progress.advance(task_bar)
                report.notes.extend(remarks.pop(task.index, ()))
                if error is not None:
                    report.input_failed(task.path, error, fail_fast)
                    continue
                dets = detector.detect(image)
                records: List[dict] = detection_records(dets.as_array(), task.image_id, task.file_name, extra={"path": task.path})
                writer.add(ImageOutcome(task, records=records, result=dets, image=image))
                report.images += 1
                report.persons += len(dets)
    except KeyboardInterrupt as exc:
        interrupted = exc
    except FailFast:
        if report.images:  # --fail-fast stops in order: what finished is written
            writer.finish()
        raise
    # Written on success and on interruption (what finished is valid); not after an error, and
    # not when every input failed, so no empty result file stands in for a failed run.
    if report.images or not report.failures:
        writer.finish()
    if interrupted is not None:
        report_interrupted(interrupted, report.images)
        raise typer.Exit(interrupt_exit_code(interrupted))
    report.print_summary(quiet, noun="persons")
    raise typer.Exit(report.exit_code())
