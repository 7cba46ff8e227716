"""`mspn keypoints`: person keypoints for images, folders or videos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import BatchReport, guarded
from mspn_cli.errors import UsageError
from mspn_cli.settings import RunSettings

if TYPE_CHECKING:
    from mspn_cli.engines import EngineOptions

OUTPUT = typer.Option(
    None, "-o", "--output", help="Annotated output: a file for one input (image, or .mp4/.webm/.mkv/.avi/.mov video), else a folder (created if its parent exists): <stem>_pose.jpg per photo, <stem>_pose.mp4 per video."
)


@app.command("keypoints")
@guarded
@opt.with_settings("pose", "detector", "persons")
@opt.with_engine_options
def keypoints_command(
    inputs: List[str] = typer.Argument(..., help="Images, videos, folders (photos and videos mixed), globs, .txt files listing paths, a camera (cam:0) or a stream URL (rtsp://, http(s)://)."),
    boxes: Optional[Path] = opt.BOXES,
    json_out: Optional[str] = opt.JSON_OUT,
    jsonl: bool = opt.JSONL,
    labels: Optional[Path] = opt.LABELS,
    csv_out: Optional[Path] = opt.CSV_OUT,
    output: Optional[Path] = OUTPUT,
    kpt_thr: float = opt.KPT_THR,
    every: int = opt.EVERY,
    recursive: bool = opt.RECURSIVE,
    overwrite: bool = opt.OVERWRITE,
    fail_fast: bool = opt.FAIL_FAST,
    resume: bool = opt.RESUME,
    shard: Optional[str] = opt.SHARD,
    allow_truncated: bool = opt.ALLOW_TRUNCATED,
    track: bool = opt.TRACK,
    track_buffer: Optional[int] = opt.TRACK_BUFFER,
    smooth: str = opt.SMOOTH_ONLINE,
    det_every: Optional[int] = opt.DET_EVERY,
    max_frames: Optional[int] = opt.MAX_FRAMES,
    fourcc: Optional[str] = opt.FOURCC,
    tracking_config: Optional[Path] = opt.TRACKING_CONFIG,
    radius: Optional[float] = opt.RADIUS,
    thickness: Optional[float] = opt.THICKNESS,
    quiet: bool = opt.QUIET,
    settings: RunSettings = None,
    engine_options: "EngineOptions" = None,
) -> None:
    """Estimate the 17 COCO keypoints of every person.

    Examples: `mspn keypoints photo.jpg -o vis.jpg`, `mspn keypoints images/ --json out.json -o vis/`,
    `mspn keypoints val/ --boxes dets.json --json results.json`, `mspn keypoints clip.mp4 -o out.mp4 --json out.json`.
    """
    # Imported here, not at module level: `mspn --help` must not load numpy or OpenCV.
    from mspn_cli.cli.video_outputs import is_folder_target
    from mspn_cli.io.sources import expand_inputs
    from mspn_cli.io.writers import check_output_path, refuse_output_onto_inputs

    scale = _scale_out(resume, shard, engine_options)
    skipped: List[Path] = []
    items = expand_inputs(inputs, recursive=recursive, skipped=skipped)
    videos = [item for item in items if item.is_video and item.error is None]
    if videos:
        if boxes is not None:
            raise UsageError("--boxes applies to images, not video")
        if scale.shard is not None or scale.engine.name != "local":
            raise UsageError("--shard and --engine ray apply to images, not video")
    if json_out is None and not jsonl and output is None and labels is None and csv_out is None:
        json_out = "-"  # nothing requested: results to stdout, for pipes
    if json_out == "-" and jsonl:
        raise UsageError("--json - and --jsonl both write to stdout; choose one")
    if json_out not in (None, "-") and not (videos and is_folder_target(json_out)):
        # An unfinished result of an interrupted run (its checkpoint lies beside it) is replaced by the rerun.
        check_output_path(json_out, overwrite or (not videos and _unfinished_result(json_out)), "JSON output")
    # --labels and --csv are replaced by the rerun of an interrupted run, like --json (images only).
    anchor = _checkpoint_anchor(json_out, labels, csv_out)
    for path, what in ((labels, "labels output"), (csv_out, "CSV output")):
        if path is not None:
            check_output_path(path, overwrite or (not videos and _unfinished_result(anchor)), what)
    refuse_output_onto_inputs([json_out, output, labels, csv_out], [item.path for item in items] + [boxes])
    named = [str(Path(p).resolve()) for p in (json_out, labels, csv_out) if p not in (None, "-")]
    if len(set(named)) < len(named):
        raise UsageError("--json, --labels and --csv must name different files")
    if settings.config:
        from mspn_cli.config import load_pose_config

        load_pose_config(settings.config)  # a bad config is reported before anything runs

    if videos:
        from mspn_cli.cli.video_run import run_with_videos
        from mspn_cli.tracking import load_tracking_config
        from mspn_cli.video import VideoSettings

        video_settings = VideoSettings(every=every, det_every=det_every, track=track, track_buffer=track_buffer,
                                       smooth=smooth, max_frames=max_frames, tracking_config=opt.optional_path(tracking_config))
        load_tracking_config(video_settings.tracking_config)  # a bad config is reported before anything runs
        report = BatchReport()
        report.note_skipped(skipped)
        run_with_videos(items, settings, video_settings, output, json_out, jsonl, overwrite, fail_fast, quiet,
                        dict(kpt_thr=kpt_thr, radius=radius, thickness=thickness), fourcc, report, allow_truncated,
                        tables=(labels, csv_out))
        return
    _run_images(items, settings, boxes, output, json_out, jsonl, overwrite, fail_fast, quiet, kpt_thr, allow_truncated, skipped,
                scale, dict(radius=radius, thickness=thickness), tables=(labels, csv_out))


def _scale_out(resume, shard, engine_options):
    from mspn_cli.cli.keypoints_scale import ScaleOut
    from mspn_cli.io.shards import parse_shard

    return ScaleOut(resume=resume, shard=parse_shard(shard) if shard is not None else None, engine=engine_options)


def _checkpoint_anchor(json_out, labels, csv_out):
    """The file output the run's checkpoint lies beside: --json OUT, else --labels, else --csv."""
    from mspn_cli.cli.keypoints_scale import checkpoint_anchor

    return checkpoint_anchor(json_out, labels, csv_out)


def _unfinished_result(json_out) -> bool:
    from mspn_cli.cli.keypoints_scale import unfinished_result

    return unfinished_result(json_out)


def _run_images(items, settings, boxes, output, json_out, jsonl, overwrite, fail_fast, quiet, kpt_thr,
                allow_truncated=False, skipped=(), scale=None, draw_style=None, tables=(None, None)) -> None:
    """Plan the tasks, then run or resume them (cli/keypoints_scale.py: checkpoint, shards, engines)."""
    from mspn_cli.cli.keypoints_scale import ScaleOut, run_planned_images
    from mspn_cli.io.tasks import plan_image_tasks

    detection_set = None
    if boxes is not None:
        from mspn_cli.io.detections import load_detections

        detection_set = load_detections(boxes, require_coco_fields=False)
    tasks = plan_image_tasks(items, detection_set, allow_truncated=allow_truncated)
    report = BatchReport()
    report.note_skipped(skipped)
    run_planned_images(tasks, settings, detection_set is None, boxes, output, json_out, jsonl, overwrite, fail_fast,
                       quiet, kpt_thr, report, scale or ScaleOut(), draw_style, tables=tables)
