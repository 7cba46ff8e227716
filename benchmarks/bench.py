#!/usr/bin/env python
"""Speed of the inference backends, against numpy's sgemm and the official-style baseline.

    python benchmarks/bench.py                # full run (several minutes on 2 cores)
    python benchmarks/bench.py --smoke        # tiny sizes, < 60 s, for CI
    python benchmarks/bench.py --out bench.json --backends onnxruntime,mge-lite

What is measured, in one process, one backend after the other:
  * sgemm: numpy float32 matrix product GFLOP/s, the practical ceiling of this CPU;
  * MSPN: milliseconds per person with flip test (2 crops per person) at 1, 4, 8 and 16
    persons per forward pass, on real person crops cut from the COCO sample images;
  * the official-style baseline: one traced MegEngine call per person on its crop and
    flipped crop (a batch of 2), as the official inference script runs MSPN;
  * the detector: milliseconds per image at the configured size (800 px short side);
  * end to end: images/s of `PosePipeline` (detector + crops + MSPN + decoding);
  * memory over a long run: `mspn detect` and `mspn keypoints` over 200 images in
    child processes, RSS sampled throughout (benchmarks/long_run.py).

Effective GFLOP/s count 2 x the multiply-adds of every convolution, taken from the
traced graph at the measured input size (MSPN ~42 GFLOP per crop, RetinaNet ~450 GFLOP
per 800 x 1216 image). Weights are random (seeded): speed does not depend on them, and
the benchmark needs no download. For the same reason the end-to-end run replays the
COCO sample's recorded person boxes after running the detector at full cost (random
detector weights find nobody). Timings on a shared machine are noisy: compare ratios
within one run; each figure is the fastest of its repeats.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ceiling import cpu_name, conv_gflop, describe_sgemm, fastest, module_version, peak_rss_mb, sgemm_ceiling
from common import DEFAULT_CACHE_DIR, DEFAULT_DATA, report_console, write_json

RANDOM_WEIGHTS_NOTE = "random (seeded) weights: timing only, outputs are meaningless"


# --------------------------------------------------------------------------- profiles


class Profile:
    def __init__(self, name, persons, mspn_stages, det_size, sgemm_n, repeats, e2e_images):
        self.name = name
        self.persons: List[int] = list(persons)
        self.mspn_stages = mspn_stages  # the smoke run uses a 1-stage MSPN: same layers, a quarter of the work
        self.det_size: Tuple[int, int] = det_size  # (short side, max side)
        self.sgemm_n = sgemm_n
        self.repeats = repeats
        self.e2e_images = e2e_images


FULL = Profile("full", (1, 4, 8, 16), 4, (800, 1333), 2048, 3, 4)
SMOKE = Profile("smoke", (1, 2), 1, (128, 160), 2048, 1, 1)  # sgemm stays 2048: smaller ones under-report the ceiling

def load_sample(data_dir: Path):
    """COCO sample images (BGR) and their recorded person boxes (x1, y1, x2, y2, score)."""
    from mspn_cli.io.sources import read_image

    sample = data_dir / "coco_sample"
    dets_file = sample / "person_dets_sample.json"
    if not dets_file.is_file():
        raise SystemExit(f"error: {dets_file} not found; give the shared data folder with --data")
    boxes: Dict[int, List[List[float]]] = {}
    for det in json.loads(dets_file.read_text()):
        x, y, w, h = det["bbox"]
        boxes.setdefault(int(det["image_id"]), []).append([x, y, x + w, y + h, float(det.get("score", 1.0))])
    images = []
    for image_id in sorted(boxes):
        path = sample / f"{image_id:012d}.jpg"
        if path.is_file():
            images.append((path.name, read_image(path), np.asarray(boxes[image_id], np.float32)))
    if not images:
        raise SystemExit(f"error: no sample images found in {sample}")
    return images


def person_crops(images, count: int, pose_config) -> np.ndarray:
    """`count` real person crops (normalised, 3 x 256 x 192), cycling through the sample."""
    from mspn_cli.pose.preprocess import crop_persons, extend_box, normalize_image

    crops = []
    for _, image, boxes in images:
        ext = extend_box(boxes[:, :4], pose_config.preprocess.box_extension, pose_config.aspect_ratio)
        normalized = normalize_image(image, pose_config.preprocess.mean, pose_config.preprocess.std)
        crops.extend(crop_persons(normalized, ext, pose_config.model.input_size))
        if len(crops) >= count:
            break
    while len(crops) < count:
        crops.extend(crops[: count - len(crops)])
    return np.stack(crops[:count]).astype(np.float32)


def with_flips(crops: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([crops, crops[:, :, :, ::-1]], axis=0))


# --------------------------------------------------------------------------- the run


def build_models(profile: Profile):
    from mspn_cli._mge import import_megengine
    from mspn_cli.models import build_model
    from mspn_cli.models.mspn import MSPN

    mge = import_megengine()
    mge.random.seed(0)  # same random weights every run, so exported graphs are found in the cache
    mspn = build_model("mspn_4stage") if profile.mspn_stages == 4 else MSPN(num_stages=profile.mspn_stages)
    mspn.eval()
    detector = build_model("retinanet_res50_coco_3x_800size")
    return mspn, detector


def run_benchmark(args, profile: Profile, console) -> Dict[str, Any]:
    from mspn_cli._mge import import_megengine, silence_exit_chatter
    from mspn_cli.runtime import available_backends, create_backend
    from mspn_cli.runtime.base import usable_cpus
    from mspn_cli.export.cache import state_digest
    from mspn_cli.config import load_detector_config, load_pose_config
    from mspn_cli.detection.preprocess import prepare_detector_batch

    mge = import_megengine()
    silence_exit_chatter()
    pose_config = load_pose_config()
    det_config = load_detector_config()
    available = available_backends("cpu")
    backends = [b for b in (args.backends.split(",") if args.backends else available) if b]
    for name in backends:
        if name not in available:
            raise SystemExit(f"error: backend '{name}' is not available here; available: {', '.join(available)}")
    skipped: Dict[str, str] = {}
    if "mge-lite" not in available:  # the package's own probe left it out: say why
        from mspn_cli.runtime.lite_probe import lite_verdict

        works, why = lite_verdict()
        if not works:
            skipped["mge-lite"] = why
            console.print(f"[yellow]mge-lite skipped[/yellow]: {why}")

    result: Dict[str, Any] = {
        "profile": profile.name,
        "weights": RANDOM_WEIGHTS_NOTE,
        "machine": {
            "cpus": usable_cpus(),  # the CPUs this process may use (affinity), as the backends count them
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "megengine": mge.__version__,
            "onnxruntime": module_version("onnxruntime"),
        },
        "backends": backends,
        "skipped_backends": skipped,
    }

    console.print(f"[bold]mspn-cli benchmark[/bold] ({profile.name}; {RANDOM_WEIGHTS_NOTE})")
    result["sgemm"] = sgemm_ceiling(profile.sgemm_n)
    gflops = result["sgemm"]["gflops"]
    console.print(f"numpy sgemm {profile.sgemm_n}^3: {describe_sgemm(result['sgemm'])} (measured again at the end; the best counts)")

    images = load_sample(Path(args.data))
    max_persons = max(profile.persons)
    crops = person_crops(images, max_persons, pose_config)
    det_batch, det_infos = prepare_detector_batch([images[0][1]], *profile.det_size, det_config.preprocess.size_divisor)

    mspn, detector = build_models(profile)
    mspn_key, detector_key = state_digest(mspn), state_digest(detector)
    crop_shape = (1, 3, *pose_config.model.input_size)
    mspn_gflop = conv_gflop(mspn, crop_shape, crop_shape)
    det_gflop = conv_gflop(detector, (1, 3, 256, 320), det_batch.shape)
    result["gflop"] = {
        "mspn_per_crop": mspn_gflop,
        "mspn_stages": profile.mspn_stages,
        "detector_per_image": det_gflop,
        "detector_input": list(det_batch.shape),
    }
    console.print(
        f"work: MSPN ({profile.mspn_stages} stages) {mspn_gflop:.1f} GFLOP per crop; "
        f"RetinaNet {det_gflop:.0f} GFLOP per {det_batch.shape[2]}x{det_batch.shape[3]} image"
    )

    mspn_rows: List[Dict[str, Any]] = []
    det_rows: List[Dict[str, Any]] = []
    setups: Dict[str, Dict[str, float]] = {}
    e2e_rows: List[Dict[str, Any]] = []
    e2e_backends = [b for b in (args.e2e_backends.split(",") if args.e2e_backends else backends[:1]) if b in backends]
    for name in backends:
        console.print(f"[bold]{name}[/bold]: preparing (first use exports the graph; later runs load it from the cache) ...")
        start = time.perf_counter()
        # The input specs the CLI exports with (dynamic batch; dynamic H/W for the detector), so the
        # export happens here and not inside the first timed call.
        mspn_backend = create_backend(name, mspn, cache_key=f"bench-mspn-{mspn_key[:16]}", **spec_options(pose_config))
        mspn_setup = time.perf_counter() - start
        start = time.perf_counter()
        det_backend = create_backend(name, detector, cache_key=f"bench-det-{detector_key[:16]}", **spec_options(det_config))
        det_setup = time.perf_counter() - start
        setups[name] = {"mspn_s": mspn_setup, "detector_s": det_setup, "peak_rss_mb": peak_rss_mb()}

        for persons in profile.persons:
            batch = with_flips(crops[:persons])
            seconds, samples = fastest(lambda: mspn_backend.run(batch), profile.repeats)
            mspn_rows.append(_row(name, persons, seconds, samples, per=persons, gflop=2 * persons * mspn_gflop, sgemm=gflops))
            console.print(f"  MSPN {persons:>2} persons: {seconds / persons * 1e3:8.0f} ms per person")
        seconds, samples = fastest(lambda: det_backend.run(det_batch), max(1, profile.repeats - 1))
        det_rows.append(_row(name, 1, seconds, samples, per=1, gflop=det_gflop, sgemm=gflops))
        console.print(f"  detector: {seconds * 1e3:8.0f} ms per image")

        if name in e2e_backends:
            e2e_rows.append(end_to_end(name, mspn_backend, det_backend, images[: profile.e2e_images], pose_config, profile))
            console.print(f"  end to end: {e2e_rows[-1]['images_per_s']:.3f} images/s")
        setups[name]["peak_rss_mb"] = peak_rss_mb()
        for backend in (mspn_backend, det_backend):
            backend.close()
        del mspn_backend, det_backend
        gc.collect()

    baseline = _baseline(mspn_rows, mspn, crops, profile, mspn_gflop, gflops, console)
    for row in mspn_rows:
        row["speedup"] = baseline["ms_per_unit"] / row["ms_per_unit"] if baseline else None
    det_reference = next((r for r in det_rows if r["backend"] == "megengine"), None)
    for row in det_rows:
        row["speedup"] = det_reference["ms_per_unit"] / row["ms_per_unit"] if det_reference else None
    result.update(
        mspn=mspn_rows, baseline=baseline, detector=det_rows, end_to_end=e2e_rows, setup=setups, peak_rss_mb=peak_rss_mb()
    )
    # sgemm again at the end: on a shared machine the ceiling is the best of both.
    again = sgemm_ceiling(profile.sgemm_n)
    result["sgemm"] = {"start": result["sgemm"], "end": again, "gflops": max(gflops, again["gflops"])}
    for row in mspn_rows + det_rows + ([baseline] if baseline else []):
        row["pct_sgemm"] = 100.0 * row["gflops"] / result["sgemm"]["gflops"]
    return result


def spec_options(config) -> Dict[str, Any]:
    from mspn_cli.runtime.network import input_spec_of

    spec = input_spec_of(config)
    return {"input_shape": spec.shape, "dynamic_axes": spec.axes_dict()}


def _row(backend, batch, seconds, samples, per, gflop, sgemm) -> Dict[str, Any]:
    achieved = gflop / seconds
    return {
        "backend": backend,
        "batch": batch,
        "seconds": seconds,
        "samples": samples,
        "ms_per_unit": seconds / per * 1e3,
        "gflops": achieved,
        "pct_sgemm": 100.0 * achieved / sgemm,
        "peak_rss_mb": peak_rss_mb(),  # so far in the run: grows where a backend needs more memory
    }


def _baseline(mspn_rows, mspn, crops, profile, mspn_gflop, sgemm, console) -> Optional[Dict[str, Any]]:
    """The official inference style: megengine, one call per person on [crop, flipped crop]."""
    from mspn_cli.runtime import create_backend

    row = next((r for r in mspn_rows if r["backend"] == "megengine" and r["batch"] == 1), None)
    if row is None:
        console.print("official-style baseline: measuring megengine on one person ...")
        backend = create_backend("megengine", mspn)
        batch = with_flips(crops[:1])
        seconds, samples = fastest(lambda: backend.run(batch), profile.repeats)
        row = _row("megengine", 1, seconds, samples, per=1, gflop=2 * mspn_gflop, sgemm=sgemm)
    baseline = dict(row)
    baseline["speedup"] = 1.0
    return baseline


class ReplayDetector:
    """Runs the real detector at full cost, then returns the sample's recorded person boxes.

    With random weights the detector finds nobody, which would leave MSPN idle.
    """

    def __init__(self, detector, boxes_by_image: Dict[int, np.ndarray]):
        self.detector = detector
        self.boxes_by_image = boxes_by_image

    def detect(self, image: np.ndarray):
        from mspn_cli.detection.result import Detections

        self.detector.detect(image)
        return Detections.from_array(self.boxes_by_image[id(image)])


def end_to_end(name, mspn_backend, det_backend, images, pose_config, profile) -> Dict[str, Any]:
    from mspn_cli.pipeline import PersonDetector, PipelineItem, PoseEstimator, PosePipeline

    detector = PersonDetector(backend=det_backend, det_size=profile.det_size)
    estimator = PoseEstimator(pose_config, backend=mspn_backend, batch_size=max(profile.persons))
    replay = ReplayDetector(detector, {id(image): boxes for _, image, boxes in images})
    pipeline = PosePipeline(estimator, replay)
    items = [PipelineItem(key, image) for key, image, _ in images]
    persons = sum(len(boxes) for _, _, boxes in images)

    def run():
        for _ in pipeline.run(items):
            pass

    seconds, samples = fastest(run, 1)
    return {
        "backend": name,
        "images": len(items),
        "persons": persons,
        "seconds": seconds,
        "images_per_s": len(items) / seconds,
        "persons_per_s": persons / seconds,
    }


# --------------------------------------------------------------------------- report


def print_tables(result: Dict[str, Any], console) -> None:
    from rich.table import Table

    sgemm = result["sgemm"]["gflops"]
    table = Table(
        title=f"ms per person (MSPN with flip: 2 crops each) and per image (RetinaNet); numpy sgemm {sgemm:.0f} GFLOP/s",
        title_justify="left",
    )
    for column in ("workload", "backend", "batch", "ms", "GFLOP/s", "% sgemm", "speed-up"):
        table.add_column(column, justify="left" if column in ("workload", "backend") else "right")

    def add(workload, row, batch_text):
        speedup = row.get("speedup")
        table.add_row(
            workload,
            row["backend"],
            batch_text,
            f"{row['ms_per_unit']:.0f}",
            f"{row['gflops']:.1f}",
            f"{row['pct_sgemm']:.0f}%",
            f"{speedup:.2f}x" if speedup else "-",
        )

    if result.get("baseline"):
        add("MSPN, official style (1 call per person)", result["baseline"], "1 person")
    for row in result["mspn"]:
        add("MSPN", row, f"{row['batch']} persons")
    shape = result["gflop"]["detector_input"]
    for row in result["detector"]:
        add(f"RetinaNet {shape[2]}x{shape[3]}", row, "1 image")
    console.print(table)
    console.print("speed-up: MSPN rows vs the official-style baseline; RetinaNet rows vs the megengine backend.")

    if result["end_to_end"]:
        e2e = Table(title="end to end (PosePipeline: detector + crops + MSPN with flip + decoding)", title_justify="left")
        for column in ("backend", "images", "persons", "images/s", "persons/s"):
            e2e.add_column(column, justify="left" if column == "backend" else "right")
        for row in result["end_to_end"]:
            e2e.add_row(row["backend"], str(row["images"]), str(row["persons"]), f"{row['images_per_s']:.3f}", f"{row['persons_per_s']:.2f}")
        console.print(e2e)
    setup = ", ".join(f"{name} {s['mspn_s']:.1f} s + {s['detector_s']:.1f} s" for name, s in result["setup"].items())
    console.print(f"backend setup (MSPN + detector; includes graph export on first use): {setup}")
    console.print(f"sgemm at the start: {describe_sgemm(result['sgemm']['start'])}; at the end: {describe_sgemm(result['sgemm']['end'])}")
    console.print(f"peak RSS: {result['peak_rss_mb']:.0f} MB; {RANDOM_WEIGHTS_NOTE}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and a 1-stage MSPN: a quick check that everything runs (< 60 s)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"the shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--backends", help="comma-separated backends to measure (default: every available one)")
    parser.add_argument("--e2e-backends", help="backends for the end-to-end run (default: the fastest available)")
    parser.add_argument("--persons", help="persons per MSPN batch, comma-separated (default 1,4,8,16; smoke 1,2)")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (the fastest counts)")
    parser.add_argument("--long-run", type=int, help="images for the memory run of the real commands (default 200; smoke 4; 0 skips it)")
    parser.add_argument(
        "--cache-dir",
        default=str(DEFAULT_CACHE_DIR),
        help="MSPN_HOME for the benchmark's exported graphs of random weights (kept out of your own cache)",
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the real-command figures (benchmarks/cli_speed.py)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold start (an empty graph cache: both graphs exported)")
    args = parser.parse_args(argv)

    profile = SMOKE if args.smoke else FULL
    if args.persons:
        profile.persons = [int(p) for p in args.persons.split(",") if p.strip()]
    if args.repeats:
        profile.repeats = args.repeats
    os.environ["MSPN_HOME"] = args.cache_dir

    console = report_console()
    started = time.perf_counter()
    result = run_benchmark(args, profile, console)
    long_run_images = args.long_run if args.long_run is not None else (4 if args.smoke else 200)
    if long_run_images >= 2:
        from long_run import long_run, print_table

        console.print(f"[bold]memory[/bold]: mspn detect and mspn keypoints over {long_run_images} images each ...")
        det_size = ",".join(str(v) for v in profile.det_size) if args.smoke else None
        result["long_run"] = long_run(Path(args.data), long_run_images, Path(args.cache_dir), det_size, args.smoke)
    if not args.no_cli:
        console.print("[bold]the real command[/bold]: start-up and cost per person of `mspn keypoints` against the bare network ...")
        from cli_speed import run_in_child

        result["cli"] = run_in_child(Path(args.cache_dir), args.smoke, args.no_cold, 1 if args.smoke else profile.repeats,
                                     result["sgemm"]["gflops"])
    result["total_seconds"] = time.perf_counter() - started
    print_tables(result, console)
    if result.get("long_run"):
        print_table(result["long_run"], console)
    console.print(f"total {result['total_seconds']:.0f} s")
    if args.out:
        write_json(args.out, result, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
