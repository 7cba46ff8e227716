"""One prepared GPU check and benchmark of the torch backend (issue 21); run it where there is a CUDA GPU.

    python benchmarks/gpu_check.py [--out DIR] [--quick]

Needs only PyTorch with CUDA and numpy (no MegEngine, no onnx): the two networks' graphs
come from benchmarks/graph_skeletons/*.json.gz (operators and weight shapes, no weights,
written here by `--write-skeletons` from the sealed ONNX graphs), and their weights are
generated on the spot, seeded, then scaled layer by layer so every convolution's output
has unit spread on a calibration batch (like trained weights, and unlike raw random ones
no float16 overflow after 200 layers). It checks and measures:

1. CUDA fp32 against CPU fp32, both networks: relative error <= 1e-4 (fails the run otherwise);
   CUDA fp32 twice: the same bytes; one crop alone against the same crop in a batch.
2. fp16 and bf16 against fp32 on CUDA: each heatmap's max error relative to its range, and
   where a peak stands out, whether the peak is the same cell.
3. MSPN persons per second (one crop per person, no flip) in fp32/fp16/bf16 at batches 16..256.
4. The detector per image at 800 px (800 x 1216 input, the padded size of a 4:3 photo... and a 3:4 one).

Writes gpu_check.json to --out (default $OUT or the current folder) and prints a summary.
Exit status 1 when a parity check fails. Takes about 2-4 minutes on one current GPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
SKELETONS = Path(__file__).resolve().parent / "graph_skeletons"
SMALL_CONSTANT = 64  # float constants up to this size (mean, std) are stored, not generated


def write_skeletons(graphs) -> None:
    """From sealed ONNX graphs: operators, integer constants and small float constants, weight shapes only."""
    from mspn_cli.runtime.onnx_torch import plan_from_onnx

    SKELETONS.mkdir(exist_ok=True)
    for name, path in graphs:
        plan = plan_from_onnx(path)
        constants, shapes = {}, {}
        for key, array in plan.initializers.items():
            if np.issubdtype(array.dtype, np.floating) and array.size > SMALL_CONSTANT:
                shapes[key] = list(array.shape)
            else:
                constants[key] = {"dtype": array.dtype.str, "shape": list(array.shape), "values": array.reshape(-1).tolist()}
        nodes = [{"op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                  "attrs": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in n.attrs.items()}} for n in plan.nodes]
        data = {"inputs": plan.inputs, "outputs": plan.outputs, "nodes": nodes, "constants": constants, "weight_shapes": shapes}
        with gzip.open(SKELETONS / f"{name}.json.gz", "wt") as handle:
            json.dump(data, handle)
        print(f"{name}: {len(nodes)} nodes, {len(shapes)} weights -> {SKELETONS / (name + '.json.gz')}")


def seeded_plan(name: str, calibration, seed: int = 0):
    """The skeleton with seeded weights, each convolution scaled to unit output spread on `calibration`."""
    import torch

    from mspn_cli.runtime.onnx_torch import _OPS, GraphNode, GraphPlan

    with gzip.open(SKELETONS / f"{name}.json.gz", "rt") as handle:
        data = json.load(handle)
    generator = np.random.default_rng(seed)
    initializers = {key: np.array(c["values"], dtype=np.dtype(c["dtype"])).reshape(c["shape"]) for key, c in data["constants"].items()}
    for key, shape in data["weight_shapes"].items():
        initializers[key] = generator.standard_normal(shape).astype(np.float32) * (0.01 if len(shape) == 1 else 1.0)
    nodes = [GraphNode(n["op"], tuple(n["inputs"]), tuple(n["outputs"]), n["attrs"]) for n in data["nodes"]]
    device = calibration.device
    values = {data["inputs"][0]: calibration}
    with torch.no_grad():
        for node in nodes:
            args = [None if not key else (values[key] if key in values else
                    (torch.from_numpy(initializers[key]).to(device) if np.issubdtype(initializers[key].dtype, np.floating)
                     else initializers[key])) for key in node.inputs]
            result = _OPS[node.op](node, args)
            if node.op in ("Conv", "ConvTranspose"):
                spread = float(result.float().std()) or 1.0
                for index in (1, 2):
                    if index < len(node.inputs) and node.inputs[index]:
                        initializers[node.inputs[index]] = initializers[node.inputs[index]] / spread
                result = _OPS[node.op](node, [args[0]] + [torch.from_numpy(initializers[k]).to(device) for k in node.inputs[1:] if k])
            for key, value in zip(node.outputs, result if isinstance(result, tuple) else (result,)):
                values[key] = value
    return GraphPlan(data["inputs"], data["outputs"], nodes, initializers)


def relative_error(actual, reference) -> float:
    scale = float(np.abs(reference).max())
    return float(np.abs(actual.astype(np.float64) - reference).max() / scale) if scale else float(np.abs(actual).max())


def map_agreement(reduced: np.ndarray, exact: np.ndarray) -> dict:
    """Per heatmap: max error / the map's range; peak cell agreement where the peak stands out by 10% of the range."""
    maps_r, maps_e = reduced.reshape(-1, *exact.shape[2:]), exact.reshape(-1, *exact.shape[2:])
    spread = maps_e.max(axis=(1, 2)) - maps_e.min(axis=(1, 2))
    errors = np.abs(maps_r - maps_e).max(axis=(1, 2)) / np.maximum(spread, 1e-12)
    standing, same = 0, 0
    for map_r, map_e, rng in zip(maps_r, maps_e, spread):
        y, x = np.unravel_index(np.argmax(map_e), map_e.shape)
        masked = map_e.copy()
        masked[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = -np.inf
        if masked.size > 25 and map_e[y, x] - masked.max() >= 0.1 * rng:
            standing += 1
            same += int(np.unravel_index(np.argmax(map_r), map_r.shape) == (y, x))
    return {"max_error_over_range": float(errors.max()), "mean_error_over_range": float(errors.mean()),
            "peaks_standing_out": standing, "peaks_same_cell": same}


def timed(backend, batch, repeats: int) -> float:
    import torch

    backend.run(batch)  # warm-up: cuDNN picks kernels for this shape
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        backend.run(batch)  # includes the host->device copy and the copy back, as in a real run
    return (time.perf_counter() - started) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batches (a smoke run)")
    parser.add_argument("--write-skeletons", nargs="*", metavar="NAME=GRAPH.onnx", help="write the skeletons from sealed graphs (needs onnx)")
    args = parser.parse_args()
    if args.write_skeletons is not None:
        write_skeletons([item.split("=", 1) for item in args.write_skeletons])
        return 0
    import torch

    from mspn_cli.runtime.torch_backend import TorchBackend

    report = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0), "checks": {}, "bench": {}}
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {report['gpu']}")
    failed = []
    rng = np.random.default_rng(1)
    crops = rng.standard_normal((8, 3, 256, 192)).astype(np.float32)
    image = rng.uniform(0, 255, (1, 3, 800, 1216)).astype(np.float32)
    plans = {"mspn": seeded_plan("mspn_4stage", torch.from_numpy(crops[:2]).cuda()),
             "detector": seeded_plan("retinanet", torch.from_numpy(image[:, :, :256, :320]).cuda(), seed=1)}
    inputs = {"mspn": crops[:4], "detector": image}
    for name, plan in plans.items():
        cpu = TorchBackend(plan, device="cpu").run(inputs[name])
        gpu_backend = TorchBackend(plan, device="cuda:0")
        gpu = gpu_backend.run(inputs[name])
        again = gpu_backend.run(inputs[name])
        error = max(relative_error(g, c) for g, c in zip(gpu, cpu))
        check = {"cuda_fp32_vs_cpu_fp32": error, "repeatable_bytes": all(np.array_equal(a, b) for a, b in zip(gpu, again))}
        if name == "mspn":
            alone = gpu_backend.run(crops[:1])[0]
            batched = gpu_backend.run(crops)[0][:1]
            check["one_crop_alone_vs_in_batch_of_8_max_abs"] = float(np.abs(alone - batched).max())
        for precision in ("fp16", "bf16"):
            reduced = TorchBackend(plan, device="cuda:0", precision=precision).run(inputs[name])
            check[precision] = map_agreement(reduced[0], gpu[0]) if name == "mspn" else \
                {"max_relative_error": max(relative_error(r, g) for r, g in zip(reduced, gpu))}
        report["checks"][name] = check
        print(name, json.dumps(check))
        if not error <= 1e-4:
            failed.append(f"{name}: CUDA fp32 against CPU fp32 relative error {error:.2e} > 1e-4")
    repeats = 3 if args.quick else 10
    batches = (16, 64, 256) if args.quick else (16, 32, 64, 128, 256)
    for precision in ("fp32", "fp16", "bf16"):
        backend = TorchBackend(plans["mspn"], device="cuda:0", precision=precision)
        for size in batches:
            batch = np.ascontiguousarray(np.resize(crops, (size, 3, 256, 192)))
            seconds = timed(backend, batch, repeats)
            report["bench"][f"mspn_{precision}_batch{size}_persons_per_s"] = size / seconds
            print(f"MSPN {precision} batch {size}: {size / seconds:.0f} persons/s")
        detector = TorchBackend(plans["detector"], device="cuda:0", precision=precision)
        for shape in ((800, 1216), (1216, 800)):
            seconds = timed(detector, np.ascontiguousarray(np.resize(image, (1, 3, *shape))), repeats)
            report["bench"][f"detector_{precision}_{shape[0]}x{shape[1]}_ms_per_image"] = seconds * 1000
            print(f"detector {precision} {shape[0]}x{shape[1]}: {seconds * 1000:.1f} ms/image")
        del backend, detector
        torch.cuda.empty_cache()
    report["failed"] = failed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    for line in failed:
        print("FAILED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
