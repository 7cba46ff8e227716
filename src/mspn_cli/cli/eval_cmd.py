"""`mspn eval-coco` and `mspn merge-results`: the official COCO keypoint test, resumable and shardable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import typer

from mspn_cli.evaluation import coco
from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import console_err, guarded, make_progress, parse_det_size, warn
from mspn_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, InputError, OutputError, UsageError

DEFAULT_RESULTS = Path("mspn_coco_keypoints_results.json")
ANNOTATIONS_IN_ROOT = Path("annotations") / "person_keypoints_val2017.json"
IMAGES_IN_ROOT = Path("val2017")
# Same as the official demo: RetinaNet's own score threshold (reference §2).
DETECTOR_BOX_THR = 0.05
DECODER_NAME = "official (quirk-faithful)"


# --------------------------------------------------------------------------- paths


def _default_coco_root() -> Path:
    return Path(os.environ.get("COCO_ROOT") or "coco")


def _resolve_dataset(coco_root: Optional[Path], ann: Optional[Path], images: Optional[Path]) -> Tuple[Path, Path]:
    root = coco_root if coco_root is not None else _default_coco_root()
    ann_path = ann if ann is not None else root / ANNOTATIONS_IN_ROOT
    image_dir = images if images is not None else root / IMAGES_IN_ROOT
    if not ann_path.is_file():
        how = "" if ann is not None else " (give --coco-root DIR, set $COCO_ROOT, or give --ann FILE --images DIR)"
        raise InputError(f"annotations file {ann_path} not found{how}")
    return ann_path, image_dir


def eval_log_path(results: Path) -> Path:
    """pycocotools' printout goes next to the results: RESULTS.eval.log."""
    return results.with_name(results.stem + ".eval.log")


def detections_cache_path(results: Path) -> Path:
    """Where detected boxes are cached for reuse as --dets: RESULTS_dets.json."""
    return results.with_name(results.stem + "_dets.json")


def _check_writable_folder(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {what} {path}: folder {parent} is not writable")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")


# --------------------------------------------------------------------------- reporting


def print_stats_table(report: coco.EvalReport, title: str) -> None:
    """This run, the published mspn_4stage row and the difference, on stderr.

    One row per source when the console is wide enough, else one row per stat (so
    nothing is truncated in a narrow terminal or a log file).
    """
    from rich.table import Table

    def shown(value: Optional[float], signed: bool = False) -> str:
        # None: no ground truth in that area range (pycocotools prints -1).
        return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")

    diffs = report.differences()
    rows = [
        ("this run", [shown(report.stats[name]) for name in coco.STAT_NAMES]),
        ("published mspn_4stage", [shown(coco.PUBLISHED_MSPN_4STAGE[name]) for name in coco.STAT_NAMES]),
        ("difference", [shown(diffs[name], signed=True) for name in coco.STAT_NAMES]),
    ]
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    if console_err.width >= 110:
        table.add_column("", no_wrap=True)
        for label in coco.STAT_LABELS:
            table.add_column(label, justify="right", no_wrap=True)
        for name, values in rows:
            table.add_row(name, *values)
    else:
        table.add_column("", no_wrap=True)
        for name, _ in rows:
            table.add_column(name, justify="right", no_wrap=True)
        for index, label in enumerate(coco.STAT_LABELS):
            table.add_row(label, *(values[index] for _, values in rows))
    console_err.print(table)


def _write_log(path: Path, text: str, verbose: bool) -> Optional[Path]:
    if verbose:
        console_err.print(text.rstrip(), markup=False, highlight=False)
    try:
        path.write_text(text)
        return path
    except OSError as exc:
        warn(f"cannot write evaluation log {path}: {exc.strerror}")
        return None


def _report_missing(missing: List[Tuple[int, str]]) -> None:
    if missing:
        first = missing[0][1]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        warn(f"{len(missing)} image(s) missing or unreadable were skipped: {first}{more}")


def _finish(
    report: coco.EvalReport,
    *,
    results: Path,
    ann_path: Path,
    summary: Optional[Path],
    settings: Dict[str, Any],
    counts: Dict[str, Any],
    verbose: bool,
    quiet: bool,
    missing: List[Tuple[int, str]],
) -> None:
    """Log, table, summary, missing-image note and exit code, shared by eval-coco and merge-results."""
    from mspn_cli.io.writers import write_json_atomic

    log = _write_log(eval_log_path(results), report.log, verbose)
    if not quiet:
        print_stats_table(report, f"COCO keypoints, {report.num_images} images, {report.num_results} instances")
    if summary is not None:
        write_json_atomic(
            summary,
            coco.build_summary(report, settings, counts, results_path=results, annotations_path=ann_path, log_path=log),
            indent=2,
        )
        if not quiet:
            console_err.print(f"summary written to {summary}")
    _report_missing(missing)
    raise typer.Exit(EXIT_PARTIAL if missing else EXIT_OK)


