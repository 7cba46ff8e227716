#!/usr/bin/env python
"""bf16 against fp32, in one run: ceilings, speed per backend and precision, accuracy, the work around the network.

    python benchmarks/precision.py [--persons 8] [--repeats 3] [--out precision.json]

Needs openvino (and a CPU with AMX or AVX512_BF16 for the bf16 rows; elsewhere they are
reported as refused, with the reason). Uses the seeded random weights of the test suite
(MSPN_TEST_CACHE) and graphs cached in --cache-dir. Figures are printed, never asserted.

  * ceilings: numpy sgemm (f32) and a 2048^3 MatMul compiled by OpenVINO in f32 and bf16;
  * MSPN ms per person (flip: 2 crops) at --persons per forward: onnxruntime f32,
    OpenVINO f32, OpenVINO bf16, on real crops from the COCO sample;
  * RetinaNet ms per image at 800 px: the same three, and its pre- and post-processing, the
    latter also on a detector with trained-like scores (video_det_every.tail_scores_detector);
  * accuracy of bf16 (seeded weights): per-map error relative to the map's range, peak
    agreement where the f32 peak stands out, keypoint displacement in image pixels on
    the COCO sample's recorded boxes (PoseEstimator, f32 vs bf16, same crops);
  * the pipeline around the network: PoseEstimator over the sample (normalise, crops,
    flip, decode, map back) per person, against the bare backend on the same batch;
  * end to end: images/s of detector + MSPN on the sample images, f32 (onnxruntime, the
    old default) vs bf16 (the random detector finds nobody, so MSPN runs on the recorded boxes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_CACHE_DIR, DEFAULT_DATA, REPO, report_console, write_json

sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))


def best_of(run, repeats):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_ceiling(precision: str, n: int = 2048, repeats: int = 5) -> float:
    import openvino as ov
    import openvino.opset13 as ops

    a = ops.parameter([n, n], ov.Type.f32)
    b = ops.constant(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a])
    from mspn_cli.runtime.base import usable_cpus

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
                                                     "INFERENCE_NUM_THREADS": usable_cpus(), "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    seconds = best_of(lambda: request.infer({0: x}), repeats)
    return 2.0 * n**3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out")
    args = parser.parse_args()
    console = report_console()
    import os

    os.environ["MSPN_HOME"] = str(args.cache_dir)
    from bench import load_sample, person_crops, with_flips
    from ceiling import cpu_name, sgemm_gflops
    from mspn_cli.config import load_detector_config, load_pose_config
    from mspn_cli.detection.detector import PersonDetector
    from mspn_cli.detection.postprocess import detections_for_image
    from mspn_cli.detection.preprocess import prepare_detector_batch
    from mspn_cli.pose.estimator import PoseEstimator
    from mspn_cli.runtime.cpu_features import cpu_features
    from mspn_cli.runtime.openvino_backend import bf16_support
    from mspn_cli.runtime.precision import compare_precisions
    from tests.conftest import _generate  # the test suite's seeded weights (MSPN_TEST_CACHE), made once

    mspn_weights = str(_generate("mspn_4stage", "mspn_4stage_random_seed0.pkl", 0))
    det_weights = str(_generate("retinanet_res50_coco_3x_800size", "retinanet_random_seed0.pkl", 0))
    figures = {"cpu": cpu_name(), "features": cpu_features().summary(), "threads": len(os.sched_getaffinity(0))}
    bf16_why = bf16_support()
    variants = [("onnxruntime", "fp32"), ("openvino", "fp32")] + ([("openvino", "bf16")] if bf16_why is None else [])
    figures["bf16"] = bf16_why or "runs"

    figures["sgemm_gflops"] = sgemm_gflops(2048)
    figures["ov_matmul_gflops"] = {p: matmul_ceiling(p) for p in ("fp32",) + (("bf16",) if bf16_why is None else ())}

    pose_config, det_config = load_pose_config(), load_detector_config()
    images = load_sample(args.data)
    batch = with_flips(person_crops(images, args.persons, pose_config))
    estimators, detectors = {}, {}
    for backend, precision in variants:
        estimators[(backend, precision)] = PoseEstimator(pose_config, mspn_weights, backend=backend, precision=precision)
        detectors[(backend, precision)] = PersonDetector(det_config, det_weights, backend=backend, precision=precision)
    gflop_per_crop = 42.8
    rows = {}
    image = max((item[1] for item in images), key=lambda im: im.shape[0] * im.shape[1])
    pre = det_config.preprocess
    det_batch, infos = prepare_detector_batch([image], pre.short_side, pre.max_side, pre.size_divisor)
    for key in variants:
        net = estimators[key].backend
        seconds = best_of(lambda: net.run(batch), args.repeats)
        det = detectors[key].backend
        det_seconds = best_of(lambda: det.run(det_batch), args.repeats)
        rows[f"{key[0]} {key[1]}"] = {
            "precision_read_back": getattr(net, "precision", "fp32"),
            "mspn_ms_per_person": 1000 * seconds / args.persons,
            "mspn_gflops": gflop_per_crop * len(batch) / seconds,
            "detector_ms_per_image": 1000 * det_seconds,
        }
    figures["rows"] = rows

    # Detector pre- and post-processing, against its fastest forward.
    outputs = detectors[variants[-1]].backend.run(det_batch)
    levels = len(det_config.anchors.strides)
    pre_s = best_of(lambda: prepare_detector_batch([image], pre.short_side, pre.max_side, pre.size_divisor), args.repeats)
    post_s = best_of(lambda: detections_for_image(outputs[:levels], outputs[levels:], infos[0], det_config.anchors,
                                                  det_config.postprocess, num_classes=det_config.model.num_classes), args.repeats)
    figures["detector_pre_ms"], figures["detector_post_ms"] = 1000 * pre_s, 1000 * post_s
    # A random detector scores nearly every (anchor, class) above 0.05, a trained one nearly
    # none: post-processing again on the outputs of one with trained-like scores (fp32 only).
    from video_det_every import tail_scores_detector

    tail = PersonDetector(det_config, str(tail_scores_detector(Path(det_weights), args.cache_dir)), backend="openvino")
    tail_outputs = tail.backend.run(det_batch)
    tail_post = lambda: detections_for_image(tail_outputs[:levels], tail_outputs[levels:], infos[0], det_config.anchors,  # noqa: E731
                                             det_config.postprocess, num_classes=det_config.model.num_classes)
    figures["detector_post_tail_ms"] = 1000 * best_of(tail_post, args.repeats)
    figures["detector_tail_detections"] = int(len(tail_post()))
    figures["detector_tail_candidate_share"] = float(np.mean([np.mean(level > np.log(0.05 / 0.95)) for level in tail_outputs[:levels]]))

    # The pipeline around MSPN (estimator over the sample's images and boxes) vs the bare backend.
    from mspn_cli.detection.result import Detections

    items = [(name, im, Detections.from_array(boxes[:, :5])) for name, im, boxes in images]
    persons = sum(len(item[2]) for item in items)
    for key in variants:
        estimator = estimators[key]
        estimator.batch_size = args.persons
        seconds = best_of(lambda: list(estimator.estimate_many(items)), 1)
        rows[f"{key[0]} {key[1]}"]["pipeline_ms_per_person"] = 1000 * seconds / persons
        # End to end: the detector on every image, then MSPN on the recorded boxes.
        detector = detectors[key]
        det_all = best_of(lambda: [detector.detect(im) for _, im, _ in items], 1)
        rows[f"{key[0]} {key[1]}"]["images_per_s"] = len(items) / (det_all + seconds)

    # Accuracy of bf16 against f32 on the same crops and boxes.
    if bf16_why is None:
        f32, b16 = estimators[("openvino", "fp32")], estimators[("openvino", "bf16")]
        crops = person_crops(images, 16, pose_config)
        ref, cand = f32.backend.run(crops), b16.backend.run(crops)
        comparison = compare_precisions(ref, cand)
        kp_f32 = [r for _, r in f32.estimate_many(items)]
        kp_b16 = [r for _, r in b16.estimate_many(items)]
        shifts = np.concatenate([np.linalg.norm(a.keypoints[..., :2] - b.keypoints[..., :2], axis=-1).ravel()
                                 for a, b in zip(kp_f32, kp_b16) if len(a.keypoints)])
        figures["accuracy"] = {
            "crops": 16, "maps": comparison.maps, "worst_error": comparison.worst_error, "median_error": comparison.median_error,
            "prominent_maps": comparison.prominent_maps, "peaks_agreeing": comparison.peaks_agreeing,
            "keypoints": int(shifts.size), "shift_px_median": float(np.median(shifts)), "shift_px_p95": float(np.percentile(shifts, 95)),
            "shift_px_max": float(shifts.max()), "shift_px_zero_share": float(np.mean(shifts == 0)),
        }
    import json

    console.print(json.dumps(figures, indent=1))
    if args.out:
        write_json(args.out, figures, console)


if __name__ == "__main__":
    main()
