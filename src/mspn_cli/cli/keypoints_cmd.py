"""`mspn keypoints`: person keypoints for images, folders or a video."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import BatchReport, console_err, guarded, make_progress, parse_det_size
from mspn_cli.errors import EXIT_INTERRUPTED, MspnError, UsageError
from mspn_cli.io.sources import IMAGE_EXTENSIONS, InputItem, expand_inputs, image_id_for, is_video, prefetch, read_image
from mspn_cli.io.writers import JsonlWriter, check_output_path, write_image_atomic, write_json_atomic


@app.command("keypoints")
@guarded
def keypoints_command(
    inputs: List[str] = typer.Argument(..., help="Images, folders, globs, .txt files listing paths, or one video."),
    boxes: Optional[Path] = typer.Option(
        None, "--boxes", help="Person boxes in COCO detection-results format (image_id or file_name, bbox [x,y,w,h], score). Without it, RetinaNet finds the persons."
    ),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write COCO keypoint results to this JSON file ('-' for stdout)."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Stream one JSON line per image to stdout as each finishes."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Annotated output: a file for one input (image or .mp4), else a folder (created if its parent exists)."
    ),
    box_thr: Optional[float] = typer.Option(
        None, "--box-thr", help="Minimum person score. Default 0.3 for detected boxes (0.05 reproduces the official demo); all given --boxes are used unless set."
    ),
    max_persons: Optional[int] = typer.Option(None, "--max-persons", min=1, help="Keep at most this many detected persons per image, highest scores first (default: all)."),
    kpt_thr: float = opt.KPT_THR,
    every: int = typer.Option(1, "--every", min=1, help="Video: process every N-th frame."),
    weights: Optional[str] = opt.WEIGHTS,
    config: Optional[Path] = opt.CONFIG,
    detector_weights: Optional[str] = opt.DETECTOR_WEIGHTS,
    detector_config: Optional[Path] = opt.DETECTOR_CONFIG,
    det_size: Optional[str] = opt.DET_SIZE,
    flip: Optional[bool] = opt.FLIP,
    batch_size: Optional[int] = opt.BATCH_SIZE,
    device: str = opt.DEVICE,
    backend: str = opt.BACKEND,
    recursive: bool = opt.RECURSIVE,
    overwrite: bool = opt.OVERWRITE,
    fail_fast: bool = opt.FAIL_FAST,
    quiet: bool = opt.QUIET,
) -> None:
    """Estimate the 17 COCO keypoints of every person.

    Examples: `mspn keypoints photo.jpg -o vis.jpg`, `mspn keypoints images/ --json out.json -o vis/`,
    `mspn keypoints val/ --boxes dets.json --json results.json`, `mspn keypoints clip.mp4 -o out.mp4 --json out.json`.
    """
    from mspn_cli.config import load_pose_config

    det_size_pair = parse_det_size(det_size)
    if box_thr is not None and not (0.0 <= box_thr <= 1.0):
        raise UsageError("--box-thr must be between 0 and 1")
    items = expand_inputs(inputs, recursive=recursive)
    videos = [item for item in items if is_video(item.path) and item.error is None]
    if videos:
        if len(items) != 1:
            raise UsageError("give one video at a time (videos cannot be mixed with other inputs)")
        if boxes is not None:
            raise UsageError("--boxes applies to images, not video")
    if json_out is None and not jsonl and output is None:
        json_out = "-"  # nothing requested: results to stdout, for pipes
    if json_out == "-" and jsonl:
        raise UsageError("--json - and --jsonl both write to stdout; choose one")
    if json_out not in (None, "-"):
        check_output_path(json_out, overwrite, "JSON output")

    pose_config = load_pose_config(config) if config else None
    dets = None
    if boxes is not None:
        from mspn_cli.io.detections import load_detections

        dets = load_detections(boxes)

    if videos:
        _run_video(videos[0].path, output, json_out, jsonl, every, overwrite, quiet, kpt_thr, box_thr, max_persons,
                   pose_config, weights, detector_weights, detector_config, det_size_pair, flip, batch_size, device, backend)
        return

    vis_paths = _plan_visual_outputs(items, output, overwrite)
    estimator, detector = _build_models(pose_config, weights, detector_weights, detector_config, det_size_pair,
                                        flip, batch_size, device, backend, need_detector=dets is None,
                                        box_thr=0.3 if box_thr is None else box_thr, quiet=quiet,
                                        max_persons=max_persons)
    given_thr = box_thr if box_thr is not None else 0.0
    report = BatchReport()
    records: List[dict] = []
    jsonl_writer = JsonlWriter("-") if jsonl else None
    progress, task = make_progress(len(items), quiet, "keypoints")

    def images() -> Iterator[Tuple[tuple, np.ndarray, np.ndarray, np.ndarray]]:
        """Decoded images with their person boxes; bad inputs are reported, not raised."""
        good = [(index, item) for index, item in enumerate(items) if item.error is None]
        for index, item in enumerate(items):
            if item.error is not None:
                _record_failure(report, item.path, item.error, fail_fast, progress, task)
        for (index, item), image, error in prefetch(good, lambda pair: read_image(pair[1].path), depth=4):
            if error is not None:
                _record_failure(report, item.path, error, fail_fast, progress, task)
                continue
            image_id = image_id_for(item.path, index + 1)
            if dets is not None:
                found = dets.boxes_for(image_id if item.path.stem.isdigit() else None, item.path.name)
                if found is None:
                    _record_failure(report, item.path, f"no boxes for this image in {boxes} (image_id {image_id}, file_name {item.path.name})", fail_fast, progress, task)
                    continue
                person_boxes, scores = found
                keep = scores >= given_thr
                person_boxes, scores = person_boxes[keep], scores[keep]
                outside = _boxes_outside(person_boxes, image.shape)
                if outside:
                    _record_failure(report, item.path, f"{outside} box(es) lie entirely outside the {image.shape[1]}x{image.shape[0]} image", fail_fast, progress, task)
                    continue
            else:
                found_dets = detector.detect(image)
                person_boxes, scores = found_dets[:, :4], found_dets[:, 4]
            key = (index, item.path, image_id, image if index in vis_paths else None)
            yield key, image, person_boxes, scores

    interrupted = False
    try:
        with progress:
            for (index, path, image_id, image), result in estimator.estimate_many(images()):
                from mspn_cli.io.records import keypoint_records

                image_records = keypoint_records(result, image_id, path.name)
                records.extend(image_records)
                report.images += 1
                report.persons += len(result)
                if jsonl_writer is not None:
                    jsonl_writer.write({"image_id": image_id, "file_name": path.name, "path": str(path), "instances": image_records})
                if image is not None:
                    from mspn_cli.visualize import draw_poses

                    drawn = draw_poses(image, result.keypoints, result.boxes, result.scores, kpt_thr=kpt_thr)
                    write_image_atomic(vis_paths[index], drawn)
                progress.advance(task)
    except KeyboardInterrupt:
        interrupted = True
    # Written on success and on Ctrl-C (what finished is valid); not after an error, and not
    # when every input failed, so no empty result file stands in for a failed run.
    if json_out is not None and (report.images or not report.failures):
        write_json_atomic(json_out, records)
    if interrupted:
        console_err.print(f"[yellow]interrupted[/yellow] after {report.images} image(s); finished results were written")
        raise typer.Exit(EXIT_INTERRUPTED)
    if json_out not in (None, "-") and not quiet:
        console_err.print(f"wrote {len(records)} instance(s) to {json_out}")
    report.print_summary(quiet)
    raise typer.Exit(report.exit_code())


def _record_failure(report: BatchReport, path: Path, reason, fail_fast: bool, progress, task) -> None:
    report.input_failed(path, reason, fail_fast)
    progress.advance(task)


def _boxes_outside(boxes: np.ndarray, shape) -> int:
    height, width = shape[:2]
    outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
    return int(outside.sum())


def _plan_visual_outputs(items: List[InputItem], output: Optional[Path], overwrite: bool) -> Dict[int, Path]:
    """Where each annotated image goes; checked before any work starts."""
    if output is None:
        return {}
    single_file = output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    if single_file:
        if len(items) != 1:
            raise UsageError(f"-o {output} is a single image file but there are {len(items)} inputs; give a folder")
        check_output_path(output, overwrite, "output image")
        if items[0].error is None and items[0].path.resolve() == output.resolve():
            raise UsageError("the output image would overwrite the input image")
        return {0: output}
    if not output.exists():
        if not output.parent.is_dir():
            raise MspnError(f"cannot create output folder {output}: {output.parent} does not exist")
        output.mkdir()
    plan: Dict[int, Path] = {}
    for index, item in enumerate(items):
        target = output / f"{item.path.stem}_pose.jpg"
        if target.exists() and not overwrite:
            raise MspnError(f"output image {target} already exists; pass --overwrite to replace it")
        plan[index] = target
    return plan


def _build_models(pose_config, weights, detector_weights, detector_config, det_size, flip, batch_size, device,
                  backend, need_detector: bool, box_thr: float, quiet: bool, max_persons: Optional[int] = None):
    from mspn_cli.pipeline import PersonDetector, PoseEstimator

    detector = None
    if need_detector:
        from mspn_cli.config import load_detector_config

        det_cfg = load_detector_config(detector_config) if detector_config else None
        detector = PersonDetector(det_cfg, detector_weights, device=device, backend=backend, det_size=det_size,
                                  box_thr=box_thr, progress=not quiet, max_persons=max_persons)
    estimator = PoseEstimator(pose_config, weights, device=device, backend=backend, flip=flip,
                              batch_size=batch_size, progress=not quiet)
    return estimator, detector


def _run_video(path: Path, output, json_out, jsonl, every, overwrite, quiet, kpt_thr, box_thr, max_persons, pose_config, weights,
               detector_weights, detector_config, det_size, flip, batch_size, device, backend) -> None:
    """Annotate a video frame by frame, streaming: memory stays flat however long it is."""
    from mspn_cli.io.records import keypoint_records
    from mspn_cli.io.sources import iter_video_frames, video_properties
    from mspn_cli.visualize import draw_poses
    from mspn_cli.io.writers import VideoWriterAtomic

    fps, width, height, count = video_properties(path)
    if output is not None:
        if output.suffix.lower() not in (".mp4", ".avi", ".mov", ".mkv", ".m4v"):
            raise UsageError(f"-o {output}: a video output needs a video extension such as .mp4")
        check_output_path(output, overwrite, "output video")
    estimator, detector = _build_models(pose_config, weights, detector_weights, detector_config, det_size, flip,
                                        batch_size, device, backend, need_detector=True,
                                        box_thr=0.3 if box_thr is None else box_thr, quiet=quiet,
                                        max_persons=max_persons)
    report = BatchReport()
    records: List[dict] = []
    jsonl_writer = JsonlWriter("-") if jsonl else None
    total = (count + every - 1) // every if count > 0 else None
    progress, task = make_progress(total, quiet, "frames")
    writer = VideoWriterAtomic(output, fps / every, (width, height)) if output is not None else None

    def frames():
        for frame_index, frame in iter_video_frames(path, every):
            dets = detector.detect(frame)
            yield (frame_index, frame), frame, dets[:, :4], dets[:, 4]

    interrupted = False
    try:
        with progress:
            for (frame_index, frame), result in estimator.estimate_many(frames()):
                frame_records = keypoint_records(result, frame_index, path.name, extra={"frame_index": frame_index})
                records.extend(frame_records)
                report.images += 1
                report.persons += len(result)
                if jsonl_writer is not None:
                    jsonl_writer.write({"frame_index": frame_index, "file_name": path.name, "instances": frame_records})
                if writer is not None:
                    writer.write(draw_poses(frame, result.keypoints, result.boxes, result.scores, kpt_thr=kpt_thr))
                progress.advance(task)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    if json_out is not None:
        write_json_atomic(json_out, records)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    report.print_summary(quiet)
    if not quiet and output is not None:
        console_err.print(f"wrote {output}")
    raise typer.Exit(report.exit_code())