# --------------------------------------------------------------------------- eval-coco


@app.command("eval-coco")
@guarded
def eval_coco_command(
    dets: Optional[Path] = typer.Option(
        None,
        "--dets",
        help="Person detections in COCO results format ([{image_id, category_id, bbox [x,y,w,h], score}], e.g. "
        "COCO_val2017_detections_AP_H_56_person.json). As in the official test, every category-1 box on an annotated "
        "image is used, with no score threshold. Default: run RetinaNet (score > 0.05) and cache its boxes in "
        "RESULTS_dets.json, reused by later runs.",
    ),
    coco_root: Optional[Path] = typer.Option(
        None,
        "--coco-root",
        help="COCO folder holding annotations/person_keypoints_val2017.json and val2017/. Default: $COCO_ROOT, else ./coco.",
    ),
    ann: Optional[Path] = typer.Option(
        None, "--ann", help="Person-keypoints annotation file. Default: COCO_ROOT/annotations/person_keypoints_val2017.json."
    ),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the annotated images. Default: COCO_ROOT/val2017."),
    results: Path = typer.Option(
        DEFAULT_RESULTS,
        "--results",
        help="Keypoint results JSON (COCO results format). Written by the run; if it already exists and --dets is not "
        "given, it is only evaluated (no network).",
    ),
    summary: Optional[Path] = typer.Option(
        None, "--summary", help="Also write the 10 stats, settings and counts to this JSON file. Default: none."
    ),
    weights: Optional[str] = opt.WEIGHTS,
    config: Optional[Path] = opt.CONFIG,
    flip: Optional[bool] = opt.FLIP,
    batch_size: Optional[int] = opt.BATCH_SIZE,
    device: str = opt.DEVICE,
    backend: str = opt.BACKEND,
    detector_weights: Optional[str] = opt.DETECTOR_WEIGHTS,
    detector_config: Optional[Path] = opt.DETECTOR_CONFIG,
    det_size: Optional[str] = opt.DET_SIZE,
    shard: Optional[str] = typer.Option(
        None,
        "--shard",
        help="Run only shard K of N (0-based, e.g. $SLURM_ARRAY_TASK_ID/8): the i-th image in id order goes to shard "
        "i % N. Writes a shard file for `mspn merge-results` instead of evaluating. Default: all images.",
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Run N local processes (one shard each), then merge and evaluate."
    ),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Continue from RESULTS.partial.jsonl, the per-image checkpoint of an interrupted run with the same "
        "settings; --no-resume starts over.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print pycocotools' output (always in RESULTS.eval.log)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Recompute and replace existing results (and a cached RESULTS_dets.json). Default: off."
    ),
    quiet: bool = opt.QUIET,
) -> None:
    """Evaluate MSPN on COCO val2017 keypoints exactly as the official test does.

    Examples:
    `mspn eval-coco --coco-root ~/coco --dets COCO_val2017_detections_AP_H_56_person.json --results val.json --summary val_summary.json`;
    `mspn eval-coco --results val.json --ann person_keypoints_val2017.json` (evaluate an existing file);
    `mspn eval-coco ... --shard 3/8` then `mspn merge-results val.shard-*.json -o val.json --ann ...`.
    """
    shard_pair = coco.parse_shard(shard) if shard is not None else None
    if shard_pair is not None and workers > 1:
        raise UsageError("--shard and --workers cannot be combined (each worker is one shard)")
    det_size_pair = parse_det_size(det_size)
    if str(results) == "-":
        raise UsageError("--results needs a file name (the run is checkpointed next to it)")
    if summary is not None and shard_pair is not None:
        raise UsageError("--summary applies to the merged result: pass it to `mspn merge-results --ann ...`")
    if summary is not None:
        _check_writable_folder(summary, "summary file")
    ann_path, image_dir = _resolve_dataset(coco_root, ann, images)
    checkpoint = coco.checkpoint_path_for(results)
    can_resume = resume and checkpoint.exists()

    if results.exists() and not overwrite and not can_resume:
        if dets is None and shard_pair is None and workers == 1:
            _evaluate_existing(results, ann_path, summary, verbose, quiet)
            return
        raise OutputError(
            f"results file {results} already exists; pass --overwrite to recompute it, or drop --dets to only evaluate it"
        )
    _check_writable_folder(results, "results file")
    if not image_dir.is_dir():
        raise InputError(f"image folder {image_dir} not found (give --images DIR or --coco-root DIR)")

    annotations = coco.load_annotations(ann_path, image_dir)
    if workers > 1:
        _run_workers(
            workers, annotations, dets, results, summary, weights, config, flip, batch_size, device, backend,
            detector_weights, detector_config, det_size, resume, overwrite, verbose, quiet,
        )
        return

    from mspn_cli.config import load_pose_config
    from mspn_cli.pipeline import PoseEstimator

    assigned = coco.select_shard(annotations.image_ids, *shard_pair) if shard_pair else annotations.image_ids
    if dets is not None:
        detection_list = coco.load_detections(dets)
        boxes_fingerprint = f"file sha256:{coco.file_sha256(dets)}"
        box_source = str(dets)
    else:
        dets_file = detections_cache_path(results)
        detector_fingerprint = _detect_or_reuse(
            dets_file, annotations, assigned, detector_weights, detector_config, det_size_pair, device, backend,
            overwrite, quiet, always_load_detector=shard_pair is not None,
        )
        detection_list = coco.load_detections(dets_file)
        # Shards each detect their own images, so their boxes files differ: they are
        # tied together by the detector's identity instead of a file hash.
        boxes_fingerprint = detector_fingerprint if shard_pair is not None else f"file sha256:{coco.file_sha256(dets_file)}"
        box_source = str(dets_file)
    selection = coco.select_person_detections(detection_list, annotations.image_ids)
    if not quiet:
        _print_detection_counts(selection, box_source)

    pose_config = load_pose_config(config) if config else None
    estimator = PoseEstimator(pose_config, weights, device=device, backend=backend, flip=flip, batch_size=batch_size,
                              progress=not quiet)
    settings = run_settings(estimator, boxes_fingerprint, annotations)
    info = {"box_source": box_source, "annotations": str(ann_path), "images": str(image_dir),
            "batch_size": estimator.batch_size, "device": device, "backend": estimator.backend_name}
    run = _run_with_progress(estimator, annotations, selection, results, shard_pair, settings, info, resume, quiet)

    counts = run_counts(selection, run.images_with_detections, run.detections_used, len(run.image_ids),
                        len(run.records), run.missing_images)
    if shard_pair is not None:
        if not quiet:
            console_err.print(
                f"shard {shard_pair[0]}/{shard_pair[1]}: {len(run.records)} instance(s) from {len(run.image_ids)} image(s) "
                f"written to {results}; combine all shards with `mspn merge-results`"
            )
        _report_missing(run.missing_images)
        raise typer.Exit(EXIT_PARTIAL if run.missing_images else EXIT_OK)

    report = coco.evaluate_keypoints(annotations, run.records)
    if not quiet:
        console_err.print(f"wrote {len(run.records)} instance(s) to {results}")
    _finish(report, results=results, ann_path=ann_path, summary=summary, settings={**settings, **info},
            counts=counts, verbose=verbose, quiet=quiet, missing=run.missing_images)


