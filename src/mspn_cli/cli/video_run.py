"""`mspn keypoints` with videos among the inputs: every video (and photo) through one pipeline.

The networks load once for the whole run. Each video's frames are streamed to its
outputs as they finish (annotated video, JSONL line); photos are processed as photos
first. Ctrl-C, SIGTERM and SIGHUP stop in order: the current video file is closed and
renamed into place, the JSON of what finished is written, exit 128 + signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import typer

from mspn_cli.cli.common import BatchReport, console_err, fail, make_progress, report_interrupted, warn
from mspn_cli.cli.video_outputs import VideoOutputPlan, plan_video_outputs
from mspn_cli.errors import MspnError, interrupt_exit_code

__all__ = ["run_with_videos"]


@dataclass
class _Totals:
    videos: int = 0
    frames: int = 0
    photos: int = 0
    records: List[dict] = field(default_factory=list)  # for one --json file, in input order
    datasets: Any = None  # the run's DatasetOutputs (--labels, --csv)


def run_with_videos(items: Sequence[Any], settings, video_settings, output: Optional[Path], json_out: Optional[str],
                    jsonl: bool, overwrite: bool, fail_fast: bool, quiet: bool, style: Dict[str, Any],
                    fourcc: Optional[str], report: Optional[BatchReport] = None, allow_truncated: bool = False,
                    tables=(None, None)) -> None:
    """Plan every output, load the networks once, run photos then each video; exits with the run's code.

    `tables`: the --labels and --csv paths (or None), written like --json: at the end, and on a stop.
    """
    from mspn_cli.io.dataset_outputs import DatasetOutputs, labels_info
    from mspn_cli.io.tasks import plan_image_tasks
    from mspn_cli.video import VideoPoseRunner, load_video_config

    report = report or BatchReport()
    video_config = load_video_config()
    photos = [item for item in items if not (item.is_video and item.error is None)]
    videos = [item for item in items if item.is_video and item.error is None]
    tasks = plan_image_tasks(photos, allow_truncated=allow_truncated) if photos else []
    plan = plan_video_outputs(tasks, videos, output, json_out, overwrite, fourcc, video_config)
    runner = None
    totals = _Totals()
    labels_out, csv_out = tables
    totals.datasets = DatasetOutputs(labels_out, csv_out, style["kpt_thr"],
                                     lambda: labels_info(settings, style["kpt_thr"], True),
                                     video=True)
    interrupted: Optional[BaseException] = None
    try:
        from mspn_cli.pipeline import PosePipeline

        pipeline = PosePipeline.from_settings(settings, need_detector=True)
        runner = VideoPoseRunner(pipeline, video_settings, video_config=video_config)
        if tasks:
            _run_photos(pipeline, tasks, plan, jsonl, fail_fast, quiet, style, report, totals)
        for item in videos:
            _run_one_video(runner, item, plan, jsonl, fail_fast, quiet, style, report, totals)
    except KeyboardInterrupt as exc:
        interrupted = exc
    if plan.json_file is not None and (totals.videos or totals.photos or not report.failures):
        from mspn_cli.io.writers import write_json_atomic

        write_json_atomic(plan.json_file, totals.records)
        if plan.json_file != "-" and not quiet:
            console_err.print(f"wrote {len(totals.records)} instance(s) to {plan.json_file}")
    if totals.videos or totals.photos or not report.failures:
        for line in totals.datasets.finish():
            if not quiet:
                console_err.print(line)
    else:
        totals.datasets.abort()
    if interrupted is not None:
        report_interrupted(interrupted, totals.frames + totals.photos, "frame(s) and image(s)" if totals.photos else "frame(s)")
        raise typer.Exit(interrupt_exit_code(interrupted))
    elapsed = time.perf_counter() - report.started
    if not quiet:
        rate = totals.frames / elapsed if elapsed > 0 else 0.0
        photos_text = f"{totals.photos} image(s), " if tasks else ""
        console_err.print(f"[green]done:[/green] {totals.videos} video(s) ({totals.frames} frames), {photos_text}"
                          f"{report.persons} persons, {len(report.failures)} failed, {elapsed:.1f} s ({rate:.2f} frames/s)")
    for note in report.notes:
        warn(note)
    for path, reason in report.failures:
        fail(reason if reason.startswith(path) else f"{path}: {reason}")
    report.images = totals.videos + totals.photos
    raise typer.Exit(report.exit_code())


def _run_photos(pipeline, tasks, plan: VideoOutputPlan, jsonl: bool, fail_fast: bool, quiet: bool,
                style: Dict[str, Any], report: BatchReport, totals: _Totals) -> None:
    from mspn_cli.io.outputs import ImageResultsWriter

    writer = ImageResultsWriter(None, jsonl, plan.photo_outputs,
                                draw=lambda outcome: outcome.result.plot(outcome.image, **style))
    progress, bar = make_progress(len(tasks), quiet, "images")
    try:
        with progress:
            for outcome in pipeline.run_tasks(tasks, keep_image=lambda task: task.index in plan.photo_outputs):
                progress.advance(bar)
                if outcome.error is not None:
                    report.input_failed(outcome.task.path, outcome.error, fail_fast)
                    continue
                report.notes.extend(outcome.notes)
                writer.add(outcome)
                task = outcome.task
                totals.datasets.add_image(task.file_name, task.path, task.image_id, outcome.image_size, outcome.records)
                totals.photos += 1
                report.persons += len(outcome.records)
    finally:
        # Photo records lead the JSON, in input order; written on interruption too.
        records = writer.records()
        totals.records.extend(records)
        if plan.photos_json is not None and (records or writer.images):
            from mspn_cli.io.writers import write_json_atomic

            plan.photos_json.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(plan.photos_json, records)


def _run_one_video(runner, item, plan: VideoOutputPlan, jsonl: bool, fail_fast: bool, quiet: bool,
                   style: Dict[str, Any], report: BatchReport, totals: _Totals) -> None:
    """One video to its outputs; a video that cannot be read is a bad input, the run goes on."""
    from mspn_cli.io.video_source import VideoSource
    from mspn_cli.io.writers import JsonlWriter, VideoWriterAtomic, write_json_atomic
    from mspn_cli.video import frame_line, frame_records

    spec = item.source
    try:
        source = VideoSource(spec)
    except MspnError as exc:
        report.input_failed(spec, exc, fail_fast)
        return
    target = plan.video_outputs.get(spec)
    json_target = plan.video_json.get(spec)
    settings = runner.settings
    fps = source.fps
    written_fps = (fps or runner.video_config.output.default_fps) / settings.every
    lines = JsonlWriter("-") if jsonl else None
    writer: Optional[VideoWriterAtomic] = None
    records: List[dict] = []
    frames_done: List[tuple] = []  # (index, pts_ms, shape, records) per frame, for --labels and --csv
    frames = 0
    total = None
    if source.frame_count:
        total = -(-source.frame_count // settings.every)
        total = min(total, settings.max_frames) if settings.max_frames else total
    progress, bar = make_progress(total, quiet, source.name)
    failed: Optional[BaseException] = None
    crashed = False
    try:
        with source, progress:
            frame_iter = source.frames(settings.every, settings.max_frames)
            streaming = jsonl or source.live
            for poses in runner.run(frame_iter, fps=fps, streaming=streaming):
                frame_recs = frame_records(poses, source.name, spec)
                drawn = poses.result.plot(poses.frame.image, **style) if target is not None else None
                with _signals_held():  # a stop lands between frames: each frame is in every output or in none
                    if drawn is not None:
                        if writer is None:  # opened on the first frame: a stream's size is known only then
                            target.parent.mkdir(parents=True, exist_ok=True)
                            height, width = drawn.shape[:2]
                            writer = VideoWriterAtomic(target, written_fps, (width, height), plan.fourcc_for(target),
                                                       overwrite=plan.overwrite)
                        writer.write(drawn)
                    if lines is not None:
                        lines.write(frame_line(poses, source.name, spec, fps, frame_recs))
                    records.extend(frame_recs)
                    frames_done.append((poses.frame.index, poses.frame.pts_ms, poses.frame.image.shape, frame_recs))
                    frames += 1
                report.persons += len(poses.result)
                progress.advance(bar)
    except KeyboardInterrupt:
        raise  # finished frames are kept: the writer is closed below
    except MspnError as exc:
        failed = exc
    except BaseException:
        crashed = True
        raise
    finally:
        # Finished frames stay (a clean end or an interruption); a failed video leaves no output.
        keep = failed is None and not crashed
        totals.frames += frames
        if keep:
            totals.records.extend(records)
            # A failed video leaves no rows either: its frames join the tables only once it is kept.
            for index, pts_ms, shape, frame_recs in frames_done:
                totals.datasets.add_frame(source.name, spec, index, pts_ms, (shape[1], shape[0]), frame_recs)
        if writer is not None and keep:
            writer.close()
            if not quiet:
                console_err.print(f"wrote {target} ({writer.frames} frames, {writer.fourcc})")
        elif writer is not None:
            writer.abort()
        if json_target is not None and keep and frames:
            json_target.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(json_target, records)
    if failed is not None:
        report.input_failed(spec, failed, fail_fast)
        return
    if frames == 0 and not source.live:
        report.input_failed(spec, f"{spec}: no frame was processed", fail_fast)
        return
    totals.videos += 1


@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C, SIGTERM and SIGHUP while one frame goes to the outputs; they act right after.

    Handlers run in the main thread whichever thread the kernel picks, so masking is not
    enough: the handlers themselves are swapped for ones that only take note.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: List[int] = []
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    previous = {number: signal.signal(number, lambda signum, _frame: caught.append(signum)) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            else:
                signal.raise_signal(caught[0])
