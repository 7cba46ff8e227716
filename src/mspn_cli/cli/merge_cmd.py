"""`mspn merge-results`: shard files of `eval-coco --shard` or `keypoints --shard` into one run's file."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import console_err, guarded
from mspn_cli.cli.eval_report import eval_log_path, finish, report_missing, root_verbosity
from mspn_cli.errors import EXIT_OK, EXIT_PARTIAL, UsageError


@app.command("merge-results")
@guarded
def merge_results_command(
    ctx: typer.Context,
    parts: List[Path] = typer.Argument(..., help="All shard files of one run (written by eval-coco or keypoints --shard K/N)."),
    output: Path = typer.Option(..., "-o", "--output", help="Merged COCO keypoint results JSON (identical to a single run's)."),
    ann: Optional[Path] = opt.ANN,
    summary: Optional[Path] = opt.SUMMARY,
    overwrite: bool = opt.OVERWRITE,
    quiet: bool = opt.QUIET,
) -> None:
    """Merge the shard files of `mspn eval-coco --shard K/N` and optionally evaluate.

    Refuses a missing shard, a shard given twice, images claimed by two shards, and
    shards from runs with different settings. `mspn -v merge-results ...` also prints
    pycocotools' output (always in OUTPUT.eval.log). Example:
    `mspn merge-results val.shard-*.json -o val.json --ann person_keypoints_val2017.json --summary s.json`.
    Shard files of `mspn keypoints --shard K/N` are merged into the JSON a single keypoints run writes.
    """
    from mspn_cli.evaluation.annotations import load_annotations
    from mspn_cli.evaluation.cocoeval import evaluate_keypoints
    from mspn_cli.evaluation.run import write_results
    from mspn_cli.evaluation.shards import merge_results, merged_counts
    from mspn_cli.io.writers import check_output_path, refuse_output_onto_inputs
    from mspn_cli.io.keypoint_runs import is_keypoint_shard

    if parts and is_keypoint_shard(parts[0]):
        from mspn_cli.cli.keypoints_scale import merge_keypoint_shards_command

        merge_keypoint_shards_command(parts, output, ann, summary, overwrite, quiet)
    if summary is not None and ann is None:
        raise UsageError("--summary needs --ann (the stats come from evaluating against the annotations)")
    refuse_output_onto_inputs([output, eval_log_path(output), summary], [*parts, ann])
    check_output_path(output, overwrite, "merged results")
    if summary is not None:
        check_output_path(summary, True, "summary file")
    annotations = load_annotations(ann) if ann is not None else None
    merged = merge_results(parts, annotations)
    write_results(output, merged.records)
    if not quiet:
        console_err.print(f"merged {merged.count} shard(s): wrote {len(merged.records)} instance(s) to {output}")
    if annotations is None:
        report_missing(merged.missing_images)
        raise typer.Exit(EXIT_PARTIAL if merged.missing_images else EXIT_OK)
    report = evaluate_keypoints(annotations, merged.records)
    finish(report, results=output, ann_path=annotations.path, summary=summary,
           settings={**merged.settings, **merged.info}, counts=merged_counts(merged), verbose=root_verbosity(ctx) > 0,
           quiet=quiet, missing=merged.missing_images)
