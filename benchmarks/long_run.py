#!/usr/bin/env python
"""Memory over a long run: the real `mspn` commands over N images, RSS sampled as they go.

    python benchmarks/long_run.py --images 200          # about 12 minutes on 2 cores
    python benchmarks/long_run.py --images 6 --smoke    # seconds, for CI

Two commands run in child processes, each over a folder of N images that cycles
through the shared data (so every distinct image size comes back many times):

  * `mspn detect DIR --jsonl`: RetinaNet on every image (the COCO sample and
    ../shared/data/images: 28 sizes, up to 1853 x 2638 pixels);
  * `mspn keypoints DIR --boxes B --jsonl`: MSPN with flip on the COCO sample's
    recorded person boxes (about 5 persons per image).

Each JSON line the child prints marks one finished image; a thread reads the
child's VmRSS from /proc every 0.1 s. "Warm-up" is one pass over the distinct
images (every shape seen once); the figure that matters is how much RSS rises
after it. Weights are random (seeded) and written in the official pickle format:
memory does not depend on their values. A randomly initialised detector finds
nobody, which is why MSPN gets the recorded boxes instead.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from common import DEFAULT_CACHE_DIR, DEFAULT_DATA, REPO, report_console, write_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SAMPLE_INTERVAL_S = 0.1
# Growth after warm-up below this share of the warm RSS counts as flat.
FLAT_TOLERANCE = 0.05


def write_random_weights(folder: Path) -> Dict[str, Path]:
    """Seeded random weights for both networks, pickled as plain dicts of numpy arrays."""
    sys.path.insert(0, str(REPO / "src"))
    from mspn_cli._mge import import_megengine
    from mspn_cli.models import build_model

    mge = import_megengine()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, name in (("mspn", "mspn_4stage"), ("detector", "retinanet_res50_coco_3x_800size")):
        path = folder / f"random_{name}.pkl"
        if not path.is_file():
            mge.random.seed(0)
            state = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in build_model(name).state_dict().items()}
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        paths[key] = path
    return paths


def cycled_folder(sources: Sequence[Path], count: int, folder: Path) -> List[Path]:
    """`count` symlinks named 0000_<source name>, ..., cycling through `sources`."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for index in range(count):
        source = sources[index % len(sources)]
        link = folder / f"{index:04d}_{source.name}"
        if not link.exists():
            link.symlink_to(source.resolve())
        links.append(link)
    return links


def boxes_for(links: Sequence[Path], sample_dir: Path, max_per_image: Optional[int]) -> List[Dict[str, Any]]:
    """The sample's recorded person boxes, addressed by each link's file name."""
    by_source: Dict[str, List[Dict[str, Any]]] = {}
    for det in json.loads((sample_dir / "person_dets_sample.json").read_text()):
        by_source.setdefault(f"{int(det['image_id']):012d}.jpg", []).append(det)
    boxes = []
    for link in links:
        source = link.name.split("_", 1)[1]
        for det in by_source.get(source, [])[:max_per_image]:
            boxes.append({"file_name": link.name, "bbox": det["bbox"], "score": det.get("score", 1.0), "category_id": 1})
    return boxes


def _memory_mb(pid: int) -> Optional[Tuple[float, float]]:
    """(VmRSS, VmHWM) of `pid` in MB, or None once it has gone."""
    fields: Dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    fields[line[:5]] = int(line.split()[1]) / 1024
    except OSError:
        return None
    if len(fields) < 2:
        return None
    return fields["VmRSS"], fields["VmHWM"]


