#!/usr/bin/env python
"""What the user's own calls cost: the real `mspn` command against the bare network, in one run.

    python benchmarks/cli_speed.py                  # several minutes on 2 cores
    python benchmarks/cli_speed.py --smoke          # a short check that everything runs
    python benchmarks/cli_speed.py --out cli.json

Measured with the real `mspn` console script in child processes (onnxruntime backend,
seeded random weights, graph cache in --cache-dir), and the bare onnxruntime session on
the same cached graph in this process, one after the other:

  * `mspn --help` and `mspn --version`: wall time;
  * cold start: `mspn keypoints IMAGE` (detector + MSPN) with an empty MSPN_HOME, so both
    graphs are exported and verified; reported beyond both networks' own time;
  * warm start: one image, `--boxes` with one person, and with the detector; wall time
    minus the networks' own forward time (the bare session's, at the same batch);
  * CLI per person: `mspn keypoints --boxes` on 1 and on N images with P persons each;
    the marginal cost per person, (T_N - T_1) / ((N - 1) P), against the bare session's
    forward at 2P crops (flip) per P, measured between the CLI runs.

Figures are printed and written as JSON, never asserted. The machine is usually shared:
each figure is the fastest of its repeats, and child CPU time (user + sys) is given beside
wall time because it moves less when other processes compete for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from common import DEFAULT_CACHE_DIR, REPO, report_console, write_json

SAMPLE_DIR = REPO / "tests" / "data" / "coco_sample"
MSPN = Path(sys.executable).with_name("mspn")
# Targets of issue 12 (seconds beyond the networks' own time; throughput ratio).
TARGETS = {"help_s": 0.3, "warm_boxes_s": 1.5, "warm_detector_s": 2.5, "cold_s": 30.0, "per_person_ratio": 0.85}


def random_weights(folder: Path) -> Dict[str, Path]:
    """long_run's seeded random weights, written by a child process if missing.

    This process must not load MegEngine: with it loaded (its thread pool, glibc settings),
    the bare onnxruntime session here used ~30% more CPU per forward than the same session in
    the CLI, which never loads MegEngine on the warm path.
    """
    paths = {"mspn": folder / "random_mspn_4stage.pkl", "detector": folder / "random_retinanet_res50_coco_3x_800size.pkl"}
    if not all(path.is_file() for path in paths.values()):
        code = f"import sys; sys.path[:0] = [{str(REPO / 'src')!r}, {str(Path(__file__).parent)!r}]; " \
               f"from long_run import write_random_weights; write_random_weights(__import__('pathlib').Path({str(folder)!r}))"
        subprocess.run([sys.executable, "-c", code], check=True)
    return paths


def run_cli(args: Sequence[str], home: Path) -> Dict[str, float]:
    """Run `mspn ARGS`; wall seconds and the child's CPU seconds (user + sys)."""
    env = dict(os.environ, MSPN_HOME=str(home), NO_COLOR="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([str(MSPN), *map(str, args)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"error: mspn {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def best(runs: List[Dict[str, float]]) -> Dict[str, float]:
    return {"wall_s": min(r["wall_s"] for r in runs), "cpu_s": min(r["cpu_s"] for r in runs), "repeats": len(runs)}


def synthetic_boxes(images: Sequence[Path], per_image: int, seed: int = 0) -> List[Dict[str, Any]]:
    """`per_image` seeded person-sized boxes in each image, in COCO detection format."""
    import cv2

    rng = np.random.default_rng(seed)
    records = []
    for path in images:
        height, width = cv2.imread(str(path)).shape[:2]
        for _ in range(per_image):
            w, h = rng.uniform(40, width * 0.4), rng.uniform(80, height * 0.6)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            records.append({"file_name": path.name, "bbox": [round(float(v), 2) for v in (x, y, w, h)],
                            "score": 0.9, "category_id": 1})
    return records


class BareNetworks:
    """The cached graphs of MSPN_HOME opened as the CLI opens them, with the CLI's inputs."""

    def __init__(self, home: Path):
        from mspn_cli.runtime.base import usable_cpus
        from mspn_cli.runtime.onnxruntime_backend import open_session

        graphs = home / "graphs"
        self.paths = {name: _newest(graphs, prefix) for name, prefix in (("mspn", "mspn_4stage-"), ("detector", "retinanet"))}
        self.threads = usable_cpus()
        self.sessions = {name: open_session(path, self.threads) for name, path in self.paths.items() if path}

    def forward(self, name: str, batch: np.ndarray, repeats: int) -> Dict[str, float]:
        """Seconds of one forward: the first at this shape, and the fastest of `repeats` after it
        (wall, and this process's CPU time, which includes onnxruntime's threads)."""
        session = self.sessions[name]
        feed = {session.get_inputs()[0].name: batch}
        walls, cpus = [], []
        for _ in range(1 + max(1, repeats)):
            started, cpu = time.perf_counter(), time.process_time()
            session.run(None, feed)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        return {"first_s": walls[0], "steady_s": min(walls[1:]), "steady_cpu_s": min(cpus[1:])}


def _newest(folder: Path, prefix: str) -> Optional[Path]:
    found = sorted(folder.glob(f"{prefix}*.onnx"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def mspn_crops(images: Sequence[Path], boxes: List[Dict[str, Any]], count: int) -> np.ndarray:
    """The first `count` person crops the CLI cuts for `boxes`, with their flips (2 x count)."""
    import cv2

    from mspn_cli.config import load_pose_config
    from mspn_cli.pose.preprocess import crop_persons, extend_box, normalize_image

    cfg = load_pose_config()
    crops = []
    for path in images:
        xywh = np.asarray([b["bbox"] for b in boxes if b["file_name"] == path.name], np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        normalized = normalize_image(cv2.imread(str(path)), cfg.preprocess.mean, cfg.preprocess.std)
        ext = extend_box(xyxy, cfg.preprocess.box_extension, cfg.aspect_ratio)
        crops.extend(crop_persons(normalized, ext, cfg.model.input_size))
    crops = np.stack(crops[:count])
    return np.ascontiguousarray(np.concatenate([crops, crops[:, :, :, ::-1]], axis=0))


def detector_batch(image: Path, det_size: Optional[Tuple[int, int]]) -> np.ndarray:
    import cv2

    from mspn_cli.config import load_detector_config
    from mspn_cli.detection.preprocess import prepare_detector_batch

    pre = load_detector_config().preprocess
    short, longest = det_size or (pre.short_side, pre.max_side)
    batch, _ = prepare_detector_batch([cv2.imread(str(image))], short, longest, pre.size_divisor)
    return batch


def onnx_conv_gflop(path: Path, input_shape: Sequence[int]) -> float:
    """2 x the multiply-adds of every Conv / ConvTranspose of the ONNX graph at `input_shape`."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.ClearField("dim")
    for size in input_shape:
        model.graph.input[0].type.tensor_type.shape.dim.add().dim_value = int(size)
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes.get(node.output[0])
            kernel = weights.get(node.input[1])
            if out and kernel:
                macs += int(np.prod(out)) * int(np.prod(kernel[1:]))
        elif node.op_type == "ConvTranspose":
            data = shapes.get(node.input[0])
            kernel = weights.get(node.input[1])
            if data and kernel:
                macs += int(np.prod(data)) * int(np.prod(kernel[1:]))
    return 2.0 * macs / 1e9


def cli_benchmark(cache_dir: Path, smoke: bool, repeats: int, persons: int, images_n: int, cold: bool,
                  sgemm_gflops: Optional[float], console) -> Dict[str, Any]:
    weights = random_weights(cache_dir / "bench-weights")
    coco = sorted(SAMPLE_DIR.glob("*.jpg"))[: max(images_n, 1)]
    image = coco[0]
    det_size = (128, 160) if smoke else None
    det_args = ["--det-size", ",".join(map(str, det_size))] if det_size else []
    work = Path(tempfile.mkdtemp(prefix="mspn-cli-bench-"))
    result: Dict[str, Any] = {"smoke": smoke, "repeats": repeats, "targets": TARGETS}
    try:
        one = work / "one.json"
        one.write_text(json.dumps(synthetic_boxes([image], 1)))
        many_boxes = synthetic_boxes(coco, persons)
        many = work / "many.json"
        many.write_text(json.dumps(many_boxes))
        out = work / "out.json"
        boxes_run = ["keypoints", image, "--boxes", one, "--weights", weights["mspn"], "--backend", "onnxruntime",
                     "--json", out, "--overwrite", "-q"]
        detector_run = ["keypoints", image, "--weights", weights["mspn"], "--detector-weights", weights["detector"],
                        "--backend", "onnxruntime", "--json", out, "--overwrite", "-q", *det_args]

        help_runs = [run_cli(["--help"], cache_dir) for _ in range(repeats + 2)]
        version_runs = [run_cli(["--version"], cache_dir) for _ in range(repeats + 2)]
        result["help"], result["version"] = best(help_runs), best(version_runs)
        console.print(f"mspn --help {result['help']['wall_s']:.2f} s, --version {result['version']['wall_s']:.2f} s")

        result["load_average_start"] = os.getloadavg()
        if cold:
            home = work / "home"
            console.print("cold start: empty MSPN_HOME, both graphs exported and verified ...")
            result["cold"] = run_cli(detector_run, home)
            console.print(f"  {result['cold']['wall_s']:.1f} s wall")
        else:
            home = cache_dir
            run_cli(detector_run, home)  # exports once if this cache has not seen these weights
            result["cold"] = None

        result["warm_boxes"] = best([run_cli(boxes_run, home) for _ in range(repeats)])
        result["warm_detector"] = best([run_cli(detector_run, home) for _ in range(repeats)])
        found = len(json.loads(out.read_text()))
        result["warm_detector"]["persons_found"] = found

        bare = BareNetworks(home)
        result["threads"] = bare.threads
        det_batch = detector_batch(image, det_size)
        result["net_mspn_1"] = bare.forward("mspn", mspn_crops([image], json.loads(one.read_text()), 1), repeats)
        result["net_detector"] = bare.forward("detector", det_batch, repeats)
        _report_starts(result, found, console)

        crops = mspn_crops(coco, many_boxes, persons)
        first_image = ["keypoints", coco[0], "--boxes", many, "--weights", weights["mspn"], "--backend", "onnxruntime",
                       "--batch-size", persons, "--json", out, "--overwrite", "-q"]
        all_images = first_image[:1] + list(coco) + first_image[2:]
        bare_runs, cli_1, cli_n = [], [], []
        for _ in range(repeats):  # interleaved, so that all three see the same machine load
            bare_runs.append(bare.forward("mspn", crops, 1))
            cli_1.append(run_cli(first_image, home))
            cli_n.append(run_cli(all_images, home))
        bare_runs.append(bare.forward("mspn", crops, 1))
        t1, tn = best(cli_1), best(cli_n)
        extra = (len(coco) - 1) * persons
        row = {
            "persons_per_image": persons, "images": len(coco), "batch_crops": 2 * persons,
            "bare_ms_per_person": min(r["steady_s"] for r in bare_runs) / persons * 1e3,
            "bare_cpu_ms_per_person": min(r["steady_cpu_s"] for r in bare_runs) / persons * 1e3,
            "cli_ms_per_person": (tn["wall_s"] - t1["wall_s"]) / extra * 1e3 if extra else None,
            "cli_cpu_ms_per_person": (tn["cpu_s"] - t1["cpu_s"]) / extra * 1e3 if extra else None,
            "cli_1_image": t1, "cli_n_images": tn, "bare_samples": bare_runs,
        }
        if row["cli_ms_per_person"]:
            row["ratio"] = row["bare_ms_per_person"] / row["cli_ms_per_person"]
            row["cpu_ratio"] = row["bare_cpu_ms_per_person"] / row["cli_cpu_ms_per_person"]
        if bare.paths.get("mspn"):
            gflop = onnx_conv_gflop(bare.paths["mspn"], crops.shape) / len(crops)
            row["gflop_per_crop"] = gflop
            if sgemm_gflops:
                row["sgemm_gflops"] = sgemm_gflops
                for key in ("bare", "cli"):
                    ms = row[f"{key}_ms_per_person"]
                    if ms:
                        row[f"{key}_pct_sgemm"] = 100.0 * (2 * gflop / (ms / 1e3)) / sgemm_gflops
        result["per_person"] = row
        result["load_average_end"] = os.getloadavg()
        _report_per_person(row, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _report_starts(result: Dict[str, Any], found: int, console) -> None:
    mspn_1 = result["net_mspn_1"]["steady_s"]
    detector = result["net_detector"]["steady_s"]
    boxes = result["warm_boxes"]["wall_s"]
    with_detector = result["warm_detector"]["wall_s"]
    result["warm_boxes"]["beyond_network_s"] = boxes - mspn_1
    # With random weights the detector finds few persons or none; MSPN runs only for those found.
    mspn_found = mspn_1 * max(found, 0)
    result["warm_detector"]["beyond_networks_s"] = with_detector - detector - mspn_found
    console.print(f"networks (bare, steady): MSPN 1 person {mspn_1:.2f} s (first call {result['net_mspn_1']['first_s']:.2f} s), "
                  f"detector {detector:.2f} s (first call {result['net_detector']['first_s']:.2f} s)")
    console.print(f"warm start, --boxes, 1 person: {boxes:.2f} s wall = {boxes - mspn_1:.2f} s beyond the network "
                  f"(target {TARGETS['warm_boxes_s']} s)")
    console.print(f"warm start, detector ({found} found): {with_detector:.2f} s wall = "
                  f"{result['warm_detector']['beyond_networks_s']:.2f} s beyond both networks (target {TARGETS['warm_detector_s']} s)")
    if result.get("cold"):
        cold = result["cold"]["wall_s"]
        result["cold"]["beyond_networks_s"] = cold - detector - mspn_found
        console.print(f"cold start (both graphs exported): {cold:.1f} s wall = {result['cold']['beyond_networks_s']:.1f} s "
                      f"beyond the networks (target {TARGETS['cold_s']:.0f} s)")


def _report_per_person(row: Dict[str, Any], console) -> None:
    if not row.get("cli_ms_per_person"):
        console.print("CLI per person: needs at least 2 images")
        return
    text = (f"CLI per person ({row['images']} images x {row['persons_per_image']} persons, batch {row['batch_crops']} crops): "
            f"{row['cli_ms_per_person']:.0f} ms marginal vs bare {row['bare_ms_per_person']:.0f} ms "
            f"= {100 * row['ratio']:.0f}% of the bare throughput (target {100 * TARGETS['per_person_ratio']:.0f}%); "
            f"CPU time {row['cli_cpu_ms_per_person']:.0f} ms vs {row['bare_cpu_ms_per_person']:.0f} ms = {100 * row['cpu_ratio']:.0f}%")
    if row.get("cli_pct_sgemm"):
        text += f"; {row['cli_pct_sgemm']:.0f}% of sgemm (bare {row['bare_pct_sgemm']:.0f}%)"
    console.print(text)


def run_in_child(cache_dir: Path, smoke: bool, no_cold: bool, repeats: int, sgemm_gflops: float) -> Optional[Dict[str, Any]]:
    """This benchmark in a child process (bench.py's own process has loaded MegEngine, and the
    bare session must run, as the CLI's does, in one that has not). Its lines go to our stdout."""
    with tempfile.TemporaryDirectory(prefix="mspn-bench-cli-") as folder:
        out = Path(folder) / "cli.json"
        command = [sys.executable, __file__, "--cache-dir", str(cache_dir), "--out", str(out),
                   "--sgemm", str(sgemm_gflops), "--repeats", str(repeats)]
        command += ["--smoke"] if smoke else []
        command += ["--no-cold"] if no_cold else []
        if subprocess.run(command).returncode != 0 or not out.is_file():
            return None
        return json.loads(out.read_text())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one repeat, 1 person on 2 images, no cold start")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--repeats", type=int, help="timed repeats per figure (the fastest counts; default 3, smoke 1)")
    parser.add_argument("--persons", type=int, help="persons per image for the per-person figure (default 8, smoke 1)")
    parser.add_argument("--images", type=int, help="images for the per-person figure (default 4, smoke 2)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold start (it exports both graphs)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="MSPN_HOME for the random weights and warm graphs")
    parser.add_argument("--sgemm", type=float, help="the sgemm ceiling in GFLOP/s, if already measured (bench.py passes its own)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    console = report_console()
    from ceiling import sgemm_ceiling

    sgemm = args.sgemm or sgemm_ceiling(2048)["gflops"]
    smoke = bool(args.smoke)
    result = cli_benchmark(
        Path(args.cache_dir), smoke, repeats=args.repeats or (1 if smoke else 3), persons=args.persons or (1 if smoke else 8),
        images_n=args.images or (2 if smoke else 4), cold=not (smoke or args.no_cold), sgemm_gflops=sgemm, console=console,
    )
    if args.out:
        write_json(args.out, result, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