def run_settings(estimator: Any, boxes_fingerprint: str, annotations: coco.CocoKeypointAnnotations) -> Dict[str, Any]:
    """What must be equal for a checkpoint to be resumed or for shards to be merged."""
    cfg = estimator.config
    return {
        "boxes": boxes_fingerprint,
        "annotation_images": coco.image_set_digest(annotations.image_ids),
        "model": cfg.model.name,
        "input_size": list(cfg.model.input_size),
        "flip": bool(estimator.flip),
        "decoder": DECODER_NAME,
        "weights_sha256": estimator.weights_sha256,
    }


def run_counts(selection: coco.DetectionSelection, images_with_detections: int, detections_used: int, images: int,
               instances: int, missing: List[Tuple[int, str]]) -> Dict[str, Any]:
    return {
        "images": images,
        "images_with_detections": images_with_detections,
        "detections_in_file": selection.total,
        "detections_used": detections_used,
        "detections_dropped_not_person": selection.dropped_not_person,
        "detections_dropped_unknown_image": selection.dropped_unknown_image,
        "instances": instances,
        "missing_images": len(missing),
        "missing_image_ids": [image_id for image_id, _ in missing],
    }


def _print_detection_counts(selection: coco.DetectionSelection, source: str) -> None:
    if selection.total == 0:
        warn(f"{source} holds no detections: every stat will be 0")
        return
    dropped = selection.dropped_not_person + selection.dropped_unknown_image
    detail = (
        f" ({selection.dropped_not_person} not person, {selection.dropped_unknown_image} on images not in the annotations)"
        if dropped else ""
    )
    console_err.print(f"{source}: {selection.used} of {selection.total} detection(s) used, {dropped} dropped{detail}")


