"""The driver of `mspn keypoints` on images: resume, shards and engines around the planned tasks.

With `--json OUT`, each finished image is appended (fsync'ed) to `OUT.partial.jsonl`
as a result row, under a header holding the run's identity (settings, a digest of the
inputs and their boxes, the shard and the annotated output). A rerun of the same
command takes the finished images from it and runs the rest; the final OUT is the
same bytes as an uninterrupted run's. An interrupted run (Ctrl-C, SIGTERM, SIGHUP)
still writes the finished results to OUT; the checkpoint beside it marks OUT as an
unfinished result of this run, so the rerun replaces it (and the run's own annotated
images) without --overwrite. The checkpoint is removed when the run finishes.

With `--shard K/N`, the i-th task goes to shard i % N and OUT becomes a shard file
(written only when the shard is complete) for `mspn merge-results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import typer

from mspn_cli.cli.common import BatchReport, console_err, make_progress, report_interrupted
from mspn_cli.engines import EngineOptions, open_engine
from mspn_cli.errors import EXIT_OK, EXIT_PARTIAL, InputError, UsageError, interrupt_exit_code
from mspn_cli.io.checkpoint import checkpoint_path_for
from mspn_cli.io.tasks import ImageOutcome, ImageTask
from mspn_cli.settings import RunSettings

__all__ = ["ScaleOut", "run_planned_images", "checkpoint_anchor", "unfinished_result", "merge_keypoint_shards_command"]


@dataclass(frozen=True)
class ScaleOut:
    resume: bool = True
    shard: Optional[Tuple[int, int]] = None
    engine: EngineOptions = field(default_factory=EngineOptions)


def checkpoint_anchor(json_out: Optional[str], labels: Optional[Path] = None, csv_out: Optional[Path] = None) -> Optional[str]:
    """The file output whose checkpoint (`X.partial.jsonl`) makes the run resumable: --json, else --labels, else --csv."""
    for path in (json_out, labels, csv_out):
        if path not in (None, "-"):
            return str(path)
    return None


def unfinished_result(json_out: Optional[str]) -> bool:
    """Whether OUT is the unfinished result of an interrupted run (a checkpoint lies beside it)."""
    return json_out not in (None, "-") and checkpoint_path_for(json_out).exists()


def run_planned_images(tasks: Sequence[ImageTask], settings: RunSettings, need_detector: bool, boxes: Optional[Path],
                       output: Optional[Path], json_out: Optional[str], jsonl: bool, overwrite: bool, fail_fast: bool,
                       quiet: bool, kpt_thr: float, report: BatchReport, scale: ScaleOut,
                       draw_style: Optional[Dict[str, Optional[float]]] = None,
                       tables: Tuple[Optional[Path], Optional[Path]] = (None, None)) -> None:
    """Run (or resume) the tasks on the chosen engine, write the outputs, exit with the run's code.

    `tables`: the --labels and --csv paths (or None); the checkpoint lies beside --json OUT, else beside them.
    """
    from mspn_cli.engines.drawing import annotation_drawer
    from mspn_cli.io.keypoint_runs import KeypointCheckpoint, run_identity, write_keypoint_shard
    from mspn_cli.io.outputs import ImageResultsWriter, plan_annotated_images
    from mspn_cli.io.result_rows import outcome_from_row, outcome_to_row
    from mspn_cli.io.shards import in_shard

    from mspn_cli.io.dataset_outputs import DatasetOutputs, labels_info

    identity = run_identity(settings, tasks)
    drawing = {"kpt_thr": kpt_thr, **(draw_style or {})}
    shard = scale.shard
    if shard is not None:
        if json_out in (None, "-"):
            raise UsageError("--shard writes a shard file for `mspn merge-results`: give --json OUT")
        if any(path is not None for path in tables):
            raise UsageError("--labels and --csv are not written per shard; run them on the merged results' images")
        tasks = [task for task in tasks if in_shard(task.index, *shard)]
    unmatched = sum(1 for task in tasks if task.unmatched)
    if unmatched:
        report.notes.append(
            f"{unmatched} image(s) have no entry in {boxes} (matched by file_name, or by image_id for numeric "
            "file names): processed as having no persons"
        )
    checkpoint = None
    resumed: Dict[int, dict] = {}
    anchor = checkpoint_anchor(json_out, *tables)
    if anchor is not None:
        checkpoint = KeypointCheckpoint(anchor, {
            "run": identity, "shard": list(shard) if shard else None,
            "annotated": str(Path(output).resolve()) if output is not None else None,
            "drawing": drawing if output is not None else None,
        })
        if not scale.resume:
            checkpoint.discard()
        indices = {task.index for task in tasks}
        resumed = {index: row for index, row in checkpoint.load().items() if index in indices}
    # An interrupted run of these settings already checked (and may have written) these outputs.
    annotated = plan_annotated_images(tasks, output, overwrite or bool(checkpoint and checkpoint.found))
    todo = [task for task in tasks if task.index not in resumed]
    engine = open_engine(scale.engine, settings, need_detector, drawing) if todo else None

    writer = ImageResultsWriter(None if shard else json_out, jsonl, annotated, draw=annotation_drawer(**drawing))
    labels_out, csv_out = tables
    datasets = DatasetOutputs(labels_out, csv_out, kpt_thr,
                              lambda: labels_info(settings, kpt_thr, need_detector))
    shard_rows: List[dict] = []

    def accept(outcome: ImageOutcome, row: Optional[dict] = None) -> None:
        fresh = row is None
        row = outcome_to_row(outcome) if fresh else row
        shard_rows.append(row)
        if outcome.error is not None:
            report.input_failed(outcome.task.path, outcome.error, fail_fast)
            return
        outcome.records = row["records"]  # as they read back from the checkpoint: the same bytes either way
        report.notes.extend(outcome.notes)
        writer.add(outcome)
        datasets.add_image(outcome.task.file_name, outcome.task.path, outcome.task.image_id, outcome.image_size, outcome.records)
        report.images += 1
        report.persons += len(outcome.records)
        if fresh and checkpoint is not None:
            checkpoint.append(row)

    by_index = {task.index: task for task in tasks}
    progress, task_bar = make_progress(len(tasks), quiet, "keypoints")
    interrupted: Optional[BaseException] = None
    try:
        for index in sorted(resumed):
            accept(outcome_from_row(resumed[index], by_index[index]), resumed[index])
        if resumed and not quiet:
            console_err.print(f"resumed: {len(resumed)} image(s) taken from {checkpoint.path}")
        if checkpoint is not None:
            checkpoint.open()
        with progress:
            progress.advance(task_bar, len(resumed))
            if engine is not None:
                for outcome in engine.run(todo, annotated):
                    progress.advance(task_bar)
                    accept(outcome)
    except KeyboardInterrupt as exc:
        interrupted = exc
    finally:
        if engine is not None:
            engine.close()
        if checkpoint is not None:
            checkpoint.close()

    if interrupted is not None:
        if shard is None:
            # Written on interruption too (what finished is valid); not when every input failed.
            if report.images or not report.failures:
                writer.finish()
                _say(datasets.finish(), quiet)
            else:
                datasets.abort()
            report_interrupted(interrupted, report.images)
        else:
            console_err.print(f"[yellow]interrupted[/yellow] after {report.images} image(s); the shard file is written "
                              "when the shard is complete")
        if checkpoint is not None:
            console_err.print(f"finished images are kept in {checkpoint.path}: run the same command again to continue")
        raise typer.Exit(interrupt_exit_code(interrupted))

    written: Optional[int] = None
    if shard is not None:
        write_keypoint_shard(json_out, shard, identity, shard_rows)
        if not quiet:
            console_err.print(f"shard {shard[0]}/{shard[1]}: {report.persons} instance(s) from {len(tasks)} task(s) written "
                              f"to {json_out}; combine all shards with `mspn merge-results`")
    elif report.images or not report.failures:  # no empty result file stands in for a failed run
        written = writer.finish()
        _say(datasets.finish(), quiet)
    else:
        datasets.abort()
    if checkpoint is not None:
        checkpoint.discard()
    if written is not None and json_out != "-" and not quiet:
        console_err.print(f"wrote {written} instance(s) to {json_out}")
    report.print_summary(quiet)
    raise typer.Exit(report.exit_code())


def _say(lines: Sequence[str], quiet: bool) -> None:
    if not quiet:
        for line in lines:
            console_err.print(line)


def merge_keypoint_shards_command(parts: Sequence[Path], output: Path, ann: Optional[Path], summary: Optional[Path],
                                  overwrite: bool, quiet: bool) -> None:
    """`mspn merge-results` for shard files of `mspn keypoints --shard K/N`: the bytes a single run writes."""
    from mspn_cli.cli.common import fail, warn
    from mspn_cli.io.keypoint_runs import merge_keypoint_shards
    from mspn_cli.io.writers import check_output_path, refuse_output_onto_inputs, write_json_atomic

    if ann is not None or summary is not None:
        raise UsageError("--ann and --summary evaluate eval-coco shards; keypoints shards are merged only")
    check_output_path(output, overwrite, "merged results")
    refuse_output_onto_inputs([output], list(parts))
    merged = merge_keypoint_shards(parts)
    if merged.images or not merged.failures:
        write_json_atomic(output, merged.records)
        if not quiet:
            console_err.print(f"merged {merged.shards} shard(s): wrote {len(merged.records)} instance(s) to {output}")
    for note in merged.notes:
        warn(note)
    for _path, reason in merged.failures:
        fail(reason)
    if not merged.failures:
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_PARTIAL if merged.images else InputError.exit_code)
