"""`mspn detect`: person boxes with RetinaNet, as COCO detection results."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import BatchReport, console_err, guarded, make_progress, parse_det_size
from mspn_cli.errors import EXIT_INTERRUPTED, MspnError, UsageError
from mspn_cli.io.sources import expand_inputs, image_id_for, is_video, prefetch, read_image
from mspn_cli.io.writers import JsonlWriter, check_output_path, write_image_atomic, write_json_atomic


@app.command("detect")
@guarded
def detect_command(
    inputs: List[str] = typer.Argument(..., help="Images, folders, globs or .txt files listing paths."),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", help="COCO detection results JSON ('-' for stdout, the default). Feeds `keypoints --boxes` and `eval-coco --dets`."
    ),
    jsonl: bool = typer.Option(False, "--jsonl", help="Stream one JSON line per image to stdout as each finishes."),
    box_thr: float = typer.Option(0.3, "--box-thr", min=0.0, max=1.0, help="Minimum person score (0.05 keeps every box the official detector keeps)."),
    max_persons: Optional[int] = typer.Option(None, "--max-persons", min=1, help="Keep at most this many persons per image, highest scores first (default: all)."),
    vis: Optional[Path] = typer.Option(None, "--vis", help="Folder for images with the person boxes drawn (created if its parent exists)."),
    detector_weights: Optional[str] = opt.DETECTOR_WEIGHTS,
    detector_config: Optional[Path] = opt.DETECTOR_CONFIG,
    det_size: Optional[str] = opt.DET_SIZE,
    device: str = opt.DEVICE,
    backend: str = opt.BACKEND,
    recursive: bool = opt.RECURSIVE,
    overwrite: bool = opt.OVERWRITE,
    fail_fast: bool = opt.FAIL_FAST,
    quiet: bool = opt.QUIET,
) -> None:
    """Find every person (RetinaNet R50-FPN, COCO) and write COCO detection results."""
    from mspn_cli.config import load_detector_config
    from mspn_cli.pipeline import PersonDetector
    from mspn_cli.io.records import detection_records

    det_size_pair = parse_det_size(det_size)
    items = expand_inputs(inputs, recursive=recursive)
    if any(is_video(item.path) for item in items):
        raise UsageError("detect works on images; for video use `mspn keypoints clip.mp4`")
    if output is None and not jsonl:
        output = "-"
    if output == "-" and jsonl:
        raise UsageError("-o - and --jsonl both write to stdout; choose one")
    if output not in (None, "-"):
        check_output_path(output, overwrite, "detections output")
    if vis is not None:
        if not vis.exists():
            if not vis.parent.is_dir():
                raise MspnError(f"cannot create folder {vis}: {vis.parent} does not exist")
            vis.mkdir()
    config = load_detector_config(detector_config) if detector_config else None
    detector = PersonDetector(config, detector_weights, device=device, backend=backend, det_size=det_size_pair,
                              box_thr=box_thr, progress=not quiet, max_persons=max_persons)

    report = BatchReport()
    records: List[dict] = []
    jsonl_writer = JsonlWriter("-") if jsonl else None
    progress, task = make_progress(len(items), quiet, "detect")
    interrupted = False
    try:
        with progress:
            for item in items:
                if item.error is not None:
                    report.input_failed(item.path, item.error, fail_fast)
                    progress.advance(task)
            good = [(index, item) for index, item in enumerate(items) if item.error is None]
            for (index, item), image, error in prefetch(good, lambda pair: read_image(pair[1].path)):
                progress.advance(task)
                if error is not None:
                    report.input_failed(item.path, error, fail_fast)
                    continue
                dets = detector.detect(image)
                image_id = image_id_for(item.path, index + 1)
                image_records = detection_records(dets, image_id, item.path.name)
                records.extend(image_records)
                report.images += 1
                report.persons += len(dets)
                if jsonl_writer is not None:
                    jsonl_writer.write({"image_id": image_id, "file_name": item.path.name, "path": str(item.path), "detections": image_records})
                if vis is not None:
                    from mspn_cli.visualize import draw_poses

                    import numpy as np

                    empty = np.zeros((len(dets), 17, 3), np.float32)
                    write_image_atomic(vis / f"{item.path.stem}_dets.jpg", draw_poses(image, empty, dets[:, :4], dets[:, 4]))
    except KeyboardInterrupt:
        interrupted = True
    # Written on success and on Ctrl-C (what finished is valid); not after an error, and not
    # when every input failed, so no empty result file stands in for a failed run.
    if output is not None and (report.images or not report.failures):
        write_json_atomic(output, records)
    if interrupted:
        console_err.print(f"[yellow]interrupted[/yellow] after {report.images} image(s); finished results were written")
        raise typer.Exit(EXIT_INTERRUPTED)
    report.print_summary(quiet, noun="persons")
    raise typer.Exit(report.exit_code())