def _run_with_progress(estimator, annotations, selection, results, shard_pair, settings, info, resume, quiet) -> coco.EvalRun:
    progress, task = make_progress(None, quiet, "eval-coco")

    def on_progress(finished: int, total: int) -> None:
        progress.update(task, completed=finished, total=total)

    try:
        with progress:
            run = coco.run_keypoint_eval(
                estimator, annotations, selection, results, shard=shard_pair, settings=settings, info=info,
                resume=resume, on_progress=on_progress,
            )
    except KeyboardInterrupt:
        console_err.print(
            f"[yellow]interrupted[/yellow]: finished images are kept in {coco.checkpoint_path_for(results)}; "
            "run the same command again to continue"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if run.resumed_images and not quiet:
        console_err.print(f"resumed: {run.resumed_images} image(s) taken from the checkpoint")
    return run


def _detect_or_reuse(dets_file: Path, annotations, image_ids, detector_weights, detector_config, det_size, device,
                     backend, overwrite, quiet, always_load_detector: bool = False) -> str:
    """RetinaNet boxes for the images, cached in `dets_file` (reused unless --overwrite).

    Returns a description of the detector (model, weights hash, threshold, input size),
    or "" when the cache was reused without loading the detector.
    """
    reuse = dets_file.exists() and not overwrite
    if reuse and not always_load_detector:
        if not quiet:
            console_err.print(f"reusing detections from {dets_file} (--overwrite recomputes them)")
        return ""
    from mspn_cli.config import load_detector_config
    from mspn_cli.pipeline import PersonDetector

    det_cfg = load_detector_config(detector_config) if detector_config else None
    detector = PersonDetector(det_cfg, detector_weights, device=device, backend=backend, det_size=det_size,
                              box_thr=DETECTOR_BOX_THR, progress=not quiet)
    pre = detector.config.preprocess
    fingerprint = (f"{detector.config.model.name} sha256:{detector.weights_sha256} box_thr {DETECTOR_BOX_THR} "
                   f"det_size {pre.short_side},{pre.max_side}")
    if reuse:
        if not quiet:
            console_err.print(f"reusing detections from {dets_file} (--overwrite recomputes them)")
        return fingerprint
    _check_writable_folder(dets_file, "detections cache")
    progress, task = make_progress(len(image_ids), quiet, "detect")
    with progress:
        _, missing = coco.run_person_detection(
            detector, annotations, image_ids, dets_file, on_progress=lambda done, total: progress.update(task, completed=done)
        )
    if not quiet:
        console_err.print(f"person detections written to {dets_file}")
    if missing:
        _report_missing(missing)
    return fingerprint


def _evaluate_existing(results: Path, ann_path: Path, summary: Optional[Path], verbose: bool, quiet: bool) -> None:
    """`--results EXISTING.json` without --dets: score the file, no network."""
    if not quiet:
        console_err.print(f"evaluating existing {results} (no inference; --overwrite recomputes it)")
    annotations = coco.load_annotations(ann_path)
    report = coco.evaluate_keypoints(annotations, results)
    counts = {"images": len(annotations.image_ids), "instances": report.num_results}
    _finish(report, results=results, ann_path=ann_path, summary=summary,
            settings={"results_file": str(results), "results_sha256": coco.file_sha256(results)},
            counts=counts, verbose=verbose, quiet=quiet, missing=[])


# --------------------------------------------------------------------------- --workers


def _run_workers(workers, annotations, dets, results, summary, weights, config, flip, batch_size, device, backend,
                 detector_weights, detector_config, det_size, resume, overwrite, verbose, quiet) -> None:
    """N child processes `mspn eval-coco --shard k/N`, then merge and evaluate like a single run."""
    if dets is None:
        # Detect once here so every worker shares one boxes file (and one fingerprint).
        dets = detections_cache_path(results)
        if not dets.exists() or overwrite:
            _detect_or_reuse(dets, annotations, annotations.image_ids, detector_weights, detector_config,
                             parse_det_size(det_size), device, backend, overwrite, quiet)
    parts = [coco.shard_results_path(results, k, workers) for k in range(workers)]
    common: List[str] = [
        "--dets", str(dets), "--ann", str(annotations.path), "--images", str(annotations.image_dir),
        "--device", device, "--backend", backend, "--quiet", "--resume" if resume else "--no-resume",
    ]
    if overwrite:
        common.append("--overwrite")
    for flag, value in (("--weights", weights), ("--config", config), ("--batch-size", batch_size)):
        if value is not None:
            common += [flag, str(value)]
    if flip is not None:
        common.append("--flip" if flip else "--no-flip")

    children = []
    for k, part in enumerate(parts):
        if part.exists() and resume and not overwrite and not coco.checkpoint_path_for(part).exists():
            children.append((k, part, None, None))  # finished by an earlier run
            continue
        log_path = part.with_suffix(".log")
        log = open(log_path, "w")
        command = [sys.executable, "-m", "mspn_cli", "eval-coco", *common, "--results", str(part), "--shard", f"{k}/{workers}"]
        children.append((k, part, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), (log, log_path)))
    if not quiet:
        console_err.print(f"running {workers} worker process(es); logs in {parts[0].with_suffix('.log').name} ...")
    failed = []
    try:
        for k, part, proc, log in children:
            if proc is None:
                continue
            code = proc.wait()
            log[0].close()
            if code not in (EXIT_OK, EXIT_PARTIAL):
                failed.append((k, code, log[1]))
    except KeyboardInterrupt:
        for _, _, proc, _ in children:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        console_err.print("[yellow]interrupted[/yellow]: workers stopped; run the same command again to continue")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if failed:
        k, code, log_path = failed[0]
        tail = _last_line(log_path)
        raise InputError(f"worker {k}/{workers} failed (exit {code}): {tail} (see {log_path})")

    merged = coco.merge_results(parts, annotations)
    coco.write_results(results, merged.records)
    for _, part, _, log in children:
        part.unlink()
        if log is not None:
            log[1].unlink(missing_ok=True)
    if not quiet:
        console_err.print(f"merged {workers} shard(s): wrote {len(merged.records)} instance(s) to {results}")
    report = coco.evaluate_keypoints(annotations, merged.records)
    _finish(report, results=results, ann_path=annotations.path, summary=summary,
            settings={**merged.settings, **merged.info, "workers": workers}, counts=_merged_counts(merged),
            verbose=verbose, quiet=quiet, missing=merged.missing_images)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def _merged_counts(merged: coco.MergedResults) -> Dict[str, Any]:
    counts = dict(merged.counts)
    counts.update(
        images=len(merged.image_ids),
        instances=len(merged.records),
        missing_images=len(merged.missing_images),
        missing_image_ids=[image_id for image_id, _ in merged.missing_images],
        shards=merged.count,
    )
    return counts


