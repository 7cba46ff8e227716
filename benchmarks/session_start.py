"""How fast can an onnxruntime session for a cached graph be opened? (issue 12, session start)

Each way is timed in a fresh interpreter, as `mspn keypoints photo.jpg` would pay it:
import onnxruntime, create the session, run one batch of 1 (the first run does lazy
set-up too). Ways:

  plain          the cached .onnx, ORT_ENABLE_ALL at load (what the backend did)
  saved_all      the model onnxruntime optimised at ORT_ENABLE_ALL and saved
                 (SessionOptions.optimized_model_filepath), loaded with optimisations off
  saved_extended the same at ORT_ENABLE_EXTENDED (hardware-independent), loaded with
                 ORT_ENABLE_ALL so only the layout passes remain

Prints one line per way (median of --repeats runs) and a JSON summary. Not a test.

    python benchmarks/session_start.py [--graph FILE.onnx] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_PROBE = r"""
import json, sys, time
started = time.perf_counter()
import numpy as np
import onnxruntime as ort
imported = time.perf_counter()
path, level, save_to, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.log_severity_level = 3
options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
if save_to != "-":
    options.optimized_model_filepath = save_to
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
opened = time.perf_counter()
shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})
ran = time.perf_counter()
print(json.dumps({"import": imported - started, "open": opened - imported, "first_run": ran - opened}))
"""


def probe(path: Path, level: str, save_to: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path), level, save_to, str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def default_graph() -> Path:
    from mspn_cli.weights import usable_cache_root

    root = usable_cache_root()
    graphs = sorted((root / "graphs").glob("mspn_4stage-*.onnx"), key=lambda p: p.stat().st_mtime) if root else []
    if not graphs:
        sys.exit("no cached MSPN graph: run `mspn keypoints` once with the onnxruntime backend, or pass --graph")
    return graphs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from mspn_cli.runtime.base import usable_cpus

    graph = args.graph or default_graph()
    threads = usable_cpus()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mspn-session-bench-") as work:
        saved_all = Path(work) / "all.onnx"
        saved_extended = Path(work) / "extended.onnx"
        results["save_all_once"] = probe(graph, "ORT_ENABLE_ALL", str(saved_all), threads)
        results["save_extended_once"] = probe(graph, "ORT_ENABLE_EXTENDED", str(saved_extended), threads)
        ways = {
            "plain": (graph, "ORT_ENABLE_ALL"),
            "saved_all": (saved_all, "ORT_DISABLE_ALL"),
            "saved_extended": (saved_extended, "ORT_ENABLE_ALL"),
        }
        # Interleaved, so that a busy spell of the machine hits every way alike.
        runs = {name: [] for name in ways}
        for _ in range(max(1, args.repeats)):
            for name, (path, level) in ways.items():
                runs[name].append(probe(path, level, "-", threads))
        for name, samples in runs.items():
            results[name] = {key: statistics.median(run[key] for run in samples) for key in samples[0]}
        sizes = {"plain": graph.stat().st_size, "saved_all": saved_all.stat().st_size,
                 "saved_extended": saved_extended.stat().st_size}
    print(f"graph {graph} ({sizes['plain'] / 1e6:.0f} MB), {threads} threads, median of {args.repeats}")
    for name in ("plain", "saved_all", "saved_extended"):
        r = results[name]
        print(f"  {name:15s} import {r['import']:.2f} s  open {r['open']:.2f} s  first run {r['first_run']:.2f} s"
              f"  open+run {r['open'] + r['first_run']:.2f} s  ({sizes[name] / 1e6:.0f} MB)")
    for name in ("save_all_once", "save_extended_once"):
        print(f"  {name:15s} open (optimise and save) {results[name]['open']:.2f} s, once")
    print(json.dumps({"graph": str(graph), "threads": threads, "sizes": sizes, **results}))


if __name__ == "__main__":
    main()
