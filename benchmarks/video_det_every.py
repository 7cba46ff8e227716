"""Frames per second of `mspn keypoints VIDEO` with the detector on every frame (--det-every 1)
and on every 5th frame (--det-every 5), on the same generated clip, in one run.

    python benchmarks/video_det_every.py [--frames 15] [--size 480x270] [--det-size 800]
                                         [--max-persons 2] [--backend auto] [--every 1,5] [--out video.json]

Both settings share one loaded pipeline (VideoPoseRunner over PosePipeline, as the command
runs it) and read the same clip, a pan across a vendored photo written with OpenCV. The
weights are seeded random ones (tests/weightgen.py); the detector's person logits
(head.cls_score.bias channels 0::80) are raised so that it finds persons. A random MSPN's
joints often collapse onto one point, which gives no box to carry, so between key frames
this run hands the pipeline each person's previous box as it was (`--det-every` proper
derives it from the joints; that costs microseconds). Both settings then estimate the same
persons in every frame, and the difference is the detector alone. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from common import DEFAULT_CACHE_DIR, REPO, report_console, write_json

sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

PERSON_LOGIT_BOOST = 4.0  # added to the person channel of every anchor: a random detector then finds people
# A random detector puts about half of all (anchor, class) logits above the 0.05 candidate
# threshold (their spread is ~20 around 0); a trained one nearly none, so its post-processing
# costs far less. `tail_scores_detector` scales the classifier down (spread ~1.1) and lowers
# every class bias into the tail (persons less): ~0.1% of the (anchor, class) pairs score above
# 0.05, ~10% of the person anchors. Its outputs are too flat for the bf16
# check to pass (bias rounding against a small map range), so it runs in fp32 only.
CLASSIFIER_WEIGHT_SCALE = 0.1
CLASS_LOGIT_SHIFT = -6.7
PERSON_TAIL_BOOST = 2.5


def seeded_weights(cache: Path) -> Dict[str, Path]:
    """Random MSPN and RetinaNet weights (the test suite's, when its cache has them) and the boosted detector."""
    from mspn_cli.models import build_model
    from tests.weightgen import random_state_dict, write_official_pickle

    test_cache = Path(os.environ.get("MSPN_TEST_CACHE", REPO / ".mspn_test_cache"))
    cache.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, model, name, seed in (("mspn", "mspn_4stage", "mspn_4stage_random_seed0.pkl", 0),
                                   ("detector", "retinanet_res50_coco_3x_800size", "retinanet_random_seed0.pkl", 1)):
        path = test_cache / name if (test_cache / name).is_file() else cache / name
        if not path.is_file():
            write_official_pickle(random_state_dict(build_model(model), seed=seed), path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
        paths[key] = path
    boosted = cache / "retinanet_random_seed1_person_boost.pkl"
    if not boosted.is_file():
        with open(paths["detector"], "rb") as handle:  # written by tests/weightgen.py: trusted
            state = pickle.load(handle)
        bias = np.array(state["head.cls_score.bias"], dtype=np.float32)
        bias.reshape(-1)[0::80] += PERSON_LOGIT_BOOST  # channels are anchor-major: anchor * 80 + class
        state["head.cls_score.bias"] = bias
        write_official_pickle(state, boosted.with_suffix(".tmp"))
        boosted.with_suffix(".tmp").replace(boosted)
    paths["detector"] = boosted
    return paths


def tail_scores_detector(random_detector: Path, cache: Path) -> Path:
    """The random detector with trained-like score statistics (see CLASSIFIER_WEIGHT_SCALE)."""
    from tests.weightgen import write_official_pickle

    path = cache / f"{random_detector.stem}_tail_scores.pkl"
    if not path.is_file():
        with open(random_detector, "rb") as handle:  # written by tests/weightgen.py: trusted
            state = pickle.load(handle)
        state["head.cls_score.weight"] = np.array(state["head.cls_score.weight"], np.float32) * np.float32(CLASSIFIER_WEIGHT_SCALE)
        bias = np.array(state["head.cls_score.bias"], dtype=np.float32) + np.float32(CLASS_LOGIT_SHIFT)
        bias.reshape(-1)[0::80] += PERSON_TAIL_BOOST
        state["head.cls_score.bias"] = bias
        write_official_pickle(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return path


def write_clip(path: Path, frames: int, width: int, height: int, fps: float = 25.0) -> Path:
    import cv2

    photo = cv2.imread(str(REPO / "tests" / "data" / "images" / "pilots_three_people_rgba.png"), cv2.IMREAD_COLOR)
    scale = max((width + frames * 4) / photo.shape[1], (height + 8) / photo.shape[0])
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for index in range(frames):
        writer.write(np.ascontiguousarray(photo[4:4 + height, 4 * index:4 * index + width]))
    writer.release()
    return path


def measure(runner, clip: Path, det_every: int, detector_calls: List[int]) -> Dict[str, float]:
    from mspn_cli.io.video_source import VideoSource
    from mspn_cli.video import VideoSettings

    runner.settings = VideoSettings(det_every=det_every)
    runner.det_every = det_every
    detector_calls.clear()
    persons = frames = 0
    with VideoSource(clip) as source:
        decoded = list(source.frames())  # decoded first: the figure is the pipeline's, not the decoder's
        started = time.perf_counter()
        for poses in runner.run(iter(decoded), fps=source.fps, streaming=True):
            frames += 1
            persons += len(poses.result)
        elapsed = time.perf_counter() - started
    return {"det_every": det_every, "frames": frames, "seconds": round(elapsed, 3), "fps": round(frames / elapsed, 3),
            "detector_runs": len(detector_calls), "persons_per_frame": round(persons / max(frames, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--size", default="480x270", help="clip WIDTHxHEIGHT")
    parser.add_argument("--det-size", type=int, default=800, help="detector short side (the command's --det-size; 800 is its default)")
    parser.add_argument("--max-persons", type=int, default=2)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (the command's --precision)")
    parser.add_argument("--every", default="1,5", help="--det-every values to compare")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    console = report_console()
    os.environ.setdefault("MSPN_HOME", str(args.cache_dir))

    from mspn_cli.cli.options import parse_det_size
    from mspn_cli.detection.result import Detections
    from mspn_cli.pipeline import PosePipeline
    from mspn_cli.settings import RunSettings
    from mspn_cli.video import VideoPoseRunner, load_video_config

    weights = seeded_weights(args.cache_dir)
    width, height = (int(v) for v in args.size.lower().split("x"))
    settings = RunSettings(weights=str(weights["mspn"]), detector_weights=str(weights["detector"]), backend=args.backend, precision=args.precision,
                           det_size=parse_det_size(str(args.det_size)), max_persons=args.max_persons, box_thr=0.05)
    console.print(f"loading networks (backend {args.backend}) ...")
    pipeline = PosePipeline.from_settings(settings, need_detector=True)
    detector_calls: List[int] = []
    detect = pipeline.detector.detect

    def counted(image):
        detector_calls.append(1)
        return detect(image)

    pipeline.detector.detect = counted
    runner = VideoPoseRunner(pipeline, video_config=load_video_config())
    runner._carry = lambda previous, image_size: Detections(previous.result.boxes, previous.result.box_scores)
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.avi", args.frames, width, height)
        warm = write_clip(Path(folder) / "warm.avi", 2, width, height)
        measure(runner, warm, 1, detector_calls)  # graph export / first-call costs stay out of the figures
        rows = [measure(runner, clip, int(n), detector_calls) for n in args.every.split(",")]
    base = rows[0]["fps"]
    console.print(f"clip: {args.frames} frames of {width}x{height}; detector short side {args.det_size}; "
                  f"at most {args.max_persons} persons; backend {args.backend}, precision {args.precision}")
    for row in rows:
        console.print(f"--det-every {row['det_every']}: {row['fps']:.2f} frames/s ({row['seconds']:.1f} s, "
                      f"{row['detector_runs']} detector runs, {row['persons_per_frame']} persons/frame), "
                      f"x{row['fps'] / base:.2f}")
    if args.out:
        write_json(args.out, {"frames": args.frames, "size": [width, height], "det_size": args.det_size,
                              "max_persons": args.max_persons, "backend": args.backend, "rows": rows}, console)


if __name__ == "__main__":
    main()