# --------------------------------------------------------------------------- merge-results


@app.command("merge-results")
@guarded
def merge_results_command(
    parts: List[Path] = typer.Argument(..., help="All shard files of one run (written by eval-coco --shard K/N)."),
    output: Path = typer.Option(..., "-o", "--output", help="Merged COCO keypoint results JSON (identical to a single run's)."),
    ann: Optional[Path] = typer.Option(
        None, "--ann", help="Annotation file: check that the shards cover it exactly, then evaluate. Default: merge only."
    ),
    summary: Optional[Path] = typer.Option(None, "--summary", help="Write stats, settings and counts here (needs --ann). Default: none."),
    overwrite: bool = opt.OVERWRITE,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print pycocotools' output (always in OUTPUT.eval.log)."),
    quiet: bool = opt.QUIET,
) -> None:
    """Merge the shard files of `mspn eval-coco --shard K/N` and optionally evaluate.

    Refuses a missing shard, a shard given twice, images claimed by two shards, and
    shards from runs with different settings. Example:
    `mspn merge-results val.shard-*.json -o val.json --ann person_keypoints_val2017.json --summary s.json`.
    """
    from mspn_cli.io.writers import check_output_path

    if summary is not None and ann is None:
        raise UsageError("--summary needs --ann (the stats come from evaluating against the annotations)")
    check_output_path(output, overwrite, "merged results")
    if summary is not None:
        _check_writable_folder(summary, "summary file")
    annotations = coco.load_annotations(ann) if ann is not None else None
    merged = coco.merge_results(parts, annotations)
    coco.write_results(output, merged.records)
    if not quiet:
        console_err.print(f"merged {merged.count} shard(s): wrote {len(merged.records)} instance(s) to {output}")
    if annotations is None:
        _report_missing(merged.missing_images)
        raise typer.Exit(EXIT_PARTIAL if merged.missing_images else EXIT_OK)
    report = coco.evaluate_keypoints(annotations, merged.records)
    _finish(report, results=output, ann_path=annotations.path, summary=summary,
            settings={**merged.settings, **merged.info}, counts=_merged_counts(merged), verbose=verbose, quiet=quiet,
            missing=merged.missing_images)