def run_sampled(command: Sequence[str], env: Dict[str, str], log_path: Path) -> Dict[str, Any]:
    """Run `command`; return the times its stdout lines appeared and the RSS samples."""
    samples: List[Tuple[float, float]] = []
    high_water = [0.0]
    marks: List[float] = []
    with open(log_path, "wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                memory = _memory_mb(proc.pid)
                if memory is not None:
                    samples.append((time.perf_counter(), memory[0]))
                    high_water[0] = max(high_water[0], memory[1])
                stop.wait(SAMPLE_INTERVAL_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for line in proc.stdout:
            if line.strip():
                marks.append(time.perf_counter())
        proc.wait()
        stop.set()
        sampler.join()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise SystemExit(f"error: {' '.join(command[:2])} exited with {proc.returncode}:\n{tail}")
    return {"started": started, "seconds": time.perf_counter() - started, "marks": marks, "samples": samples,
            # VmHWM, not wait4's ru_maxrss: Linux carries the forking parent's
            # peak into the child's ru_maxrss across exec, so it reported the
            # benchmark's own size rather than the command's.
            "peak_rss_mb": high_water[0]}


def summarise(name: str, run: Dict[str, Any], images: int, warmup: int) -> Dict[str, Any]:
    """RSS at each finished image, and how much it rose after the warm-up pass."""
    marks, samples = run["marks"], run["samples"]
    if len(marks) != images:
        raise SystemExit(f"error: {name} reported {len(marks)} images, expected {images}")
    times = np.asarray([t for t, _ in samples], np.float64)
    values = np.asarray([v for _, v in samples], np.float64)
    per_image: List[float] = []
    previous = run["started"]
    for mark in marks:  # the highest RSS seen while each image was being processed
        window = values[(times > previous) & (times <= mark)]
        if window.size == 0:
            window = values[times <= mark][-1:]
        per_image.append(float(window.max()) if window.size else 0.0)
        previous = mark
    warm = max(per_image[:warmup])
    after = max(per_image[warmup:]) if images > warmup else warm
    tail = np.asarray(per_image[warmup:], np.float64)
    slope = float(np.polyfit(np.arange(len(tail)), tail, 1)[0] * 100) if len(tail) >= 3 else 0.0
    growth = after - warm
    return {
        "command": name,
        "images": images,
        "warmup_images": warmup,
        "seconds": run["seconds"],
        "first_image_s": marks[0] - run["started"],  # start-up, weights, graph load or export, first image
        "seconds_per_image": (marks[-1] - marks[0]) / (images - 1),  # steady state
        "rss_warm_mb": warm,
        "rss_after_warmup_max_mb": after,
        "rss_end_mb": per_image[-1],
        "growth_after_warmup_mb": growth,
        "slope_mb_per_100_images": slope,
        "peak_rss_mb": run["peak_rss_mb"],
        "flat": growth <= FLAT_TOLERANCE * warm,
        "rss_per_image_mb": [round(v, 1) for v in per_image],
    }


def long_run(data_dir: Path, images: int, mspn_home: Path, det_size: Optional[str], smoke: bool) -> List[Dict[str, Any]]:
    """Both commands over `images` images each, in a temporary folder; one summary row each."""
    with tempfile.TemporaryDirectory(prefix="mspn-long-run-") as work:
        return _long_run(data_dir, images, Path(work), mspn_home, det_size, smoke)


def _long_run(data_dir: Path, images: int, work_dir: Path, mspn_home: Path, det_size: Optional[str], smoke: bool):
    sample_dir = data_dir / "coco_sample"
    coco = sorted(sample_dir.glob("*.jpg"))
    photos = sorted(p for p in (data_dir / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not coco:
        raise SystemExit(f"error: no COCO sample images in {sample_dir}; give the shared data folder with --data")
    weights = write_random_weights(mspn_home / "bench-weights")
    mspn = Path(sys.executable).with_name("mspn")
    env = dict(os.environ, MSPN_HOME=str(mspn_home), NO_COLOR="1")
    common = ["-q", "--jsonl", "--overwrite"]
    results = []

    detect_sources = coco + photos
    detect_dir = cycled_folder(detect_sources, images, work_dir / "detect")[0].parent
    command = [str(mspn), "detect", str(detect_dir), "--detector-weights", str(weights["detector"]),
               "-o", str(work_dir / "dets.json"), *common]
    if det_size:
        command += ["--det-size", det_size]
    run = run_sampled(command, env, work_dir / "detect.log")
    results.append(summarise("mspn detect", run, images, min(len(detect_sources), max(1, images // 2))))

    # Images without recorded persons would be refused by --boxes (no boxes for this image).
    recorded = {f"{int(det['image_id']):012d}.jpg" for det in json.loads((sample_dir / "person_dets_sample.json").read_text())}
    coco = [path for path in coco if path.name in recorded]
    links = cycled_folder(coco, images, work_dir / "keypoints")
    boxes_path = work_dir / "boxes.json"
    boxes_path.write_text(json.dumps(boxes_for(links, sample_dir, 1 if smoke else None)))
    command = [str(mspn), "keypoints", str(links[0].parent), "--boxes", str(boxes_path), "--weights", str(weights["mspn"]),
               "--json", str(work_dir / "keypoints.json"), *common]
    run = run_sampled(command, env, work_dir / "keypoints.log")
    results.append(summarise("mspn keypoints --boxes", run, images, min(len(coco), max(1, images // 2))))
    return results


def print_table(rows: List[Dict[str, Any]], console) -> None:
    from rich.table import Table

    table = Table(title="memory over a long run (child process RSS; warm-up = one pass over the distinct images)",
                  title_justify="left")
    for column in ("command", "images", "s/image", "RSS warm", "max after", "growth", "MB/100 img", "peak", "flat"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for row in rows:
        table.add_row(
            row["command"], str(row["images"]), f"{row['seconds_per_image']:.2f}",
            f"{row['rss_warm_mb']:.0f} MB", f"{row['rss_after_warmup_max_mb']:.0f} MB",
            f"{row['growth_after_warmup_mb']:+.0f} MB", f"{row['slope_mb_per_100_images']:+.1f}",
            f"{row['peak_rss_mb']:.0f} MB", "yes" if row["flat"] else "NO",
        )
    console.print(table)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="images per command (default 200)")
    parser.add_argument("--smoke", action="store_true", help="one person per image and a small detector size")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"the shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--det-size", help="detector SHORT[,MAX] (default: the config's 800,1333; smoke 128,160)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                        help="MSPN_HOME for the random weights and their exported graphs")
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images must be at least 2")
    console = report_console()
    det_size = args.det_size or ("128,160" if args.smoke else None)
    rows = long_run(Path(args.data), args.images, Path(args.cache_dir), det_size, args.smoke)
    print_table(rows, console)
    if args.out:
        write_json(args.out, rows, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
