"""`mspn keypoints VIDEO`: frames through the one pipeline, streamed to the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mspn_cli.cli.common import BatchReport, console_err, make_progress, report_interrupted
from mspn_cli.errors import UsageError, interrupt_exit_code
from mspn_cli.io.writers import check_output_path

VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")


def run_video(path: Path, settings, output: Optional[Path], json_out, jsonl: bool, every: int, overwrite: bool,
              quiet: bool, kpt_thr: float) -> None:
    """Annotate a video frame by frame, streaming: memory stays flat however long it is."""
    from mspn_cli.io.records import keypoint_records
    from mspn_cli.io.sources import iter_video_frames, video_properties
    from mspn_cli.io.writers import JsonlWriter, VideoWriterAtomic, write_json_atomic
    from mspn_cli.pipeline import PipelineItem, PosePipeline

    fps, width, height, count = video_properties(path)
    if output is not None:
        if output.suffix.lower() not in VIDEO_OUTPUT_EXTENSIONS:
            raise UsageError(f"-o {output}: a video output needs a video extension such as .mp4")
        check_output_path(output, overwrite, "output video")
    pipeline = PosePipeline.from_settings(settings, need_detector=True)
    report = BatchReport()
    records: List[dict] = []
    jsonl_writer = JsonlWriter("-") if jsonl else None
    total = (count + every - 1) // every if count > 0 else None
    progress, task = make_progress(total, quiet, "frames")
    writer = VideoWriterAtomic(output, fps / every, (width, height)) if output is not None else None

    def frames():
        for frame_index, frame in iter_video_frames(path, every):
            yield PipelineItem((frame_index, frame), frame)

    interrupted: Optional[BaseException] = None
    try:
        with progress:
            for (frame_index, frame), result in pipeline.run(frames(), streaming=jsonl):
                frame_records = keypoint_records(result, frame_index, path.name, extra={"frame_index": frame_index})
                records.extend(frame_records)
                report.images += 1
                report.persons += len(result)
                if jsonl_writer is not None:
                    jsonl_writer.write({"frame_index": frame_index, "file_name": path.name, "instances": frame_records})
                if writer is not None:
                    writer.write(result.plot(frame, kpt_thr=kpt_thr))
                progress.advance(task)
    except KeyboardInterrupt as exc:
        interrupted = exc
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    if json_out is not None:
        write_json_atomic(json_out, records)
    if interrupted is not None:
        report_interrupted(interrupted, report.images, "frame(s)")
        raise typer.Exit(interrupt_exit_code(interrupted))
    report.print_summary(quiet)
    if not quiet and output is not None:
        console_err.print(f"wrote {output}")
    raise typer.Exit(report.exit_code())
