"""`mspn eval-coco`: the official COCO keypoint test, resumable and shardable (merging: merge_cmd.py).

The run itself is in evaluation/ (job, run, checkpoint, shards, workers); this module
reads the options, checks the paths, and reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import console_err, guarded, make_progress
from mspn_cli.cli.eval_report import (
    eval_log_path,
    finish,
    print_detection_counts,
    report_missing,
    root_verbosity,
)
from mspn_cli.config import load_eval_config
from mspn_cli.settings import RunSettings
from mspn_cli.errors import EXIT_OK, EXIT_PARTIAL, InputError, OutputExistsError, UsageError, interrupt_exit_code
from mspn_cli.evaluation.checkpoint import checkpoint_path_for

if TYPE_CHECKING:  # the library (numpy, pycocotools, the networks) is imported only when a command runs
    from mspn_cli.evaluation.annotations import CocoKeypointAnnotations
    from mspn_cli.engines import EngineOptions
    from mspn_cli.evaluation.job import PreparedEval
    from mspn_cli.evaluation.run import EvalRun

COCO_LAYOUT = load_eval_config().dataset


def _resolve_dataset(coco_root: Optional[Path], ann: Optional[Path], images: Optional[Path]) -> Tuple[Path, Path]:
    root = coco_root if coco_root is not None else Path(os.environ.get("COCO_ROOT") or "coco")
    ann_path = ann if ann is not None else root / COCO_LAYOUT.annotations
    image_dir = images if images is not None else root / COCO_LAYOUT.images
    if not ann_path.is_file():
        how = "" if ann is not None else " (give --coco-root DIR, set $COCO_ROOT, or give --ann FILE --images DIR)"
        raise InputError(f"annotations file {ann_path} not found{how}")
    return ann_path, image_dir


def detections_cache_path(results: Path) -> Path:
    """Where detected boxes are cached for reuse as --dets: RESULTS_dets.json."""
    return results.with_name(results.stem + "_dets.json")


def _run_outputs(results: Path, summary: Optional[Path], dets: Optional[Path], workers: int) -> List[Path]:
    """Every file a run may write (the results file is also an input when only evaluated)."""
    from mspn_cli.evaluation.shards import shard_results_path

    outputs = [results, eval_log_path(results), checkpoint_path_for(results)]
    outputs += [summary] if summary is not None else []
    outputs += [detections_cache_path(results)] if dets is None else []
    for k in range(workers if workers > 1 else 0):
        part = shard_results_path(results, k, workers)
        outputs += [part, checkpoint_path_for(part), part.with_suffix(".log"), part.with_suffix(".job.json")]
    return outputs


def _image_files(annotations: CocoKeypointAnnotations) -> List[Path]:
    return [annotations.image_path(i) for i in annotations.image_ids]


# --------------------------------------------------------------------------- eval-coco


@app.command("eval-coco")
@guarded
@opt.with_settings("pose", "detector")
@opt.with_engine_options
def eval_coco_command(
    ctx: typer.Context,
    dets: Optional[Path] = typer.Option(
        None,
        "--dets",
        help="Person detections in COCO results format ([{image_id, category_id, bbox [x,y,w,h], score}], e.g. "
        "COCO_val2017_detections_AP_H_56_person.json). As in the official test, every category-1 box on an annotated "
        "image is used, with no score or size threshold. Default: run RetinaNet (score > 0.05) and cache its boxes in "
        "RESULTS_dets.json, reused by later runs.",
    ),
    coco_root: Optional[Path] = typer.Option(
        None,
        "--coco-root",
        help="COCO folder holding annotations/person_keypoints_val2017.json and val2017/. Default: $COCO_ROOT, else ./coco.",
    ),
    ann: Optional[Path] = opt.ANN,
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the annotated images. Default: COCO_ROOT/val2017."),
    results: Path = typer.Option(
        Path(COCO_LAYOUT.results),
        "--results",
        help="Keypoint results JSON (COCO results format). Written by the run; if it already exists and --dets is not "
        "given, it is only evaluated (no network).",
    ),
    summary: Optional[Path] = opt.SUMMARY,
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
    overwrite: bool = opt.OVERWRITE,
    quiet: bool = opt.QUIET,
    settings: RunSettings = None,
    engine_options: "EngineOptions" = None,
) -> None:
    """Evaluate MSPN on COCO val2017 keypoints exactly as the official test does.

    `mspn -v eval-coco ...` also prints pycocotools' output (always in RESULTS.eval.log).
    --overwrite recomputes existing results (and a cached RESULTS_dets.json).
    Examples:
    `mspn eval-coco --coco-root ~/coco --dets COCO_val2017_detections_AP_H_56_person.json --results val.json --summary val_summary.json`;
    `mspn eval-coco --results val.json --ann person_keypoints_val2017.json` (evaluate an existing file);
    `mspn eval-coco ... --shard 3/8` then `mspn merge-results val.shard-*.json -o val.json --ann ...`;
    `mspn eval-coco ... --engine ray --ray-address auto` (the images on Ray Data actors, same bytes).
    """
    from mspn_cli.evaluation.annotations import load_annotations
    from mspn_cli.evaluation.cocoeval import evaluate_keypoints
    from mspn_cli.evaluation.job import EvalJob, load_selection, prepare_eval
    from mspn_cli.evaluation.shards import parse_shard, select_shard
    from mspn_cli.evaluation.summary import run_counts
    from mspn_cli.io.writers import check_output_path, refuse_output_onto_inputs

    from mspn_cli.runtime.devices import single_device, worker_devices

    verbose = root_verbosity(ctx) > 0
    devices = worker_devices(settings.device, workers)  # --device cuda:0,1: one worker per GPU
    if len(set(devices)) > 1 and (engine_options.name == "ray" or shard is not None):
        single_device(settings.device)  # one line: a shard or a Ray run takes one device
    workers = len(devices)
    if engine_options.name == "ray":
        if workers > 1:
            raise UsageError("--workers and --engine ray cannot be combined (Ray's actors are the workers)")
        from mspn_cli.engines.ray_engine import import_ray

        import_ray()  # without Ray: the install hint now, before any file is read
    shard_pair = parse_shard(shard) if shard is not None else None
    if shard_pair is not None and workers > 1:
        raise UsageError("--shard and --workers cannot be combined (each worker is one shard)")
    if str(results) == "-":
        raise UsageError("--results needs a file name (the run is checkpointed next to it)")
    if summary is not None and shard_pair is not None:
        raise UsageError("--summary applies to the merged result: pass it to `mspn merge-results --ann ...`")
    ann_path, image_dir = _resolve_dataset(coco_root, ann, images)
    outputs = _run_outputs(results, summary, dets, workers)
    refuse_output_onto_inputs(outputs, [ann_path, dets])
    if summary is not None:
        check_output_path(summary, True, "summary file")
    can_resume = resume and checkpoint_path_for(results).exists()

    if results.exists() and not overwrite and not can_resume:
        if dets is None and shard_pair is None and workers == 1:
            _evaluate_existing(results, ann_path, summary, verbose, quiet)
            return
        raise OutputExistsError(
            f"results file {results} already exists; pass --overwrite to recompute it, or drop --dets to only evaluate it"
        )
    check_output_path(results, True, "results file")
    if not image_dir.is_dir():
        raise InputError(f"image folder {image_dir} not found (give --images DIR or --coco-root DIR)")

    annotations = load_annotations(ann_path, image_dir)
    refuse_output_onto_inputs(outputs, _image_files(annotations))
    if workers > 1:
        _run_workers(settings, annotations, dets, results, summary, devices, resume, overwrite, verbose, quiet)
        return

    assigned = select_shard(annotations.image_ids, *shard_pair) if shard_pair else annotations.image_ids
    fingerprint = None
    if dets is None:
        dets = detections_cache_path(results)
        detector_fingerprint = _detect_or_reuse(settings, dets, annotations, assigned, overwrite, quiet,
                                                always_load_detector=shard_pair is not None)
        # Shards each detect their own images, so their boxes files differ: they are
        # tied together by the detector's identity instead of a file hash.
        fingerprint = detector_fingerprint if shard_pair is not None else None
    job = EvalJob(settings, str(ann_path), str(image_dir), str(dets), str(results), shard=shard_pair, resume=resume,
                  boxes_fingerprint=fingerprint)
    selection = load_selection(job.dets, annotations)
    if not quiet:
        print_detection_counts(selection, job.dets)
    prepared = prepare_eval(job, annotations=annotations, selection=selection)
    run = _run_with_progress(prepared, results, quiet, engine_options)

    counts = run_counts(selection, run.images_with_detections, run.detections_used, len(run.image_ids),
                        len(run.records), run.missing_images)
    if shard_pair is not None:
        if not quiet:
            console_err.print(
                f"shard {shard_pair[0]}/{shard_pair[1]}: {len(run.records)} instance(s) from {len(run.image_ids)} image(s) "
                f"written to {results}; combine all shards with `mspn merge-results`"
            )
        report_missing(run.missing_images)
        raise typer.Exit(EXIT_PARTIAL if run.missing_images else EXIT_OK)

    report = evaluate_keypoints(annotations, run.records)
    if not quiet:
        console_err.print(f"wrote {len(run.records)} instance(s) to {results}")
    finish(report, results=results, ann_path=ann_path, summary=summary, settings={**prepared.settings, **prepared.info},
           counts=counts, verbose=verbose, quiet=quiet, missing=run.missing_images)


def _run_with_progress(prepared: PreparedEval, results: Path, quiet: bool, engine_options: EngineOptions) -> EvalRun:
    from mspn_cli.engines import open_engine

    progress, task = make_progress(None, quiet, "eval-coco")

    def on_progress(finished: int, total: int) -> None:
        progress.update(task, completed=finished, total=total)

    engine = None
    if engine_options.name != "local":
        # The actors estimate every kept box, as the local evaluation pipeline does (reference §2).
        run_settings = prepared.job.settings.replace(box_thr=None, max_persons=None)
        engine = open_engine(engine_options, run_settings, need_detector=False, drawing={"kpt_thr": 0.0})
    try:
        with progress:
            run = prepared.run(on_progress, engine=engine)
    except KeyboardInterrupt as exc:
        console_err.print(
            f"[yellow]interrupted[/yellow]: finished images are kept in {checkpoint_path_for(results)}; "
            "run the same command again to continue"
        )
        raise typer.Exit(interrupt_exit_code(exc)) from None
    finally:
        if engine is not None:
            engine.close()
    if run.resumed_images and not quiet:
        console_err.print(f"resumed: {run.resumed_images} image(s) taken from the checkpoint")
    return run


def _detect_or_reuse(settings: RunSettings, dets_file: Path, annotations: CocoKeypointAnnotations,
                     image_ids: Sequence[int], overwrite: bool, quiet: bool, always_load_detector: bool = False) -> str:
    """RetinaNet boxes for the images, cached in `dets_file` (reused unless --overwrite).

    Returns a description of the detector (model, weights hash, threshold, input size),
    or "" when the cache was reused without loading the detector.
    """
    from mspn_cli.evaluation.run import run_person_detection
    from mspn_cli.io.writers import check_output_path

    from mspn_cli.config import load_detector_config
    from mspn_cli.pipeline import PersonDetector

    reuse = dets_file.exists() and not overwrite
    if reuse and not always_load_detector:
        if not quiet:
            console_err.print(f"reusing detections from {dets_file} (--overwrite recomputes them)")
        return ""
    # As the official test: every person box the detector keeps (score above its own
    # score_thr), no cap per image.
    score_thr = load_detector_config(settings.detector_config).postprocess.score_thr
    detector = PersonDetector.from_settings(settings.replace(box_thr=score_thr, max_persons=None))
    pre = detector.config.preprocess
    fingerprint = (f"{detector.config.model.name} sha256:{detector.weights_sha256} box_thr {score_thr} "
                   f"det_size {pre.short_side},{pre.max_side}")
    if reuse:
        if not quiet:
            console_err.print(f"reusing detections from {dets_file} (--overwrite recomputes them)")
        return fingerprint
    check_output_path(dets_file, True, "detections cache")
    progress, task = make_progress(len(image_ids), quiet, "detect")
    with progress:
        _, missing = run_person_detection(
            detector, annotations, image_ids, dets_file, on_progress=lambda done, total: progress.update(task, completed=done)
        )
    if not quiet:
        console_err.print(f"person detections written to {dets_file}")
    report_missing(missing)
    return fingerprint


def _evaluate_existing(results: Path, ann_path: Path, summary: Optional[Path], verbose: bool, quiet: bool) -> None:
    """`--results EXISTING.json` without --dets: score the file, no network."""
    from mspn_cli.evaluation.annotations import load_annotations
    from mspn_cli.evaluation.cocoeval import evaluate_keypoints
    from mspn_cli.evaluation.summary import file_sha256

    if not quiet:
        console_err.print(f"evaluating existing {results} (no inference; --overwrite recomputes it)")
    annotations = load_annotations(ann_path)
    report = evaluate_keypoints(annotations, results)
    counts = {"images": len(annotations.image_ids), "instances": report.num_results}
    finish(report, results=results, ann_path=ann_path, summary=summary,
           settings={"results_file": str(results), "results_sha256": file_sha256(results)},
           counts=counts, verbose=verbose, quiet=quiet, missing=[])


# --------------------------------------------------------------------------- --workers


def _run_workers(settings: RunSettings, annotations: CocoKeypointAnnotations, dets: Optional[Path], results: Path,
                 summary: Optional[Path], devices: List[str], resume: bool, overwrite: bool, verbose: bool, quiet: bool) -> None:
    """N worker processes, one shard each (their job as JSON) on `devices[k]`, then merge and evaluate like a single run."""
    from mspn_cli.evaluation.cocoeval import evaluate_keypoints
    from mspn_cli.evaluation.job import EvalJob
    from mspn_cli.evaluation.run import write_results
    from mspn_cli.evaluation.shards import merge_results, merged_counts, shard_results_path
    from mspn_cli.evaluation.workers import last_log_line, start_workers, wait_workers

    workers = len(devices)
    if dets is None:
        # Detect once here (on the first worker's device) so every worker shares one boxes file (and one fingerprint).
        dets = detections_cache_path(results)
        if not dets.exists() or overwrite:
            _detect_or_reuse(settings.replace(device=devices[0]), dets, annotations, annotations.image_ids, overwrite, quiet)
    parts = [shard_results_path(results, k, workers) for k in range(workers)]
    jobs = [
        EvalJob(settings.replace(progress=False, device=devices[k]), str(annotations.path), str(annotations.image_dir), str(dets),
                str(part), shard=(k, workers), resume=resume)
        for k, part in enumerate(parts)
        # A shard finished by an earlier run has its file and no checkpoint left.
        if not (part.exists() and resume and not overwrite and not checkpoint_path_for(part).exists())
    ]
    running = start_workers(jobs)
    if not quiet:
        console_err.print(f"running {len(running)} worker process(es); logs in {parts[0].with_suffix('.log').name} ...")
    try:
        failed = wait_workers(running)
    except KeyboardInterrupt as exc:
        console_err.print("[yellow]interrupted[/yellow]: workers stopped; run the same command again to continue")
        raise typer.Exit(interrupt_exit_code(exc)) from None
    if failed:
        first = failed[0]
        raise InputError(f"worker {first.label} failed (exit {first.returncode}): {last_log_line(first.log_path)} "
                         f"(see {first.log_path})")

    merged = merge_results(parts, annotations)
    write_results(results, merged.records)
    for part in parts:
        part.unlink()
    for worker in running:
        worker.remove_files()
    if not quiet:
        console_err.print(f"merged {workers} shard(s): wrote {len(merged.records)} instance(s) to {results}")
    report = evaluate_keypoints(annotations, merged.records)
    finish(report, results=results, ann_path=annotations.path, summary=summary,
           settings={**merged.settings, **merged.info, "workers": workers}, counts=merged_counts(merged),
           verbose=verbose, quiet=quiet, missing=merged.missing_images)
